package control

import (
	"context"
	"sync"
	"time"
)

// startGate knows the sites whose assignment of a task being started is
// not handed out yet (their DeviceResults are still being written), so
// that a report from such a site can wait for it instead of leaving the
// site to learn of the task at its next report. The zero value is ready.
type startGate struct {
	mu      sync.Mutex
	waiting map[string]int // site → tasks being started there, not ready
	changed chan struct{}  // closed and replaced on every change
}

// add marks sites as waiting for a task being started.
func (g *startGate) add(sites []string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.waiting == nil {
		g.waiting = map[string]int{}
	}
	for _, s := range sites {
		g.waiting[s]++
	}
}

// done marks one task's assignment at site ready (or abandoned).
func (g *startGate) done(site string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.waiting[site]--; g.waiting[site] <= 0 {
		delete(g.waiting, site)
	}
	if g.changed != nil {
		close(g.changed)
		g.changed = nil
	}
}

// await returns once no task being started waits at site, after at most
// limit, or when ctx ends.
func (g *startGate) await(ctx context.Context, site string, limit time.Duration) {
	timer := time.NewTimer(limit)
	defer timer.Stop()
	for {
		g.mu.Lock()
		if g.waiting[site] == 0 {
			g.mu.Unlock()
			return
		}
		if g.changed == nil {
			g.changed = make(chan struct{})
		}
		ch := g.changed
		g.mu.Unlock()
		select {
		case <-ch:
		case <-timer.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// AwaitSite waits, at most limit, while a task being started has devices
// at site whose assignment is not ready: the hub link calls it before
// answering the site's report, so the site gets the task in this answer.
func (h *Hub) AwaitSite(ctx context.Context, site string, limit time.Duration) {
	h.gate.await(ctx, site, limit)
}
