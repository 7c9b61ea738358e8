package control

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/outpost-mesh/outpost/consensus"
	"github.com/outpost-mesh/outpost/consensus/consensustest"
	"github.com/outpost-mesh/outpost/ota"
)

// countingRunner succeeds every run and counts the runs per node.
type countingRunner struct {
	mu   sync.Mutex
	runs map[string]int
}

func (c *countingRunner) Run(_ context.Context, node string, _ RunRequest) (ota.DeviceResultStatus, error) {
	c.mu.Lock()
	c.runs[node]++
	c.mu.Unlock()
	return ota.DeviceResultStatus{Phase: ota.DeviceSucceeded}, nil
}

func (c *countingRunner) Cancel(context.Context, string, string, int) error { return nil }

func (c *countingRunner) count(node string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.runs[node]
}

// runSite runs a leading site "a" on store until the test ends, its
// config changed by tweak; ctx ends with it.
func runSite(t *testing.T, store *consensus.Store, runner Runner, tweak ...func(*SiteConfig)) (*Site, context.Context) {
	t.Helper()
	cfg := SiteConfig{
		Site: "a", Store: store, Runner: runner, Interval: 20 * time.Millisecond,
		Alive: func(string) bool { return true }, IsLeader: func() bool { return true },
	}
	for _, f := range tweak {
		f(&cfg)
	}
	site, err := NewSite(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- site.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return site, ctx
}

// TestSiteDispatchesFromItsView runs an assignment through a site leader
// whose passes read its watched view of the store: every device runs once
// within the window, every result is reported until acknowledged, a
// change written to the store by someone else reaches the view, and a
// new version of the assignment is taken in without the spec again.
func TestSiteDispatchesFromItsView(t *testing.T) {
	t.Parallel()
	store := consensustest.NewStore(t, Register)
	runner := &countingRunner{runs: map[string]int{}}
	site, ctx := runSite(t, store, runner)

	var nodes []string
	for i := range 7 {
		nodes = append(nodes, fmt.Sprintf("a-%d", i))
	}
	window := intstr.FromInt32(2)
	a := Assignment{
		Task: "t", UID: "u1", Attempt: 1, Version: 1, Window: 2, Devices: nodes,
		Spec: &ota.TaskSpec{Steps: []ota.Step{{Name: "s", Type: ota.StepExec, Command: []string{"true"}}}, Concurrency: &window},
	}
	if err := site.Accept(ctx, []Assignment{a}); err != nil {
		t.Fatal(err)
	}
	have, err := site.Have(ctx)
	if err != nil || have["u1"] != 1 {
		t.Fatalf("Have = %v, %v; want u1 at version 1", have, err)
	}

	// Pending reports every phase the hub has not acknowledged; wait
	// until it reports each device's result.
	var reports []DeviceReport
	deadline := time.Now().Add(time.Minute)
	for succeeded(reports) < len(nodes) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		if reports, err = site.Pending(ctx, 100); err != nil {
			t.Fatal(err)
		}
	}
	if len(reports) != len(nodes) {
		t.Fatalf("%d results pending, want %d", len(reports), len(nodes))
	}
	for _, r := range reports {
		if r.Status.Phase != ota.DeviceSucceeded || r.UID != "u1" || r.Attempt != 1 {
			t.Fatalf("report %+v: want Succeeded of u1 attempt 1", r)
		}
	}
	for _, n := range nodes {
		if c := runner.count(n); c != 1 {
			t.Fatalf("node %s ran %d times, want once", n, c)
		}
	}
	if err := site.Acked(ctx, reports); err != nil {
		t.Fatal(err)
	}
	if left, err := site.Pending(ctx, 100); err != nil || len(left) != 0 {
		t.Fatalf("after the ack, Pending = %v, %v; want none", left, err)
	}

	// Someone else (a previous leader) writes a result: the watch brings it.
	obj, err := store.Get(ctx, &DeviceRunKind, "", runName("u1", "a-3"), consensus.ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	next := obj.DeepCopy()
	if err := next.SetStatus(DeviceRunStatus{Result: ota.DeviceResultStatus{Phase: ota.DeviceFailed, Attempt: 1, Reason: "Test"}, Reported: ota.DeviceSucceeded}); err != nil {
		t.Fatal(err)
	}
	if _, err := store.UpdateStatus(ctx, &DeviceRunKind, next); err != nil {
		t.Fatal(err)
	}
	for reports = nil; len(reports) == 0 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		if reports, err = site.Pending(ctx, 100); err != nil {
			t.Fatal(err)
		}
	}
	if len(reports) != 1 || reports[0].Node != "a-3" || reports[0].Status.Phase != ota.DeviceFailed {
		t.Fatalf("after a write by another, Pending = %+v; want a-3 Failed", reports)
	}

	// A new version (halted) comes without the spec and keeps the devices.
	if err := site.Accept(ctx, []Assignment{{Task: "t", UID: "u1", Attempt: 1, Version: 2, Window: 2, Halted: true}}); err != nil {
		t.Fatal(err)
	}
	if have, err = site.Have(ctx); err != nil || have["u1"] != 2 {
		t.Fatalf("Have = %v, %v; want u1 at version 2", have, err)
	}
}

