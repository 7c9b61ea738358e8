package main

import (
	"encoding/json"
	"fmt"

	"github.com/dgraph-io/badger/v4"

	"github.com/outpost-mesh/outpost/node"
	"github.com/outpost-mesh/outpost/ota"
	"github.com/outpost-mesh/outpost/ota/agent"
)

// badgerRuns is a node.RunStore for the members of one process: one
// Badger, synced writes (Badger commits concurrent writes with one fsync),
// keys prefixed by the member's name.
type badgerRuns struct {
	db   *badger.DB
	node string
}

var _ node.RunStore = badgerRuns{}

func openRunsDB(dir string) (*badger.DB, error) {
	opts := badger.DefaultOptions(dir).
		WithSyncWrites(true).
		WithLogger(nil).
		WithMemTableSize(32 << 20).
		WithNumMemtables(2).
		WithValueLogFileSize(256 << 20).
		WithBlockCacheSize(16 << 20)
	return badger.Open(opts)
}

func (s badgerRuns) key(run, part string) []byte {
	return []byte(s.node + "/" + run + "/" + part)
}

func (s badgerRuns) get(k []byte, v any) (bool, error) {
	err := s.db.View(func(txn *badger.Txn) error {
		it, err := txn.Get(k)
		if err != nil {
			return err
		}
		return it.Value(func(b []byte) error { return json.Unmarshal(b, v) })
	})
	if err == badger.ErrKeyNotFound {
		return false, nil
	}
	return err == nil, err
}

func (s badgerRuns) put(k []byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return s.db.Update(func(txn *badger.Txn) error { return txn.Set(k, b) })
}

func (s badgerRuns) Journal(run string) agent.Journal { return badgerJournal{s, run} }

func (s badgerRuns) Result(run string) (ota.DeviceResultStatus, bool, error) {
	var st ota.DeviceResultStatus
	ok, err := s.get(s.key(run, "result"), &st)
	return st, ok, err
}

func (s badgerRuns) SaveResult(run string, st ota.DeviceResultStatus) error {
	return s.put(s.key(run, "result"), st)
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
	return j.s.put(j.s.key(j.run, fmt.Sprintf("step/%d", i)), r)
}
