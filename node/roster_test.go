package node

import (
	"maps"
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
	dead := alive
	dead.State = string(gossip.Dead)
	t0 := time.Now().Truncate(time.Second)
	t1, t2 := t0.Add(2*time.Minute), t0.Add(2*time.Hour+2*time.Minute)
	for _, step := range []struct {
		what     string
		st       NodeStatus
		at, want time.Time
	}{
		{"a new live node", alive, t0, t0},
		{"a minute later (not due)", alive, t0.Add(time.Minute), t0},
		{"gone", dead, t1, t1},
		{"an hour down", dead, t1.Add(time.Hour), t1},
		{"back", alive, t2, t2},
	} {
		if err := upsertNode(ctx, store, "n1", labels, step.st, step.at, 5*time.Minute); err != nil {
			t.Fatal(err)
		}
		if got := seen(); !got.Equal(step.want) {
			t.Fatalf("%s: lastSeen %s, want %s", step.what, got, step.want)
		}
	}
}

// TestUpsertNodeKeepsOperatorLabels: a label an operator put on a Node
// (`kubectl label`) stays when the node's roster writes it again; a label
// the node itself stops setting goes; the node's own value wins its keys.
func TestUpsertNodeKeepsOperatorLabels(t *testing.T) {
	t.Parallel()
	store := consensustest.NewStore(t, func(r *consensus.Registry) error { return r.Register(NodeKind) })
	ctx := t.Context()
	st := NodeStatus{Site: "s", State: string(gossip.Alive)}
	t0 := time.Now()
	if err := upsertNode(ctx, store, "n1", map[string]string{"outpost.dev/site": "s", "zone": "a"}, st, t0, time.Minute); err != nil {
		t.Fatal(err)
	}
	o, err := store.Get(ctx, &NodeKind, "", "n1", consensus.ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	o.Labels["rack"] = "r1"
	o.Labels["outpost.dev/site"] = "elsewhere"
	if _, err := store.Update(ctx, &NodeKind, o); err != nil {
		t.Fatal(err)
	}
	// Past the refresh, the node no longer sets zone.
	if err := upsertNode(ctx, store, "n1", map[string]string{"outpost.dev/site": "s"}, st, t0.Add(time.Hour), time.Minute); err != nil {
		t.Fatal(err)
	}
	if o, err = store.Get(ctx, &NodeKind, "", "n1", consensus.ReadOptions{}); err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{"outpost.dev/site": "s", "rack": "r1"}; !maps.Equal(o.Labels, want) {
		t.Errorf("labels %v, want %v", o.Labels, want)
	}
}