// TestAcceptRecordsStartedRunsInTheSiteTask checks that a new
// assignment's runs within its window whose nodes are alive are recorded
// as started in the SiteTask, without a DeviceRun each, and the rest
// (past the window, node offline, or a halted task) created Queued; a
// view built from the store (a new leader's) holds the started ones
// Running since then.
func TestAcceptRecordsStartedRunsInTheSiteTask(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		halted bool
		want   map[string]ota.DevicePhase
	}{
		{"window of 2", false, map[string]ota.DevicePhase{"a-0": ota.DeviceRunning, "a-1": ota.DeviceQueued, "a-2": ota.DeviceRunning, "a-3": ota.DeviceQueued}},
		{"halted", true, map[string]ota.DevicePhase{"a-0": ota.DeviceQueued, "a-1": ota.DeviceQueued, "a-2": ota.DeviceQueued, "a-3": ota.DeviceQueued}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			store := consensustest.NewStore(t, Register)
			site, err := NewSite(SiteConfig{
				Site: "a", Store: store, Runner: &countingRunner{runs: map[string]int{}},
				Alive: func(node string) bool { return node != "a-1" }, IsLeader: func() bool { return true },
			})
			if err != nil {
				t.Fatal(err)
			}
			a := Assignment{
				Task: "t", UID: "u1", Attempt: 1, Version: 1, Window: 2, Halted: tc.halted,
				Devices: []string{"a-0", "a-1", "a-2", "a-3"},
				Spec:    &ota.TaskSpec{Steps: []ota.Step{{Name: "s", Type: ota.StepExec, Command: []string{"true"}}}},
			}
			if err := site.Accept(t.Context(), []Assignment{a}); err != nil {
				t.Fatal(err)
			}
			tasks, runs := siteObjects(t, store)
			stored := map[string]bool{}
			for _, o := range runs {
				stored[o.Name] = true
			}
			v := newSiteView()
			v.reset(tasks, runs)
			for node, want := range tc.want {
				name := runName("u1", node)
				if stored[name] != (want == ota.DeviceQueued) {
					t.Errorf("%s: stored %v; want a DeviceRun only for a queued device", node, stored[name])
				}
				r, ok, err := v.run("u1", name)
				if err != nil || !ok {
					t.Fatalf("%s: not in the view (%v)", node, err)
				}
				st := r.st
				if st.Result.Phase != want || (want == ota.DeviceRunning) != (st.Result.StartTime != nil) || st.Reported != ota.DeviceQueued || r.spec.Attempt != 1 {
					t.Errorf("%s: phase %s, start time %v, reported %s, attempt %d; want %s at attempt 1", node, st.Result.Phase, st.Result.StartTime, st.Reported, r.spec.Attempt, want)
				}
			}
		})
	}
}

