package control

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/outpost-mesh/outpost/consensus"
	"github.com/outpost-mesh/outpost/ota"
)

// TestViewOpenCounts drives a view through random puts (watched and own
// writes), starts, acknowledgements and deletes, and checks after each
// step that its open counts match a recount, and that unreported and
// running, which look only at tasks with open runs, give what a scan of
// every run gives.
func TestViewOpenCounts(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	v := newSiteView()
	v.reset(nil, nil)
	now := time.Now()
	phases := []ota.DevicePhase{ota.DeviceQueued, ota.DeviceRunning, ota.DeviceSucceeded, ota.DeviceFailed}
	uids := []string{"u1", "u2", "u3"}
	rev := uint64(0)
	run := func(uid string, node int) (*consensus.Object, DeviceRunStatus) {
		rev++
		start := metav1.NewTime(now.Add(-time.Duration(rng.IntN(60)) * time.Second))
		st := DeviceRunStatus{
			Result:   ota.DeviceResultStatus{Phase: phases[rng.IntN(len(phases))], StartTime: &start},
			Reported: phases[rng.IntN(len(phases))],
		}
		o := newRun(DeviceRunSpec{Task: "t-" + uid, UID: uid, Attempt: 1, Node: fmt.Sprintf("n%02d", node)}, st)
		o.ResourceVersion = strconv.FormatUint(rev, 10)
		return o, st
	}
	for step := range 3000 {
		uid, node := uids[rng.IntN(len(uids))], rng.IntN(20)
		switch op := rng.IntN(6); op {
		case 0, 1: // a watched version
			o, _ := run(uid, node)
			v.put(&DeviceRunKind, o)
		case 2: // the leader's own write
			o, st := run(uid, node)
			v.putRun(o, st)
		case 3: // an assignment with started devices
			var nodes []string
			for j := range rng.IntN(4) {
				nodes = append(nodes, fmt.Sprintf("n%02d", 20+j+rng.IntN(10)))
			}
			rev++
			spec := SiteTaskSpec{Assignment: Assignment{Task: "t-" + uid, UID: uid}, Started: &StartedRuns{Devices: nodes, Attempt: 1, Time: metav1.NewTime(now)}}
			o := &consensus.Object{ObjectMeta: metav1.ObjectMeta{Name: "st-" + uid, ResourceVersion: strconv.FormatUint(rev, 10)}}
			_ = o.SetSpec(spec)
			v.put(&SiteTaskKind, o)
		case 4: // the hub acknowledges what a report carried
			reports, err := v.unreported(5, now)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range reports {
				v.markReported(r, r.st.Result.Phase)
			}
		case 5: // a collect
			if r, ok, _ := v.run(uid, runName(uid, fmt.Sprintf("n%02d", node))); ok && r.obj != nil {
				v.remove(&DeviceRunKind, r.obj)
			}
		}
		checkOpen(t, v, now, step)
	}
}

// checkOpen compares the view's open counts, unreported and running with
// a scan of every run.
func checkOpen(t *testing.T, v *siteView, now time.Time, step int) {
	t.Helper()
	v.mu.Lock()
	want, wantRunning := map[string]int{}, map[string]int{}
	var wantNames []string
	for uid, runs := range v.runs {
		for _, r := range runs {
			if r.st.Result.Phase != "" && r.st.Result.Phase != r.st.Reported {
				want[uid]++
				if !r.young(now) {
					wantNames = append(wantNames, r.name)
				}
			}
			if r.young(now) && r.st.Reported != ota.DeviceRunning {
				wantRunning[uid]++
			}
		}
	}
	open := maps.Clone(v.open)
	maps.DeleteFunc(open, func(_ string, n int) bool { return n == 0 })
	if !maps.Equal(open, want) {
		v.mu.Unlock()
		t.Fatalf("step %d: open counts %v, a recount gives %v", step, open, want)
	}
	v.mu.Unlock()
	got, err := v.unreported(1<<20, now)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range got {
		names = append(names, r.name)
	}
	slices.Sort(wantNames)
	if !slices.Equal(names, wantNames) {
		t.Fatalf("step %d: unreported %v, a scan of every run gives %v", step, names, wantNames)
	}
	if running := v.running(now); !maps.Equal(running, wantRunning) {
		t.Fatalf("step %d: running %v, a scan of every run gives %v", step, running, wantRunning)
	}
}

// BenchmarkViewReport is what the hub link asks the view for each report
// (unreported and running) at a site of 100 nodes that keeps six ended
// tasks and runs a seventh, ten of whose devices have results to report.
func BenchmarkViewReport(b *testing.B) {
	v := newSiteView()
	v.reset(nil, nil)
	now := time.Now()
	start := metav1.NewTime(now.Add(-time.Second))
	rev := uint64(0)
	for task := range 7 {
		uid := fmt.Sprintf("u%d", task)
		for node := range 100 {
			st := DeviceRunStatus{Result: ota.DeviceResultStatus{Phase: ota.DeviceSucceeded, StartTime: &start}, Reported: ota.DeviceSucceeded}
			if task == 6 {
				st.Result.Phase, st.Reported = ota.DeviceRunning, ota.DeviceQueued
				if node < 10 {
					st.Result.Phase = ota.DeviceSucceeded
				}
			}
			rev++
			o := newRun(DeviceRunSpec{Task: "t" + uid, UID: uid, Attempt: 1, Node: fmt.Sprintf("n%02d", node)}, st)
			o.ResourceVersion = strconv.FormatUint(rev, 10)
			v.putRun(o, st)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		if got, err := v.unreported(512, now); err != nil || len(got) != 10 {
			b.Fatalf("unreported: %d runs, %v", len(got), err)
		}
		if n := v.running(now)["u6"]; n != 90 {
			b.Fatalf("running: %d", n)
		}
	}
}
