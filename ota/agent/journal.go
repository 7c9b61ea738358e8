package agent

import (
	"sync"

	"github.com/outpost-mesh/outpost/ota"
)

// Journal is the node's own record of one device's step results for one
// task attempt. RunDevice reads it before each step and writes it around
// each step, so that a re-dispatch of the same attempt — after a site
// leader failover or an agent restart — returns what was recorded and never
// runs a step twice.
//
// The caller scopes a Journal to (task UID, attempt) on this node: a retry
// is a new attempt with an empty journal, so its steps run again. Record
// must be durable when it returns (the node's store, synced), or the
// guarantee is only as good as the store.
type Journal interface {
	// Lookup returns what is recorded for step i; ok is false when
	// nothing is. An error stops the device: not knowing whether a step
	// ran, the agent does not run it.
	Lookup(i int) (r ota.StepResult, ok bool, err error)
	// Record stores r for step i, replacing what was there: first a
	// Running marker before the step starts (not for a read, which may
	// run again), then its result.
	Record(i int, r ota.StepResult) error
}

// MemJournal is a Journal in memory: for tests, and for simulated nodes
// that share one process. It does not survive a restart. It is safe for
// concurrent use.
type MemJournal struct {
	mu      sync.Mutex
	results map[int]ota.StepResult
}

var _ Journal = (*MemJournal)(nil)

// NewMemJournal returns an empty MemJournal.
func NewMemJournal() *MemJournal {
	return &MemJournal{results: map[int]ota.StepResult{}}
}

// Lookup implements Journal.
func (j *MemJournal) Lookup(i int) (ota.StepResult, bool, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	r, ok := j.results[i]
	return r, ok, nil
}

// Record implements Journal.
func (j *MemJournal) Record(i int, r ota.StepResult) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.results[i] = r
	return nil
}

// nopJournal records nothing: every dispatch runs every step.
type nopJournal struct{}

func (nopJournal) Lookup(int) (ota.StepResult, bool, error) { return ota.StepResult{}, false, nil }
func (nopJournal) Record(int, ota.StepResult) error         { return nil }
