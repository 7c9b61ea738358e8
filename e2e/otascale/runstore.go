package main

import (
	"encoding/json"
	"fmt"
	"sync"

	"github.com/dgraph-io/badger/v4"

	"github.com/outpost-mesh/outpost/internal/compaction"
	"github.com/outpost-mesh/outpost/node"
	"github.com/outpost-mesh/outpost/ota"
	"github.com/outpost-mesh/outpost/ota/agent"
)

// badgerRuns is a node.RunStore for the members of one process: one
// Badger, keys prefixed by the member's name. As node.RunStore asks, a
// journal record is synced before Record returns (the write, then a sync
// of Badger's logs shared with the writes of others: groupSync) and a
// run's final result is not. A sync covers the current memtable's log;
// one Badger has just retired is made durable by its flush, so a record
// caught in that switch survives a crash of this process, not of the
// machine.
type badgerRuns struct {
	db   *runsDB
	node string
}

var _ node.RunStore = badgerRuns{}

// runsDB is the Badger of one process's members and an index of
// everything in it, read once at open: this process is its only writer, so
// lookups never read Badger, whose reads wait for every commit in flight
// (each behind an fsync) and would queue a thousand members' admissions
// behind each other's writes.
type runsDB struct {
	db    *badger.DB
	pacer *compaction.Pacer
	sync  groupSync
	mu    sync.Mutex
	mem   map[string][]byte
}

func openRunsDB(dir string) (*runsDB, error) {
	opts := compaction.Paced(badger.DefaultOptions(dir)).
		WithSyncWrites(false).
		WithLogger(nil).
		WithMemTableSize(32 << 20).
		WithNumMemtables(2).
		WithValueLogFileSize(256 << 20).
		WithBlockCacheSize(16 << 20).
		WithDetectConflicts(false)
	db, err := badger.Open(opts)
	if err != nil {
		return nil, err
	}
	r := &runsDB{db: db, mem: map[string][]byte{}}
	r.sync.do = db.Sync
	r.sync.cond = sync.NewCond(&r.sync.mu)
	err = db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.DefaultIteratorOptions)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			r.mem[string(it.Item().Key())] = v
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	r.pacer = compaction.Start(db, compaction.Interval, nil)
	return r, nil
}

// Close closes the Badger.
func (r *runsDB) Close() error {
	r.pacer.Stop()
	return r.db.Close()
}

// groupSync shares syncs of Badger's logs between concurrent writers: a
// writer waits for a sync that started after its write, and one sync
// serves every writer that came while the one before it ran (a thousand
// members each syncing on their own made a thousand msyncs of the whole
// memtable per round of a task).
type groupSync struct {
	do      func() error // the sync: Badger's
	mu      sync.Mutex
	cond    *sync.Cond
	started uint64 // syncs started
	done    uint64 // the last sync finished
	running bool
	err     error // the last sync's
}

// wait returns once a sync that started after the call has finished.
func (g *groupSync) wait() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	want := g.started + 1 // one running now may have started before the write
	for g.done < want {
		if g.running {
			g.cond.Wait()
			continue
		}
		g.running = true
		g.started++
		n := g.started
		g.mu.Unlock()
		err := g.do()
		g.mu.Lock()
		g.running, g.done, g.err = false, n, err
		g.cond.Broadcast()
	}
	return g.err
}

func (s badgerRuns) key(run, part string) string {
	return s.node + "/" + run + "/" + part
}

func (s badgerRuns) get(k string, v any) (bool, error) {
	s.db.mu.Lock()
	b, ok := s.db.mem[k]
	s.db.mu.Unlock()
	if !ok {
		return false, nil
	}
	return true, json.Unmarshal(b, v)
}

// put writes v at k; synced, it returns once the write is on disk.
func (s badgerRuns) put(k string, v any, synced bool) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := s.db.db.Update(func(txn *badger.Txn) error { return txn.Set([]byte(k), b) }); err != nil {
		return err
	}
	if synced {
		if err := s.db.sync.wait(); err != nil {
			return err
		}
	}
	s.db.mu.Lock()
	s.db.mem[k] = b
	s.db.mu.Unlock()
	return nil
}

func (s badgerRuns) Journal(run string) agent.Journal { return badgerJournal{s, run} }

func (s badgerRuns) Result(run string) (ota.DeviceResultStatus, bool, error) {
	var st ota.DeviceResultStatus
	ok, err := s.get(s.key(run, "result"), &st)
	return st, ok, err
}

func (s badgerRuns) SaveResult(run string, st ota.DeviceResultStatus) error {
	return s.put(s.key(run, "result"), st, false)
}

// badgerJournal is one run's step journal.
type badgerJournal struct {
	s   badgerRuns
	run string
}

func (j badgerJournal) Lookup(i int) (ota.StepResult, bool, error) {
	var r ota.StepResult
	ok, err := j.s.get(j.s.key(j.run, fmt.Sprintf("step/%d", i)), &r)
	return r, ok, err
}

func (j badgerJournal) Record(i int, r ota.StepResult) error {
	return j.s.put(j.s.key(j.run, fmt.Sprintf("step/%d", i)), r, true)
}
