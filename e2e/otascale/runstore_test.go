package main

import (
	"sync"
	"sync/atomic"
	"testing"
)

// TestGroupSyncCoversEachWrite: every wait returns after a sync that
// started after the wait began, and concurrent waits share syncs.
func TestGroupSyncCoversEachWrite(t *testing.T) {
	t.Parallel()
	var writes, synced, syncs atomic.Int64 // writes made; writes the last finished sync covers
	g := groupSync{do: func() error {
		syncs.Add(1)
		covered := writes.Load()
		synced.Store(covered)
		return nil
	}}
	g.cond = sync.NewCond(&g.mu)
	const n = 200
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			mine := writes.Add(1)
			if err := g.wait(); err != nil {
				t.Error(err)
			}
			if got := synced.Load(); got < mine {
				t.Errorf("wait returned after a sync covering %d writes, before write %d", got, mine)
			}
		})
	}
	wg.Wait()
	if s := syncs.Load(); s < 1 || s > n {
		t.Fatalf("%d syncs for %d waits", s, n)
	}
	t.Logf("%d waits, %d syncs", n, syncs.Load())
}
