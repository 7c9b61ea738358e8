package control

import (
	"fmt"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/outpost-mesh/outpost/consensus"
	"github.com/outpost-mesh/outpost/consensus/consensustest"
	"github.com/outpost-mesh/outpost/ota"
)

// TestSiteCollectsEndedTasks: an assignment whose devices have all ended
// is deleted with its runs once the hub has acknowledged every result and
// Retention has passed, not before; one with devices still to run stays;
// and a retry that comes after, as a new assignment of the device to run
// again, runs only that device.
func TestSiteCollectsEndedTasks(t *testing.T) {
	t.Parallel()
	store := consensustest.NewStore(t, Register)
	runner := &countingRunner{runs: map[string]int{}}
	const retention = 300 * time.Millisecond
	site, ctx := runSite(t, store, runner, func(c *SiteConfig) { c.Retention = retention })
	spec := &ota.TaskSpec{Steps: []ota.Step{{Name: "s", Type: ota.StepExec, Command: []string{"true"}}}}
	nodes := []string{"a-0", "a-1", "a-2"}
	if err := site.Accept(ctx, []Assignment{
		{Task: "done", UID: "u1", Attempt: 1, Version: 1, Window: 3, Devices: nodes, Spec: spec},
		{Task: "held", UID: "u2", Attempt: 1, Version: 1, Window: 3, Devices: nodes, Spec: spec, Halted: true},
	}); err != nil {
		t.Fatal(err)
	}
	var results []DeviceReport
	waitUntil(t, "the three results", func() bool {
		reports, err := site.Pending(ctx, 100)
		if err != nil {
			t.Fatal(err)
		}
		results = results[:0]
		for _, r := range reports {
			if r.Status.Phase == ota.DeviceSucceeded {
				results = append(results, r)
			}
		}
		return len(results) == len(nodes)
	})
	// Not acknowledged: kept however long it has ended.
	time.Sleep(3 * retention)
	if got := stored(t, store); !slices.Equal(got, []string{"u1: 3 runs", "u2: 3 runs"}) {
		t.Fatalf("before the hub acknowledged the results: %v, want both tasks whole", got)
	}
	if err := site.Acked(ctx, results[:2]); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * retention)
	if got := stored(t, store); !slices.Equal(got, []string{"u1: 3 runs", "u2: 3 runs"}) {
		t.Fatalf("with one result unacknowledged: %v, want both tasks whole", got)
	}
	if err := site.Acked(ctx, results[2:]); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the ended task to go", func() bool { return slices.Equal(stored(t, store), []string{"u2: 3 runs"}) })
	if have, err := site.Have(ctx); err != nil || len(have) != 1 || have["u2"] != 1 {
		t.Fatalf("Have = %v, %v; want only u2", have, err)
	}

	// A retry of a-1, after the site let the task go, comes as a new
	// assignment of that device.
	if err := site.Accept(ctx, []Assignment{{Task: "done", UID: "u1", Attempt: 2, Version: 3, Window: 3, Devices: []string{"a-1"}, Retry: []string{"a-1"}, Spec: spec}}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the retry to run", func() bool { return runner.count("a-1") == 2 })
	if a0, a2 := runner.count("a-0"), runner.count("a-2"); a0 != 1 || a2 != 1 {
		t.Errorf("a-0 ran %d times and a-2 %d, want once each", a0, a2)
	}
	// The run's object is written with its result, a moment after the
	// runner returns.
	waitUntil(t, "u1 with the retry's one run", func() bool {
		return slices.Equal(stored(t, store), []string{"u1: 1 runs", "u2: 3 runs"})
	})
}

// stored lists the SiteTasks in the store with their number of runs, and
// runs without a SiteTask.
func stored(t *testing.T, store *consensus.Store) []string {
	t.Helper()
	tasks, runs := siteObjects(t, store)
	n := map[string]int{}
	for _, o := range runs {
		n[o.Labels[labelUID]]++
	}
	var out []string
	for _, o := range tasks {
		out = append(out, fmt.Sprintf("%s: %d runs", o.Name, n[o.Name]))
		delete(n, o.Name)
	}
	for uid, c := range n {
		out = append(out, fmt.Sprintf("%d runs of %s without a task", c, uid))
	}
	slices.Sort(out)
	return out
}