// succeeded counts the Succeeded reports.
func succeeded(rs []DeviceReport) int {
	n := 0
	for _, r := range rs {
		if r.Status.Phase == ota.DeviceSucceeded {
			n++
		}
	}
	return n
}

// heldRunner holds every run until release is closed, then succeeds it.
type heldRunner struct{ release chan struct{} }

func (h *heldRunner) Run(ctx context.Context, _ string, _ RunRequest) (ota.DeviceResultStatus, error) {
	select {
	case <-h.release:
		return ota.DeviceResultStatus{Phase: ota.DeviceSucceeded}, nil
	case <-ctx.Done():
		return ota.DeviceResultStatus{}, ctx.Err()
	}
}

func (h *heldRunner) Cancel(context.Context, string, string, int) error { return nil }

// TestAcksAreNotWritten: the hub's acknowledgement of a Running report
// is kept in the leader's view, not written (the runs' versions do not
// move), and rides the result's write; a result's acknowledgement is not
// written either, and a new leader reports the results again.
func TestAcksAreNotWritten(t *testing.T) {
	t.Parallel()
	store := consensustest.NewStore(t, Register)
	runner := &heldRunner{release: make(chan struct{})}
	site, ctx := runSite(t, store, runner)
	nodes := []string{"a-0", "a-1", "a-2"}
	if err := site.Accept(ctx, []Assignment{{
		Task: "t", UID: "u1", Attempt: 1, Version: 1, Window: 3, Devices: nodes,
		Spec: &ota.TaskSpec{Steps: []ota.Step{{Name: "s", Type: ota.StepExec, Command: []string{"true"}}}},
	}}); err != nil {
		t.Fatal(err)
	}
	// stored returns each run's stored status and version ("" and none
	// for a device that started with its assignment and has no
	// DeviceRun).
	stored := func() (map[string]DeviceRunStatus, map[string]string) {
		sts, rvs := map[string]DeviceRunStatus{}, map[string]string{}
		for _, n := range nodes {
			obj, err := store.Get(ctx, &DeviceRunKind, "", runName("u1", n), consensus.ReadOptions{})
			if apierrors.IsNotFound(err) {
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			var st DeviceRunStatus
			_ = obj.DecodeStatus(&st)
			sts[n], rvs[n] = st, obj.ResourceVersion
		}
		return sts, rvs
	}
	pending := func(phase ota.DevicePhase) []DeviceReport {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for {
			reports, err := site.Pending(ctx, 100)
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for _, r := range reports {
				if r.Status.Phase == phase {
					n++
				}
			}
			if n == len(nodes) || time.Now().After(deadline) {
				return reports
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	running := pending(ota.DeviceRunning)
	_, before := stored()
	if err := site.Acked(ctx, running); err != nil {
		t.Fatal(err)
	}
	if left, err := site.Pending(ctx, 100); err != nil || len(left) != 0 {
		t.Fatalf("after the Running ack, Pending = %+v, %v; want none", left, err)
	}
	if sts, after := stored(); fmt.Sprint(after) != fmt.Sprint(before) || sts["a-0"].Reported == ota.DeviceRunning {
		t.Fatalf("the Running ack was written: versions %v → %v, a-0 reported %s", before, after, sts["a-0"].Reported)
	}

	close(runner.release)
	results := pending(ota.DeviceSucceeded)
	if len(results) != len(nodes) {
		t.Fatalf("Pending = %+v, want the %d results", results, len(nodes))
	}
	if sts, _ := stored(); sts["a-0"].Result.Phase != ota.DeviceSucceeded || sts["a-0"].Reported != ota.DeviceRunning {
		t.Fatalf("a-0 stored %s reported %s; want Succeeded, with the Running ack carried", sts["a-0"].Result.Phase, sts["a-0"].Reported)
	}
	if err := site.Acked(ctx, results); err != nil {
		t.Fatal(err)
	}
	_, acked := stored()
	if left, err := site.Pending(ctx, 100); err != nil || len(left) != 0 {
		t.Fatalf("after the results' ack, Pending = %+v, %v; want none at once", left, err)
	}
	time.Sleep(100 * time.Millisecond) // an acknowledgement written in the background would land
	if _, after := stored(); fmt.Sprint(after) != fmt.Sprint(acked) {
		t.Fatalf("the results' ack was written: versions %v → %v", acked, after)
	}

	// A new leader holds no acknowledgement: it reports the results again.
	next, _ := runSite(t, store, runner)
	var again []DeviceReport
	deadline := time.Now().Add(time.Minute)
	for len(again) < len(nodes) && time.Now().Before(deadline) {
		var err error
		if again, err = next.Pending(ctx, 100); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(again) != len(nodes) || again[0].Status.Phase != ota.DeviceSucceeded {
		t.Fatalf("a new leader reports %+v, want the %d results again", again, len(nodes))
	}
}

// TestRunningReportedAfterAMoment: a device's Running is reported once it
// has run for runningReportAge, so a fast run goes from Queued straight to
// its result; results are reported at once. Before that the device is
// counted (running), once: not when reported, acknowledged or finished.
func TestRunningReportedAfterAMoment(t *testing.T) {
	t.Parallel()
	now := time.Now()
	run := func(node string, phase ota.DevicePhase, started time.Time) *consensus.Object {
		o := &consensus.Object{ObjectMeta: metav1.ObjectMeta{Name: runName("u1", node), ResourceVersion: "1"}}
		_ = o.SetSpec(DeviceRunSpec{Task: "t", UID: "u1", Attempt: 1, Node: node})
		start := metav1.NewTime(started)
		_ = o.SetStatus(DeviceRunStatus{Result: ota.DeviceResultStatus{Phase: phase, Attempt: 1, StartTime: &start}, Reported: ota.DeviceQueued})
		return o
	}
	acked := run("acked", ota.DeviceRunning, now)
	_ = acked.SetStatus(DeviceRunStatus{Result: ota.DeviceResultStatus{Phase: ota.DeviceRunning, Attempt: 1, StartTime: &metav1.Time{Time: now}}, Reported: ota.DeviceRunning})
	v := newSiteView()
	if got := v.running(now); got != nil {
		t.Fatalf("a view not ready counted %v, want nothing", got)
	}
	v.reset(nil, []*consensus.Object{
		run("fresh", ota.DeviceRunning, now),
		run("fresh2", ota.DeviceRunning, now.Add(-runningReportAge+time.Second)),
		run("long", ota.DeviceRunning, now.Add(-runningReportAge-time.Second)),
		run("done", ota.DeviceSucceeded, now),
		acked,
	})
	if got := v.running(now); fmt.Sprint(got) != "map[u1:2]" {
		t.Fatalf("counted running %v, want map[u1:2] (fresh and fresh2)", got)
	}
	got, err := v.unreported(10, now)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range got {
		names = append(names, r.spec.Node)
	}
	if fmt.Sprint(names) != "[done long]" {
		t.Fatalf("unreported %v, want [done long]: a Running run is reported once it has run for %s", names, runningReportAge)
	}
}

// loudRunner succeeds every run with a step that printed size bytes.
type loudRunner struct{ size int }

func (l loudRunner) Run(context.Context, string, RunRequest) (ota.DeviceResultStatus, error) {
	out := ota.Output{Head: strings.Repeat("x", l.size), TotalBytes: int64(l.size)}
	return ota.DeviceResultStatus{Phase: ota.DeviceSucceeded, Steps: []ota.StepResult{{Name: "s", Type: ota.StepExec, Phase: ota.StepSucceeded, Stdout: out}}}, nil
}

func (loudRunner) Cancel(context.Context, string, string, int) error { return nil }

// TestPendingBoundsAReportsBytes: results that print much are reported a
// few at a time (a link report is one message of at most 4 MiB), and
// every one of them is, in the end.
func TestPendingBoundsAReportsBytes(t *testing.T) {
	t.Parallel()
	store := consensustest.NewStore(t, Register)
	site, ctx := runSite(t, store, loudRunner{size: 900 << 10})
	nodes := []string{"a-0", "a-1", "a-2", "a-3", "a-4", "a-5"}
	window := intstr.FromInt32(6)
	a := Assignment{
		Task: "t", UID: "u1", Attempt: 1, Version: 1, Window: 6, Devices: nodes,
		Spec: &ota.TaskSpec{Steps: []ota.Step{{Name: "s", Type: ota.StepExec, Command: []string{"true"}}}, Concurrency: &window},
	}
	if err := site.Accept(ctx, []Assignment{a}); err != nil {
		t.Fatal(err)
	}
	// Every device ends before the first report is made: one report of
	// all six would be 5.4 MB.
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		list, err := store.List(ctx, &DeviceRunKind, "", nil, consensus.ReadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ended := 0
		for _, o := range list.Items {
			var st DeviceRunStatus
			if o.DecodeStatus(&st) == nil && st.Result.Phase == ota.DeviceSucceeded {
				ended++
			}
		}
		if ended == len(nodes) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d devices ended", ended, len(nodes))
		}
	}
	acked := map[string]bool{}
	batches := 0
	for deadline := time.Now().Add(time.Minute); len(acked) < len(nodes) && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		reports, err := site.Pending(ctx, 100)
		if err != nil {
			t.Fatal(err)
		}
		var done []DeviceReport
		size := 0
		for _, r := range reports {
			size += r.Status.SizeBound()
			if r.Status.Phase == ota.DeviceSucceeded {
				done = append(done, r)
			}
		}
		if len(reports) > 1 && size > ReportBudget {
			t.Fatalf("a batch of %d reports holds %d bytes, over %d", len(reports), size, ReportBudget)
		}
		if len(done) == 0 {
			continue
		}
		batches++
		for _, r := range done {
			acked[r.Node] = true
		}
		if err := site.Acked(ctx, Acks(done)); err != nil { // as the hub acknowledges them
			t.Fatal(err)
		}
	}
	if len(acked) != len(nodes) || batches < 2 {
		t.Fatalf("%d of %d results reported in %d batches; want all, in 2 or more", len(acked), len(nodes), batches)
	}
}

// TestNewLeaderResumesStartedDevices: devices that started with their
// assignment have no DeviceRun until their result; a new leader holds
// them Running from the SiteTask, dispatches them again (the agent's
// journal makes that safe) and records their results at the attempt and
// start time the assignment gave them.
func TestNewLeaderResumesStartedDevices(t *testing.T) {
	t.Parallel()
	store := consensustest.NewStore(t, Register)
	runner := &heldRunner{release: make(chan struct{})}
	firstCtx, stopFirst := context.WithCancel(t.Context())
	first, err := NewSite(SiteConfig{Site: "a", Store: store, Runner: runner, Interval: 20 * time.Millisecond,
		Alive: func(string) bool { return true }, IsLeader: func() bool { return true }})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- first.Run(firstCtx) }()
	nodes := []string{"a-0", "a-1"}
	if err := first.Accept(t.Context(), []Assignment{{Task: "t", UID: "u1", Attempt: 1, Version: 1, Window: 2, Devices: nodes,
		Spec: &ota.TaskSpec{Steps: []ota.Step{{Name: "s", Type: ota.StepExec, Command: []string{"true"}}}}}}); err != nil {
		t.Fatal(err)
	}
	task, err := store.Get(t.Context(), &SiteTaskKind, "", "u1", consensus.ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var spec SiteTaskSpec
	if err := task.DecodeSpec(&spec); err != nil || spec.Started == nil || fmt.Sprint(spec.Started.Devices) != fmt.Sprint(nodes) {
		t.Fatalf("SiteTask started %+v (%v); want both devices", spec.Started, err)
	}
	stopFirst() // the leader goes, its runs in flight
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	next, ctx := runSite(t, store, runner)
	close(runner.release)
	var reports []DeviceReport
	waitUntil(t, "both results", func() bool {
		if reports, err = next.Pending(ctx, 100); err != nil {
			t.Fatal(err)
		}
		return succeeded(reports) == len(nodes)
	})
	for _, r := range reports {
		st := r.Status
		if r.Attempt != 1 || st.Attempt != 1 || st.StartTime == nil || !st.StartTime.Equal(&spec.Started.Time) {
			t.Errorf("%s: attempt %d/%d, started %v; want attempt 1 started %v", r.Node, r.Attempt, st.Attempt, st.StartTime, spec.Started.Time)
		}
	}
}

// failingRunner fails the runs of the nodes in fail, succeeds the rest,
// and counts the runs per node.
type failingRunner struct {
	countingRunner
	fail map[string]bool
}

func (f *failingRunner) Run(ctx context.Context, node string, req RunRequest) (ota.DeviceResultStatus, error) {
	st, err := f.countingRunner.Run(ctx, node, req)
	if f.fail[node] {
		st.Phase, st.Reason = ota.DeviceFailed, ota.ReasonStepFailed
	}
	return st, err
}

// TestSiteHoldsPastTheFailurePolicy: with maxFailures 0, a site whose
// device failed starts no other, before the hub has halted the task and
// with room in its window; with maxFailures 1 the rest run.
func TestSiteHoldsPastTheFailurePolicy(t *testing.T) {
	t.Parallel()
	store := consensustest.NewStore(t, Register)
	runner := &failingRunner{countingRunner: countingRunner{runs: map[string]int{}}, fail: map[string]bool{"a-0": true}}
	site, ctx := runSite(t, store, runner)
	nodes := []string{"a-0", "a-1", "a-2"}
	assign := func(uid string, version, window, maxFailures int) {
		t.Helper()
		limit := intstr.FromInt32(int32(maxFailures))
		spec := &ota.TaskSpec{Steps: []ota.Step{{Name: "s", Type: ota.StepExec, Command: []string{"true"}}},
			FailurePolicy: ota.FailurePolicy{MaxFailures: &limit}}
		a := Assignment{Task: uid, UID: uid, Attempt: 1, Version: version, Window: window, Devices: nodes, Spec: spec}
		if err := site.Accept(ctx, []Assignment{a}); err != nil {
			t.Fatal(err)
		}
	}
	phases := func(uid string) map[string]ota.DevicePhase {
		out := map[string]ota.DevicePhase{}
		for _, n := range nodes {
			obj, err := store.Get(ctx, &DeviceRunKind, "", runName(uid, n), consensus.ReadOptions{})
			if err != nil {
				continue // started with the assignment: no run written yet
			}
			var st DeviceRunStatus
			_ = obj.DecodeStatus(&st)
			out[n] = st.Result.Phase
		}
		return out
	}
	waitPhase := func(uid, node string, want ota.DevicePhase) {
		t.Helper()
		for range 500 {
			if phases(uid)[node] == want {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatalf("%s of %s never became %s: %v", node, uid, want, phases(uid))
	}

	assign("u1", 1, 1, 0)
	waitPhase("u1", "a-0", ota.DeviceFailed)
	// More room, still not halted by the hub: the site holds on its own.
	assign("u1", 2, 3, 0)
	time.Sleep(400 * time.Millisecond) // a score of dispatch passes (20 ms each)
	if got := phases("u1"); got["a-1"] != ota.DeviceQueued || got["a-2"] != ota.DeviceQueued || runner.count("a-1")+runner.count("a-2") != 0 {
		t.Fatalf("after a-0 failed with maxFailures 0: %v, runs a-1 %d a-2 %d; want both queued, not run", got, runner.count("a-1"), runner.count("a-2"))
	}

	assign("u2", 1, 1, 1)
	waitPhase("u2", "a-2", ota.DeviceSucceeded)
	if got := phases("u2"); got["a-0"] != ota.DeviceFailed || got["a-1"] != ota.DeviceSucceeded {
		t.Fatalf("with maxFailures 1: %v; want a-0 failed, the rest succeeded", got)
	}
}
