package compaction

import (
	"log/slog"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Interval is how often a Pacer looks at its store's levels. Badger stalls
// writes only once level 0 holds NumLevelZeroTablesStall tables (15 by
// default, 15 memtables of writes), far more than a site node writes in a
// second.
const Interval = time.Second

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
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			if err := p.compact(); err != nil {
				p.log.Warn("compact store", "err", err)
			}
		}
	}
}

// compact merges the store's levels into one if any level is over its
// target (level 0: more than NumLevelZeroTables tables), and does nothing
// otherwise.
func (p *Pacer) compact() error {
	if !due(p.db) {
		return nil
	}
	return p.db.Flatten(1)
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
