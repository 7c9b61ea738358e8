package compaction

import (
	"log/slog"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Interval is how often a Pacer looks at its store's levels while level 0
// changes. Badger stalls writes only once level 0 holds
// NumLevelZeroTablesStall tables (15 by default, 15 memtables of writes),
// far more than a site node writes in a second.
const Interval = time.Second

// idleLooks bounds the backoff: a Pacer whose store's level 0 did not
// change since its last look waits twice as long, up to idleLooks ×
// Interval, and looks again at Interval once it changes (a memtable
// flushed). An idle store then wakes its process every 8 s, not every
// second: a hundred site leaders of three stores each were 300 wake-ups a
// second. Reaching the stall from there takes 15 memtables of writes (60
// MiB for an edge store) within one wait.
const idleLooks = 8

// Paced returns opts with Badger's own compactors off, for a store that a
// Pacer will compact.
func Paced(opts badger.Options) badger.Options { return opts.WithNumCompactors(0) }

// Pacer compacts a Badger opened with Paced options.
type Pacer struct {
	db   *badger.DB
	log  *slog.Logger
	stop chan struct{}
	done chan struct{}
}

// Start starts a Pacer for db, checking every interval. Its goroutine is
// owned by the store that opened db, which must call Stop before db.Close.
func Start(db *badger.DB, interval time.Duration, log *slog.Logger) *Pacer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Pacer{db: db, log: log, stop: make(chan struct{}), done: make(chan struct{})}
	// A store has no Run of its own; Stop joins this goroutine.
	go p.run(interval)
	return p
}

// Stop ends the Pacer and waits for a compaction under way to finish. A
// nil Pacer (a store Badger compacts) has nothing to stop.
func (p *Pacer) Stop() {
	if p == nil {
		return
	}
	close(p.stop)
	<-p.done
}

func (p *Pacer) run(interval time.Duration) {
	defer close(p.done)
	wait, last := interval, -1
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
		level0, err := p.compact()
		if err != nil {
			p.log.Warn("compact store", "err", err)
		}
		wait, last = nextWait(wait, interval, level0 != last), level0
		t.Reset(wait)
	}
}

// nextWait is the wait after one of interval's: doubled, up to idleLooks
// × interval, when the store looked as before, and interval when it
// changed.
func nextWait(wait, interval time.Duration, changed bool) time.Duration {
	if changed {
		return interval
	}
	return min(2*wait, idleLooks*interval)
}

// compact merges the store's levels into one if any level is over its
// target (level 0: more than NumLevelZeroTables tables), and does nothing
// otherwise. It returns the tables level 0 holds after.
func (p *Pacer) compact() (level0 int, err error) {
	if due(p.db) {
		err = p.db.Flatten(1)
	}
	if levels := p.db.Levels(); len(levels) > 0 {
		level0 = levels[0].NumTables
	}
	return level0, err
}

// due reports whether any of db's levels is over its target.
func due(db *badger.DB) bool {
	for _, l := range db.Levels() {
		// Over, not at: Flatten leaves a store whose only level is at its
		// target as it is.
		if l.Score > 1 {
			return true
		}
	}
	return false
}
