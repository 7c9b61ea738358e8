package node

import (
	"context"
	"log/slog"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	"github.com/outpost-mesh/outpost/consensus"
	"github.com/outpost-mesh/outpost/ota"
	"github.com/outpost-mesh/outpost/ota/control"
	"github.com/outpost-mesh/outpost/transport"
)

// TestLinkReportSendsTheRosterOnChange checks the site link's report: the
// first carries the roster; an unchanged roster, or one whose only change
// is a node's lastSeen, is left out (sameNodes); a changed node's status
// brings it back.
func TestLinkReportSendsTheRosterOnChange(t *testing.T) {
	t.Parallel()
	n, ctx := startHubForLinkTest(t)
	store := n.group.Store()
	// The roster creates the Node, then writes its status: wait for both.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the node's own Node object was not written alive within 30s")
		}
		var st NodeStatus
		if obj, err := store.Get(ctx, &NodeKind, "", "node-1", consensus.ReadOptions{Stale: true}); err == nil && obj.DecodeStatus(&st) == nil && st.State == "alive" {
			break
		}
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

	// The node's own roster writes its Node too: a conflict is read again.
	update := func(change func(*NodeStatus)) {
		t.Helper()
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			cur, err := store.Get(ctx, &NodeKind, "", "node-1", consensus.ReadOptions{Stale: true})
			if err != nil {
				return err
			}
			var st NodeStatus
			_ = cur.DecodeStatus(&st)
			change(&st)
			next := cur.DeepCopy()
			if err := next.SetStatus(st); err != nil {
				return err
			}
			_, err = store.UpdateStatus(ctx, &NodeKind, next)
			return err
		})
		if err != nil {
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

// startHubForLinkTest runs a hub of one node (node-1) until the test ends.
func startHubForLinkTest(t *testing.T) (*Node, context.Context) {
	t.Helper()
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
	return n, ctx
}

// TestAssignFirstOncePerSiteAndTask checks that a site's report is
// answered at once with a task the site has not heard of, once: the next
// report that still lacks it takes the usual path, and a site that holds
// the task is not answered early again. A report that carries a changed
// roster is never answered early: its nodes are written.
func TestAssignFirstOncePerSiteAndTask(t *testing.T) {
	t.Parallel()
	n, ctx := startHubForLinkTest(t)
	store := n.group.Store()
	node := &consensus.Object{ObjectMeta: metav1.ObjectMeta{Name: "edge-a1", Labels: map[string]string{"outpost.dev/site": "a"}}}
	_ = node.SetStatus(NodeStatus{Site: "a", State: "alive"})
	task := &consensus.Object{ObjectMeta: metav1.ObjectMeta{Name: "t1"}}
	_ = task.SetSpec(ota.TaskSpec{Targets: ota.Targets{Sites: []string{"a"}}, Steps: []ota.Step{{Name: "s", Type: ota.StepExec, Command: []string{"true"}}}})
	var err error
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the hub did not take writes within 30s: %v", err)
		}
		if _, err = store.CreateWithStatus(ctx, &NodeKind, node); err == nil {
			break
		}
	}
	if _, err := store.Create(ctx, &ota.TaskKind, task); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); len(n.otaHub.Assignments("a", nil)) == 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no assignment for site a within 30s")
		}
	}
	// A roster change goes through the usual path, assignment included.
	roster := &linkReport{Site: "a", Leader: "edge-a1", OTA: &otaLinkReport{},
		Nodes: []linkNode{{Name: "edge-a2", Status: NodeStatus{Site: "a", State: "alive"}}}}
	reply := n.acceptReport(ctx, transport.Peer{Name: "edge-a1", Site: "a"}, roster)
	if reply.Error != "" || reply.OTA == nil || len(reply.OTA.Assignments) != 1 {
		t.Fatalf("reply to a roster change: %+v", reply)
	}
	if _, err := store.Get(ctx, &NodeKind, "", "edge-a2", consensus.ReadOptions{}); err != nil {
		t.Fatalf("the roster's new node was not written: %v", err)
	}
	first := n.assignFirst(ctx, "a", &otaLinkReport{})
	if first == nil {
		t.Fatal("a report without the task was not answered early")
	}
	if len(first.Assignments) != 1 || first.Assignments[0].Spec == nil || first.Acked != nil {
		t.Fatalf("first reply %+v: want the one assignment with its spec, nothing acknowledged", first)
	}
	uid := first.Assignments[0].UID
	if again := n.assignFirst(ctx, "a", &otaLinkReport{}); again != nil {
		t.Fatalf("a second report lacking the task was answered early again: %+v", again)
	}
	have := control.SiteState{uid: first.Assignments[0].Version}
	if held := n.assignFirst(ctx, "a", &otaLinkReport{Have: have}); held != nil {
		t.Fatalf("a site holding the task was answered early: %+v", held)
	}
	n.firstMu.Lock()
	left := len(n.firstSent["a"])
	n.firstMu.Unlock()
	if left != 0 {
		t.Errorf("%d tasks still remembered for site a after it took them in", left)
	}
}
