package node

import (
	"context"
	"log/slog"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/outpost-mesh/outpost/consensus"
)

// TestLinkReportSendsTheRosterOnChange checks the site link's report: the
// first carries the roster; an unchanged roster, or one whose only change
// is a node's lastSeen, is left out (sameNodes); a changed node's status
// brings it back.
func TestLinkReportSendsTheRosterOnChange(t *testing.T) {
	t.Parallel()
	cfg := DefaultConfig()
	cfg.Name, cfg.DataDir = "node-1", t.TempDir()
	cfg.APIAddr, cfg.BindAddr, cfg.RegistryAddr = "127.0.0.1:0", "127.0.0.1", ""
	cfg.QUICPort, cfg.GossipPort = 0, 0
	cfg.TuneRaft = func(c *consensus.Config) {
		c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = 50*time.Millisecond, 50*time.Millisecond, 50*time.Millisecond
	}
	n, err := New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	store := n.group.Store()
	var obj *consensus.Object
	for deadline := time.Now().Add(30 * time.Second); obj == nil; {
		if time.Now().After(deadline) {
			t.Fatal("the node's own Node object was not written within 30s")
		}
		time.Sleep(50 * time.Millisecond)
		obj, _ = store.Get(ctx, &NodeKind, "", "node-1", consensus.ReadOptions{Stale: true})
	}

	var last linkRoster
	first, err := n.report(ctx, &last)
	if err != nil || first.SameNodes || len(first.Nodes) == 0 {
		t.Fatalf("first report: sameNodes %v, %d nodes (%v); want the roster", first.SameNodes, len(first.Nodes), err)
	}
	again, err := n.report(ctx, &last)
	if err != nil || !again.SameNodes || again.Nodes != nil {
		t.Fatalf("unchanged roster: sameNodes %v, %d nodes (%v); want it left out", again.SameNodes, len(again.Nodes), err)
	}

	update := func(change func(*NodeStatus)) {
		t.Helper()
		cur, err := store.Get(ctx, &NodeKind, "", "node-1", consensus.ReadOptions{Stale: true})
		if err != nil {
			t.Fatal(err)
		}
		var st NodeStatus
		_ = cur.DecodeStatus(&st)
		change(&st)
		next := cur.DeepCopy()
		if err := next.SetStatus(st); err != nil {
			t.Fatal(err)
		}
		if _, err := store.UpdateStatus(ctx, &NodeKind, next); err != nil {
			t.Fatal(err)
		}
	}
	update(func(st *NodeStatus) { seen := metav1.NewTime(time.Now().Add(time.Hour)); st.LastSeen = &seen })
	if r, err := n.report(ctx, &last); err != nil || !r.SameNodes {
		t.Fatalf("after a lastSeen refresh: sameNodes %v (%v); want the roster left out", r.SameNodes, err)
	}
	update(func(st *NodeStatus) { st.Version = "v-test" })
	r, err := n.report(ctx, &last)
	if err != nil || r.SameNodes || len(r.Nodes) == 0 {
		t.Fatalf("after a status change: sameNodes %v, %d nodes (%v); want the roster", r.SameNodes, len(r.Nodes), err)
	}
	found := false
	for _, nd := range r.Nodes {
		found = found || nd.Name == "node-1" && nd.Status.Version == "v-test"
	}
	if !found {
		t.Fatalf("the report's roster %+v lacks node-1 at version v-test", r.Nodes)
	}
}
