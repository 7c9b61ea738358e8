package control

import (
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/outpost-mesh/outpost/consensus"
	"github.com/outpost-mesh/outpost/consensus/consensustest"
	"github.com/outpost-mesh/outpost/ota"
)

// TestTaskStatusWrittenOnChange: a running task's status (which carries
// its targets) is not written again when nothing changed, progress is
// written at most every statusEvery, and the end at once.
func TestTaskStatusWrittenOnChange(t *testing.T) {
	t.Parallel()
	store, hub, _ := newTask(t, 3)
	ctx := t.Context()
	status := func() (string, ota.TaskStatus) {
		obj, err := store.Get(ctx, &ota.TaskKind, "", "t", consensus.ReadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var st ota.TaskStatus
		_ = obj.DecodeStatus(&st)
		return obj.ResourceVersion, st
	}
	pass := func() {
		t.Helper()
		if err := hub.reconcile(ctx); err != nil {
			t.Fatal(err)
		}
	}
	age := func(d time.Duration) { // as if the hub's last write were d ago
		hub.mu.Lock()
		for _, task := range hub.tasks {
			task.statusAt = time.Now().Add(-d)
		}
		hub.mu.Unlock()
	}
	pass()         // start
	age(time.Hour) // the first count, which adds the Counted condition
	pass()
	rv, st := status()
	if st.Phase != ota.TaskRunning {
		t.Fatalf("phase %s, want Running", st.Phase)
	}
	age(time.Hour) // nothing new
	pass()
	pass()
	if now, _ := status(); now != rv {
		t.Fatalf("an unchanged running task was written again (%s → %s)", rv, now)
	}

	report := func(node string) {
		t.Helper()
		now := metav1.Now()
		as := hub.Assignments("a", SiteState{})
		if err := hub.Ingest(ctx, "a", []DeviceReport{{Task: "t", UID: as[0].UID, Attempt: 1, Node: node,
			Status: ota.DeviceResultStatus{Phase: ota.DeviceSucceeded, Attempt: 1, CompletionTime: &now}}}); err != nil {
			t.Fatal(err)
		}
	}
	age(0) // just written
	report("a-0")
	waitTally(t, hub, "t", 1)
	pass()
	if now, _ := status(); now != rv {
		t.Fatalf("progress was written within %s of the last write", statusEvery)
	}
	age(statusEvery + time.Second)
	pass() // the deferred progress, still marked
	_, st = status()
	if st.Counts.Succeeded != 1 {
		t.Fatalf("after the wait: %+v, want 1 succeeded", st.Counts)
	}
	age(0)
	report("a-1")
	report("a-2")
	waitTally(t, hub, "t", 3)
	pass()
	if _, st = status(); st.Phase != ota.TaskSucceeded {
		t.Fatalf("phase %s with every device done, want Succeeded written at once", st.Phase)
	}
	// Ended, it no longer holds its deletion for its devices.
	if obj, err := store.Get(ctx, &ota.TaskKind, "", "t", consensus.ReadOptions{}); err != nil || len(obj.Finalizers) != 0 {
		t.Fatalf("the ended task's finalizers: %v (%v), want none", obj.Finalizers, err)
	}
}

// TestSiteRunningShownInCounts: the devices a site's report counts as
// running, whose DeviceResults the hub holds Queued, show in the task's
// counts as Running (at most the site's Queued ones), without a write of
// their DeviceResults; a count of a task the hub does not run is dropped.
func TestSiteRunningShownInCounts(t *testing.T) {
	t.Parallel()
	store, hub, task := newTask(t, 3)
	ctx := t.Context()
	uid := string(task.UID)
	counted := func(want string) {
		t.Helper()
		hub.mu.Lock()
		for _, ht := range hub.tasks {
			ht.statusAt = time.Time{} // progress is written on every pass
		}
		hub.mu.Unlock()
		if err := hub.reconcile(ctx); err != nil {
			t.Fatal(err)
		}
		obj, err := store.Get(ctx, &ota.TaskKind, "", "t", consensus.ReadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var st ota.TaskStatus
		_ = obj.DecodeStatus(&st)
		c, a := st.Counts, st.Sites["a"]
		got := fmt.Sprintf("queued %d running %d succeeded %d; site a: queued %d running %d", c.Queued, c.Running, c.Succeeded, a.Queued, a.Running)
		if got != want {
			t.Fatalf("counts %s, want %s", got, want)
		}
	}
	if err := hub.reconcile(ctx); err != nil { // start
		t.Fatal(err)
	}
	counted("queued 3 running 0 succeeded 0; site a: queued 3 running 0")
	rv := func() string {
		obj, err := store.Get(ctx, &ota.DeviceResultKind, "", ota.ResultName("t", "a-1"), consensus.ReadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return obj.ResourceVersion
	}
	before := rv()
	hub.SiteRunning("a", map[string]int{uid: 2, "another-task": 5})
	counted("queued 1 running 2 succeeded 0; site a: queued 1 running 2")
	if after := rv(); after != before {
		t.Fatalf("a counted device's DeviceResult was written (%s → %s)", before, after)
	}
	hub.mu.Lock()
	kept := fmt.Sprint(hub.running)
	hub.mu.Unlock()
	if kept != fmt.Sprintf("map[a:map[%s:2]]", uid) {
		t.Fatalf("the hub keeps %s; want only the count of its task", kept)
	}
	hub.SiteRunning("a", map[string]int{uid: 7})
	counted("queued 0 running 3 succeeded 0; site a: queued 0 running 3")

	now := metav1.Now()
	if err := hub.Ingest(ctx, "a", []DeviceReport{{Task: "t", UID: uid, Attempt: 1, Node: "a-0",
		Status: ota.DeviceResultStatus{Phase: ota.DeviceSucceeded, Attempt: 1, CompletionTime: &now}}}); err != nil {
		t.Fatal(err)
	}
	hub.SiteRunning("a", map[string]int{uid: 1})
	waitTally(t, hub, "t", 1)
	counted("queued 1 running 1 succeeded 1; site a: queued 1 running 1")
	hub.SiteRunning("a", nil)
	counted("queued 2 running 0 succeeded 1; site a: queued 2 running 0")
}

// waitTally waits (a bounded time) until the hub's tally counts n of
// task's devices finished.
func waitTally(t *testing.T, h *Hub, task string, n int) {
	t.Helper()
	h.mu.Lock()
	var uid string
	for _, ht := range h.tasks {
		if ht.name == task {
			uid = ht.uid
		}
	}
	h.mu.Unlock()
	for range 500 {
		c, _, err := h.tally.counts(t.Context(), h.cfg.Store, task, types.UID(uid))
		if err == nil && c.Finished() == n {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("the tally did not count %d devices of %s finished within 5 s", n, task)
}

// newTask is a hub over the devices a-0 … a-(n-1) of site a and its one
// task "t", which reads a file on every one of them, created and not yet
// started.
func newTask(t *testing.T, n int) (*consensus.Store, *Hub, *consensus.Object) {
	t.Helper()
	var inv fakeInventory
	for i := range n {
		inv = append(inv, Device{Name: fmt.Sprintf("a-%d", i), Site: "a"})
	}
	store := consensustest.NewStore(t, ota.Register)
	hub, err := NewHub(HubConfig{Store: store, Inventory: inv, IsLeader: func() bool { return true }})
	if err != nil {
		t.Fatal(err)
	}
	task := &consensus.Object{ObjectMeta: metav1.ObjectMeta{Name: "t"}}
	_ = task.SetSpec(ota.TaskSpec{Targets: ota.Targets{Sites: []string{"a"}}, Steps: []ota.Step{{Name: "r", Type: ota.StepRead, Path: "/etc/hostname"}}})
	if task, err = store.Create(t.Context(), &ota.TaskKind, task); err != nil {
		t.Fatal(err)
	}
	return store, hub, task
}

// startedTask is newTask of one device (a-0), started: its DeviceResult
// created.
func startedTask(t *testing.T) (*consensus.Store, *Hub, *consensus.Object) {
	t.Helper()
	store, hub, task := newTask(t, 1)
	if err := hub.reconcile(t.Context()); err != nil {
		t.Fatal(err)
	}
	return store, hub, task
}

// TestIngestRetriesAStaleRead: a report written over a DeviceResult that
// changed since it was read is read again and recorded, not refused (a
// refusal would fail the site's whole report and drop its link).
func TestIngestRetriesAStaleRead(t *testing.T) {
	t.Parallel()
	store, hub, task := startedTask(t)
	ctx := t.Context()
	stale, err := store.Get(ctx, &ota.DeviceResultKind, "", ota.ResultName("t", "a-0"), consensus.ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	report := func(phase ota.DevicePhase) DeviceReport {
		return DeviceReport{Task: "t", UID: string(task.UID), Attempt: 1, Node: "a-0", Status: ota.DeviceResultStatus{Phase: phase, Attempt: 1}}
	}
	if err := hub.Ingest(ctx, "a", []DeviceReport{report(ota.DeviceRunning)}); err != nil {
		t.Fatal(err)
	}
	if err := hub.ingestFresh(ctx, "a", report(ota.DeviceSucceeded), stale); err != nil {
		t.Fatalf("a report over a stale read: %v", err)
	}
	obj, err := store.Get(ctx, &ota.DeviceResultKind, "", ota.ResultName("t", "a-0"), consensus.ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var st ota.DeviceResultStatus
	_ = obj.DecodeStatus(&st)
	if st.Phase != ota.DeviceSucceeded || obj.Labels[ota.LabelPhase] != string(ota.DeviceSucceeded) {
		t.Fatalf("stored %s (label %s), want Succeeded", st.Phase, obj.Labels[ota.LabelPhase])
	}
}

// TestIngestKeepsTheNewerPhase: a device's Running that reaches the hub
// after its result (a site whose link timed out sends the result on a new
// link while the hub still writes the old link's Running) does not
// overwrite the result; a later attempt's Running does.
func TestIngestKeepsTheNewerPhase(t *testing.T) {
	t.Parallel()
	store, hub, task := startedTask(t)
	ctx := t.Context()
	report := func(phase ota.DevicePhase, attempt int) DeviceReport {
		return DeviceReport{Task: "t", UID: string(task.UID), Attempt: attempt, Node: "a-0", Status: ota.DeviceResultStatus{Phase: phase, Attempt: attempt}}
	}
	stored := func() ota.DevicePhase {
		t.Helper()
		obj, err := store.Get(ctx, &ota.DeviceResultKind, "", ota.ResultName("t", "a-0"), consensus.ReadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var st ota.DeviceResultStatus
		_ = obj.DecodeStatus(&st)
		if obj.Labels[ota.LabelPhase] != string(st.Phase) {
			t.Fatalf("label %s, status %s", obj.Labels[ota.LabelPhase], st.Phase)
		}
		return st.Phase
	}
	for _, step := range []struct {
		report DeviceReport
		want   ota.DevicePhase
	}{
		{report(ota.DeviceSucceeded, 1), ota.DeviceSucceeded},
		{report(ota.DeviceRunning, 1), ota.DeviceSucceeded}, // late: dropped
		{report(ota.DeviceQueued, 1), ota.DeviceSucceeded},
		{report(ota.DeviceRunning, 2), ota.DeviceRunning}, // a retry
		{report(ota.DeviceFailed, 2), ota.DeviceFailed},
		{report(ota.DeviceRunning, 1), ota.DeviceFailed}, // an older attempt
	} {
		if err := hub.Ingest(ctx, "a", []DeviceReport{step.report}); err != nil {
			t.Fatal(err)
		}
		if got := stored(); got != step.want {
			t.Fatalf("after %s of attempt %d: stored %s, want %s", step.report.Status.Phase, step.report.Attempt, got, step.want)
		}
	}
}

// TestResultPhase: a recount reads site and phase from the labels every
// status write sets, and decodes a result without them.
func TestResultPhase(t *testing.T) {
	t.Parallel()
	labelled := &consensus.Object{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{ota.LabelSite: "a", ota.LabelPhase: "Succeeded"}},
		Status: []byte(`{"phase":"Failed"}`)} // the label wins: written with the status
	if site, phase, ok := resultPhase(labelled); !ok || site != "a" || phase != ota.DeviceSucceeded {
		t.Errorf("labelled: %s %s %v, want a Succeeded", site, phase, ok)
	}
	bare := &consensus.Object{Spec: []byte(`{"task":"t","node":"b-1","site":"b"}`), Status: []byte(`{"phase":"Failed"}`)}
	if site, phase, ok := resultPhase(bare); !ok || site != "b" || phase != ota.DeviceFailed {
		t.Errorf("without labels: %s %s %v, want b Failed (decoded)", site, phase, ok)
	}
	queued := &consensus.Object{Spec: []byte(`{"task":"t","node":"b-1","site":"b"}`)}
	if _, phase, ok := resultPhase(queued); !ok || phase != ota.DeviceQueued {
		t.Errorf("no phase yet: %s %v, want Queued", phase, ok)
	}
	if _, _, ok := resultPhase(&consensus.Object{Status: []byte(`{"phase":`)}); ok {
		t.Error("a status that does not decode was counted")
	}
}

// TestDeletedTaskResultsCollected: the pass after a task is deleted
// removes its DeviceResults (and leaves another task's).
func TestDeletedTaskResultsCollected(t *testing.T) {
	t.Parallel()
	store := consensustest.NewStore(t, ota.Register)
	hub, err := NewHub(HubConfig{Store: store, Inventory: fakeInventory{{Name: "a-0", Site: "a"}, {Name: "a-1", Site: "a"}}, IsLeader: func() bool { return true }})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	for _, name := range []string{"gone", "kept"} {
		task := &consensus.Object{ObjectMeta: metav1.ObjectMeta{Name: name}}
		_ = task.SetSpec(ota.TaskSpec{Targets: ota.Targets{Sites: []string{"a"}}, Steps: []ota.Step{{Name: "r", Type: ota.StepRead, Path: "/etc/hostname"}}})
		if _, err := store.Create(ctx, &ota.TaskKind, task); err != nil {
			t.Fatal(err)
		}
	}
	if err := hub.reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	results := func() map[string]int {
		list, err := store.List(ctx, &ota.DeviceResultKind, "", nil, consensus.ReadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		n := map[string]int{}
		for _, o := range list.Items {
			n[o.Labels[ota.LabelTask]]++
		}
		return n
	}
	if n := results(); n["gone"] != 2 || n["kept"] != 2 {
		t.Fatalf("results after start: %v, want 2 of each task", n)
	}
	// Deleted, and gone (its finalizer removed, as the hub does once its
	// devices stopped: TestDeleteStopsTheDevices).
	gone, err := store.Delete(ctx, &ota.TaskKind, "", "gone", 0, "")
	if err != nil {
		t.Fatal(err)
	}
	gone.Finalizers = nil
	if _, err := store.Update(ctx, &ota.TaskKind, gone); err != nil {
		t.Fatal(err)
	}
	if err := hub.reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if n := results(); n["gone"] != 0 || n["kept"] != 2 {
		t.Fatalf("results after the task was deleted: %v, want none of gone and 2 of kept", n)
	}
}

// TestConcurrencyAcrossSites: a task of concurrency 1 over two sites runs
// one device at a time in all: the site with more devices gets the window,
// the other none; once the first site's devices have all finished, the
// other gets it in a new version of its assignment.
func TestConcurrencyAcrossSites(t *testing.T) {
	t.Parallel()
	inv := fakeInventory{{Name: "a-0", Site: "a"}, {Name: "a-1", Site: "a"}, {Name: "b-0", Site: "b"}}
	store := consensustest.NewStore(t, ota.Register)
	hub, err := NewHub(HubConfig{Store: store, Inventory: inv, IsLeader: func() bool { return true }})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	one := intstr.FromInt32(1)
	task := &consensus.Object{ObjectMeta: metav1.ObjectMeta{Name: "t"}}
	_ = task.SetSpec(ota.TaskSpec{Targets: ota.Targets{Sites: []string{"a", "b"}}, Concurrency: &one,
		Steps: []ota.Step{{Name: "r", Type: ota.StepRead, Path: "/etc/hostname"}}})
	if task, err = store.Create(ctx, &ota.TaskKind, task); err != nil {
		t.Fatal(err)
	}
	pass := func() {
		t.Helper()
		if err := hub.reconcile(ctx); err != nil {
			t.Fatal(err)
		}
	}
	window := func(site string, have SiteState) (int, int) {
		t.Helper()
		as := hub.Assignments(site, have)
		if len(as) != 1 {
			t.Fatalf("site %s: %d assignments, want 1", site, len(as))
		}
		return as[0].Window, as[0].Version
	}
	pass() // start
	pass() // the first count
	wa, _ := window("a", SiteState{})
	wb, vb := window("b", SiteState{})
	if wa != 1 || wb != 0 {
		t.Fatalf("windows a %d, b %d; want 1 and 0 (one device at a time in all)", wa, wb)
	}
	uid := string(task.UID)
	now := metav1.Now()
	for i, node := range []string{"a-0", "a-1"} {
		if err := hub.Ingest(ctx, "a", []DeviceReport{{Task: "t", UID: uid, Attempt: 1, Node: node,
			Status: ota.DeviceResultStatus{Phase: ota.DeviceSucceeded, Attempt: 1, CompletionTime: &now}}}); err != nil {
			t.Fatal(err)
		}
		waitTally(t, hub, "t", i+1)
		pass()
		if i == 0 {
			if as := hub.Assignments("b", SiteState{uid: vb}); len(as) != 0 {
				t.Fatalf("site b was sent %+v while site a still runs", as)
			}
		}
	}
	if wb, v := window("b", SiteState{uid: vb}); wb != 1 || v <= vb {
		t.Fatalf("after site a finished: site b window %d in version %d (had %d); want 1 in a newer one", wb, v, vb)
	}
	// Every site finished: the windows are as at the start, so a device
	// run again (a retry, a re-dispatch) has room before the next count.
	if err := hub.Ingest(ctx, "b", []DeviceReport{{Task: "t", UID: uid, Attempt: 1, Node: "b-0",
		Status: ota.DeviceResultStatus{Phase: ota.DeviceSucceeded, Attempt: 1, CompletionTime: &now}}}); err != nil {
		t.Fatal(err)
	}
	waitTally(t, hub, "t", 3)
	pass()
	hub.mu.Lock()
	w := hub.tasks[uid].win
	hub.mu.Unlock()
	if w["a"] != 1 || w["b"] != 0 {
		t.Fatalf("windows with every site finished: %v, want a 1 and b 0 as at the start", w)
	}
}

// TestWindowsGoToSitesThatReport: a site that has not reported for
// siteAbsentAfter (cut off, or never connected) holds no share of the
// concurrency while others report; all count while the hub has just begun
// to lead, or when none reports.
func TestWindowsGoToSitesThatReport(t *testing.T) {
	t.Parallel()
	one := intstr.FromInt32(1)
	now := time.Now()
	h := &Hub{seen: map[string]time.Time{}, leading: now.Add(-time.Hour)}
	task := &hubTask{spec: ota.TaskSpec{Concurrency: &one}, total: 3,
		sites: map[string][]string{"a": {"a-0", "a-1"}, "b": {"b-0"}}}
	for _, tc := range []struct {
		name         string
		seenA        time.Duration // ago; 0: never
		seenB        time.Duration
		leading      time.Duration
		done         map[string]bool
		wantA, wantB int
	}{
		{"both report: the larger site", time.Second, time.Second, time.Hour, nil, 1, 0},
		{"a cut off: b gets it", time.Minute, time.Second, time.Hour, nil, 0, 1},
		{"a never connected: b gets it", 0, time.Second, time.Hour, nil, 0, 1},
		{"just began to lead: all count", 0, time.Second, time.Second, nil, 1, 0},
		{"none reports: all count", time.Minute, time.Minute, time.Hour, nil, 1, 0},
		{"every site finished: as at the start", time.Minute, time.Second, time.Hour, map[string]bool{"a": true, "b": true}, 1, 0},
	} {
		h.seen = map[string]time.Time{}
		for site, ago := range map[string]time.Duration{"a": tc.seenA, "b": tc.seenB} {
			if ago > 0 {
				h.seen[site] = now.Add(-ago)
			}
		}
		h.leading, task.done = now.Add(-tc.leading), tc.done
		if w := h.windowsLocked(task, now); w["a"] != tc.wantA || w["b"] != tc.wantB {
			t.Errorf("%s: windows %v, want a %d b %d", tc.name, w, tc.wantA, tc.wantB)
		}
	}
}

// TestSitesFinishingMakeNoNewVersion: with every device allowed at once,
// sites finishing move no window of a site still running: the task's
// version stays, and no site is sent its assignment again.
func TestSitesFinishingMakeNoNewVersion(t *testing.T) {
	t.Parallel()
	var inv fakeInventory
	for _, site := range []string{"a", "b", "c"} {
		for j := range 2 {
			inv = append(inv, Device{Name: fmt.Sprintf("%s-%d", site, j), Site: site})
		}
	}
	store := consensustest.NewStore(t, ota.Register)
	hub, err := NewHub(HubConfig{Store: store, Inventory: inv, IsLeader: func() bool { return true }})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	all := intstr.FromString("100%")
	task := &consensus.Object{ObjectMeta: metav1.ObjectMeta{Name: "t"}}
	_ = task.SetSpec(ota.TaskSpec{Targets: ota.Targets{Sites: []string{"a", "b", "c"}}, Concurrency: &all,
		Steps: []ota.Step{{Name: "r", Type: ota.StepRead, Path: "/etc/hostname"}}})
	if task, err = store.Create(ctx, &ota.TaskKind, task); err != nil {
		t.Fatal(err)
	}
	if err := hub.reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	have := SiteState{}
	for _, site := range []string{"a", "b", "c"} {
		as := hub.Assignments(site, SiteState{})
		if len(as) != 1 || as[0].Window != 2 {
			t.Fatalf("site %s: %+v, want window 2", site, as)
		}
		have[as[0].UID] = as[0].Version
	}
	uid := string(task.UID)
	now := metav1.Now()
	for i, node := range []string{"a-0", "a-1", "b-0", "b-1", "c-0", "c-1"} {
		if err := hub.Ingest(ctx, node[:1], []DeviceReport{{Task: "t", UID: uid, Attempt: 1, Node: node,
			Status: ota.DeviceResultStatus{Phase: ota.DeviceSucceeded, Attempt: 1, CompletionTime: &now}}}); err != nil {
			t.Fatal(err)
		}
		waitTally(t, hub, "t", i+1)
		if err := hub.reconcile(ctx); err != nil {
			t.Fatal(err)
		}
		for _, site := range []string{"a", "b", "c"} {
			if as := hub.Assignments(site, have); len(as) != 0 {
				t.Fatalf("after %s finished, site %s was sent %+v again", node, site, as)
			}
		}
	}
}

// TestDeleteStopsTheDevices: a running task carries TaskFinalizer, so a
// delete first cancels it (the sites are sent canceled) and the task goes
// once its devices have stopped.
func TestDeleteStopsTheDevices(t *testing.T) {
	t.Parallel()
	store, hub, task := startedTask(t)
	ctx := t.Context()
	pass := func() {
		t.Helper()
		if err := hub.reconcile(ctx); err != nil {
			t.Fatal(err)
		}
	}
	get := func() (*consensus.Object, ota.TaskStatus) {
		t.Helper()
		obj, err := store.Get(ctx, &ota.TaskKind, "", task.Name, consensus.ReadOptions{})
		if apierrors.IsNotFound(err) {
			return nil, ota.TaskStatus{}
		}
		if err != nil {
			t.Fatal(err)
		}
		var st ota.TaskStatus
		_ = obj.DecodeStatus(&st)
		return obj, st
	}
	if obj, _ := get(); !slices.Contains(obj.Finalizers, ota.TaskFinalizer) {
		t.Fatalf("started task's finalizers: %v", obj.Finalizers)
	}
	as := hub.Assignments("a", SiteState{})
	have := SiteState{as[0].UID: as[0].Version}
	if _, err := store.Delete(ctx, &ota.TaskKind, "", task.Name, 0, ""); err != nil {
		t.Fatal(err)
	}
	pass()
	if obj, _ := get(); obj == nil || obj.DeletionTimestamp == nil {
		t.Fatalf("a task with running devices went at once: %v", obj)
	}
	as = hub.Assignments("a", have)
	if len(as) != 1 || !as[0].Canceled || as[0].Version <= have[as[0].UID] {
		t.Fatalf("the site was not told to cancel: %+v", as)
	}
	now := metav1.Now()
	if err := hub.Ingest(ctx, "a", []DeviceReport{{Task: "t", UID: as[0].UID, Attempt: 1, Node: "a-0",
		Status: ota.DeviceResultStatus{Phase: ota.DeviceCanceled, Attempt: 1, CompletionTime: &now}}}); err != nil {
		t.Fatal(err)
	}
	waitTally(t, hub, "t", 1)
	pass() // Canceled, in the write that removes the finalizer
	if obj, st := get(); obj != nil {
		t.Fatalf("the task was not deleted once its device stopped: phase %s, finalizers %v", st.Phase, obj.Finalizers)
	}
}

// TestAssignmentResolvesPolicyPercentages: a site is sent the failure
// policy's percentages as numbers of the task's devices (it knows only
// its own), and the task keeps them as written.
func TestAssignmentResolvesPolicyPercentages(t *testing.T) {
	t.Parallel()
	var inv fakeInventory
	for i := range 40 {
		inv = append(inv, Device{Name: fmt.Sprintf("n-%d", i), Site: []string{"a", "b"}[i%2]})
	}
	store := consensustest.NewStore(t, ota.Register)
	hub, err := NewHub(HubConfig{Store: store, Inventory: inv, IsLeader: func() bool { return true }})
	if err != nil {
		t.Fatal(err)
	}
	failures, unreachable := intstr.FromString("10%"), intstr.FromString("50%")
	spec := ota.TaskSpec{Targets: ota.Targets{Sites: []string{"a", "b"}}, Steps: []ota.Step{{Name: "r", Type: ota.StepRead, Path: "/etc/hostname"}},
		FailurePolicy: ota.FailurePolicy{MaxFailures: &failures, MaxUnreachable: &unreachable}}
	task := &consensus.Object{ObjectMeta: metav1.ObjectMeta{Name: "t"}}
	_ = task.SetSpec(spec)
	if _, err := store.Create(t.Context(), &ota.TaskKind, task); err != nil {
		t.Fatal(err)
	}
	if err := hub.reconcile(t.Context()); err != nil {
		t.Fatal(err)
	}
	as := hub.Assignments("a", SiteState{})
	if len(as) != 1 || as[0].Spec == nil {
		t.Fatalf("assignments %+v", as)
	}
	four, twenty := intstr.FromInt32(4), intstr.FromInt32(20)
	want := ota.FailurePolicy{MaxFailures: &four, MaxUnreachable: &twenty}
	if got := as[0].Spec.FailurePolicy; !reflect.DeepEqual(got, want) {
		t.Errorf("the site's policy %v / %v, want 4 / 20 (of 40 devices)", got.MaxFailures, got.MaxUnreachable)
	}
	obj, err := store.Get(t.Context(), &ota.TaskKind, "", "t", consensus.ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var kept ota.TaskSpec
	_ = obj.DecodeSpec(&kept)
	hub.mu.Lock()
	cached := hub.tasks[string(obj.UID)].spec.FailurePolicy.MaxFailures.StrVal
	hub.mu.Unlock()
	if kept.FailurePolicy.MaxFailures.StrVal != "10%" || cached != "10%" {
		t.Errorf("the task's own policy changed: %v", kept.FailurePolicy.MaxFailures)
	}
}