// siteObjects lists the SiteTasks and the DeviceRuns in the store.
func siteObjects(t *testing.T, store *consensus.Store) (tasks, runs []*consensus.Object) {
	t.Helper()
	tl, err := store.List(t.Context(), &SiteTaskKind, "", nil, consensus.ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rl, err := store.List(t.Context(), &DeviceRunKind, "", nil, consensus.ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tl.Items, rl.Items
}

// waitUntil polls cond every 10 ms for up to a minute.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestAssignmentsAfterASiteLetGo: a site that lacks a running task (it
// deleted it after its devices ended) is sent only the devices the hub
// holds unfinished, nothing when there are none; a new leader sends
// nothing until it has counted the task.
func TestAssignmentsAfterASiteLetGo(t *testing.T) {
	t.Parallel()
	store := consensustest.NewStore(t, ota.Register)
	inv := fakeInventory{{Name: "a-0", Site: "a"}, {Name: "a-1", Site: "a"}, {Name: "a-2", Site: "a"}, {Name: "b-0", Site: "b"}}
	newHub := func() *Hub {
		h, err := NewHub(HubConfig{Store: store, Inventory: inv, IsLeader: func() bool { return true }})
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	hub := newHub()
	ctx := t.Context()
	task := &consensus.Object{ObjectMeta: metav1.ObjectMeta{Name: "t"}}
	_ = task.SetSpec(ota.TaskSpec{Targets: ota.Targets{Sites: []string{"a", "b"}}, Steps: []ota.Step{{Name: "r", Type: ota.StepRead, Path: "/etc/hostname"}}})
	if _, err := store.Create(ctx, &ota.TaskKind, task); err != nil {
		t.Fatal(err)
	}
	pass := func(h *Hub) {
		t.Helper()
		if err := h.reconcile(ctx); err != nil {
			t.Fatal(err)
		}
	}
	devices := func(h *Hub, site string) string {
		var out []string
		for _, a := range h.Assignments(site, SiteState{}) {
			out = append(out, fmt.Sprint(a.Devices))
		}
		return fmt.Sprint(out)
	}
	pass(hub) // start
	if got := devices(hub, "a"); got != "[[a-0 a-1 a-2]]" {
		t.Fatalf("a new task's assignment: %s, want all three devices", got)
	}
	pass(hub) // the first count
	uid := hub.Assignments("a", SiteState{})[0].UID
	now := metav1.Now()
	for _, node := range []string{"a-0", "a-2"} {
		if err := hub.Ingest(ctx, "a", []DeviceReport{{Task: "t", UID: uid, Attempt: 1, Node: node,
			Status: ota.DeviceResultStatus{Phase: ota.DeviceSucceeded, Attempt: 1, CompletionTime: &now}}}); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, "a-1 alone", func() bool { return devices(hub, "a") == "[[a-1]]" })
	if err := hub.Ingest(ctx, "a", []DeviceReport{{Task: "t", UID: uid, Attempt: 1, Node: "a-1",
		Status: ota.DeviceResultStatus{Phase: ota.DeviceFailed, Attempt: 1, CompletionTime: &now}}}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "nothing for a", func() bool { return devices(hub, "a") == "[]" })
	if got := devices(hub, "b"); got != "[[b-0]]" {
		t.Errorf("site b: %s, want its device", got)
	}

	next := newHub() // a new leader
	pass(next)
	next.tally.reset() // as if its first count had not happened yet
	if got := devices(next, "b"); got != "[]" {
		t.Errorf("a new leader before counting sent %s, want nothing yet", got)
	}
	pass(next)
	if got, a := devices(next, "b"), devices(next, "a"); got != "[[b-0]]" || a != "[]" {
		t.Errorf("a new leader after counting: b %s, a %s; want [[b-0]] and nothing", got, a)
	}
}

// TestCollectStoppedHalfWay: a collect deletes the SiteTask first, so a
// leader that stops before the runs are gone leaves runs without a task,
// never a task whose started devices (SiteTaskSpec.Started) lost their
// runs and would show Running again. A later leader reports such runs
// (the hub may not hold them) and deletes them once acknowledged; the
// devices do not run again.
func TestCollectStoppedHalfWay(t *testing.T) {
	t.Parallel()
	store := consensustest.NewStore(t, Register)
	runner := &countingRunner{runs: map[string]int{}}
	nodes := []string{"a-0", "a-1"}
	spec := &ota.TaskSpec{Steps: []ota.Step{{Name: "s", Type: ota.StepExec, Command: []string{"true"}}}}
	first, ctx := runSite(t, store, runner, func(c *SiteConfig) { c.Retention = time.Hour })
	if err := first.Accept(ctx, []Assignment{{Task: "t", UID: "u1", Attempt: 1, Version: 1, Window: 2, Devices: nodes, Spec: spec}}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "both results stored", func() bool { return slices.Equal(stored(t, store), []string{"u1: 2 runs"}) && runner.count("a-1") == 1 })
	// The first leader deletes the SiteTask and stops.
	task, err := store.Get(ctx, &SiteTaskKind, "", "u1", consensus.ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := first.deleteAt(ctx, &SiteTaskKind, task); err != nil {
		t.Fatal(err)
	}

	next, _ := runSite(t, store, runner, func(c *SiteConfig) { c.Retention = time.Hour })
	var reports []DeviceReport
	waitUntil(t, "the runs reported again", func() bool {
		if reports, err = next.Pending(ctx, 100); err != nil {
			t.Fatal(err)
		}
		return len(reports) == len(nodes)
	})
	if got := stored(t, store); !slices.Equal(got, []string{"2 runs of u1 without a task"}) {
		t.Fatalf("before the hub acknowledged them: %v, want the two runs kept", got)
	}
	if err := next.Acked(ctx, reports); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the runs deleted", func() bool { return len(stored(t, store)) == 0 })
	for _, n := range nodes {
		if c := runner.count(n); c != 1 {
			t.Errorf("%s ran %d times, want once", n, c)
		}
	}
}
