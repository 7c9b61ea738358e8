package node

import (
	"testing"
	"time"

	"github.com/outpost-mesh/outpost/consensus"
	"github.com/outpost-mesh/outpost/consensus/consensustest"
	"github.com/outpost-mesh/outpost/gossip"
)

// TestRefreshAgeKeepsRefreshesTogether: while no node's lastSeen is due
// the roster waits the whole interval; once one is, every node half way
// there is refreshed with it, so a site's refreshes become one batch.
func TestRefreshAgeKeepsRefreshesTogether(t *testing.T) {
	t.Parallel()
	now := time.Now()
	interval := time.Minute
	var c rosterCache
	c.m = map[string]rosterEntry{
		"a": {at: now.Add(-10 * time.Second)},
		"b": {at: now.Add(-40 * time.Second)},
		"c": {at: now.Add(-50 * time.Second)},
	}
	names := []string{"a", "b", "c"}
	if got := c.refreshAge(names, now, interval); got != interval {
		t.Fatalf("with none due: refresh past %s, want %s", got, interval)
	}
	c.m["d"] = rosterEntry{at: now.Add(-61 * time.Second)}
	got := c.refreshAge(append(names, "d"), now, interval)
	if got != interval/2 {
		t.Fatalf("with d due: refresh past %s, want %s", got, interval/2)
	}
	var refreshed []string
	for _, name := range []string{"a", "b", "c", "d"} {
		if !c.fresh(name, now, got) {
			refreshed = append(refreshed, name)
		}
	}
	if len(refreshed) != 3 || refreshed[0] != "b" {
		t.Fatalf("refreshed with d: %v, want b, c and d", refreshed)
	}
	// A node never written (a new leader's cache) is due.
	if got := c.refreshAge([]string{"a", "new"}, now, interval); got != interval/2 {
		t.Fatalf("with an unknown node: refresh past %s, want %s", got, interval/2)
	}
}

// TestUpsertNodeLastSeen: a live node's lastSeen is written when it is
// due and not before; a node that stops being alive gets lastSeen at once,
// and keeps it while it stays down.
func TestUpsertNodeLastSeen(t *testing.T) {
	t.Parallel()
	store := consensustest.NewStore(t, func(r *consensus.Registry) error { return r.Register(NodeKind) })
	ctx := t.Context()
	seen := func() time.Time {
		t.Helper()
		o, err := store.Get(ctx, &NodeKind, "", "n1", consensus.ReadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var st NodeStatus
		if err := o.DecodeStatus(&st); err != nil {
			t.Fatal(err)
		}
		if st.LastSeen == nil {
			return time.Time{}
		}
		return st.LastSeen.Time
	}
	labels := map[string]string{"outpost.dev/site": "s"}
	alive := NodeStatus{Site: "s", State: string(gossip.Alive)}
	const refresh = 5 * time.Minute
	t0 := time.Now().Truncate(time.Second)
	if err := upsertNode(ctx, store, "n1", labels, alive, t0, refresh); err != nil {
		t.Fatal(err)
	}
	if got := seen(); !got.Equal(t0) {
		t.Fatalf("new live node: lastSeen %s, want %s", got, t0)
	}
	if err := upsertNode(ctx, store, "n1", labels, alive, t0.Add(time.Minute), refresh); err != nil {
		t.Fatal(err)
	}
	if got := seen(); !got.Equal(t0) {
		t.Fatalf("a minute later: lastSeen %s, want %s (not due)", got, t0)
	}
	t1 := t0.Add(2 * time.Minute)
	dead := alive
	dead.State = string(gossip.Dead)
	if err := upsertNode(ctx, store, "n1", labels, dead, t1, refresh); err != nil {
		t.Fatal(err)
	}
	if got := seen(); !got.Equal(t1) {
		t.Fatalf("gone: lastSeen %s, want %s, when it went", got, t1)
	}
	if err := upsertNode(ctx, store, "n1", labels, dead, t1.Add(time.Hour), refresh); err != nil {
		t.Fatal(err)
	}
	if got := seen(); !got.Equal(t1) {
		t.Fatalf("an hour down: lastSeen %s, want %s", got, t1)
	}
	t2 := t1.Add(2 * time.Hour)
	if err := upsertNode(ctx, store, "n1", labels, alive, t2, refresh); err != nil {
		t.Fatal(err)
	}
	if got := seen(); !got.Equal(t2) {
		t.Fatalf("back: lastSeen %s, want %s", got, t2)
	}
}
