package control

import (
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/outpost-mesh/outpost/consensus"
	"github.com/outpost-mesh/outpost/consensus/consensustest"
	"github.com/outpost-mesh/outpost/ota"
)

// TestTallyFollowsTheStore: the tally's counts are those of the store
// through creations, phase changes and deletions made before and after the
// task is first counted; results of an earlier task of the same name are
// not counted; a tally whose watch stopped reports so and starts again.
func TestTallyFollowsTheStore(t *testing.T) {
	t.Parallel()
	store := consensustest.NewStore(t, ota.Register)
	ctx := t.Context()
	task := &consensus.Object{ObjectMeta: metav1.ObjectMeta{Name: "t"}}
	_ = task.SetSpec(ota.TaskSpec{Targets: ota.Targets{Sites: []string{"a"}}, Steps: []ota.Step{{Name: "r", Type: ota.StepRead, Path: "/etc/hostname"}}})
	task, err := store.Create(ctx, &ota.TaskKind, task)
	if err != nil {
		t.Fatal(err)
	}
	put := func(node, site string, phase ota.DevicePhase, owner types.UID) {
		t.Helper()
		name := ota.ResultName("t", node)
		obj, err := store.Get(ctx, &ota.DeviceResultKind, "", name, consensus.ReadOptions{})
		if err != nil {
			obj = &consensus.Object{ObjectMeta: metav1.ObjectMeta{Name: name,
				Labels:          map[string]string{ota.LabelTask: "t", ota.LabelSite: site, ota.LabelNode: node},
				OwnerReferences: []metav1.OwnerReference{{APIVersion: ota.TaskKind.APIVersion(), Kind: "Task", Name: "t", UID: owner}}}}
			_ = obj.SetSpec(ota.DeviceResultSpec{Task: "t", Node: node, Site: site})
		}
		obj.Labels[ota.LabelPhase] = string(phase)
		_ = obj.SetStatus(ota.DeviceResultStatus{Phase: phase, Attempt: 1})
		if obj.ResourceVersion == "" {
			_, err = store.CreateWithStatus(ctx, &ota.DeviceResultKind, obj)
		} else {
			_, err = store.UpdateWithStatus(ctx, &ota.DeviceResultKind, obj)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	var tl tally
	ended := make(chan error, 1)
	tl.start(ctx, store, 0, func(err error) { ended <- err })
	put("n0", "a", ota.DeviceQueued, task.UID) // before the task is counted
	put("n1", "a", ota.DeviceSucceeded, task.UID)
	put("x", "a", ota.DeviceSucceeded, "an-earlier-task")
	want := func(what string, queued, succeeded, failed int, siteB bool) {
		t.Helper()
		var c ota.Counts
		var sites map[string]ota.Counts
		for range 500 {
			if c, sites, err = tl.counts(ctx, store, "t", task.UID); err != nil {
				t.Fatal(err)
			}
			if c.Queued == queued && c.Succeeded == succeeded && c.Failed == failed && c.Total == queued+succeeded+failed && (sites["b"] != ota.Counts{}) == siteB {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatalf("%s: counts %+v, sites %+v; want %d queued, %d succeeded, %d failed", what, c, sites, queued, succeeded, failed)
	}
	want("listed", 1, 1, 0, false)
	put("n0", "a", ota.DeviceFailed, task.UID)
	for i := range 5 {
		put(fmt.Sprintf("m%d", i), "b", ota.DeviceQueued, task.UID)
	}
	want("followed", 5, 1, 1, true)
	for i := range 5 {
		if _, err := store.Delete(ctx, &ota.DeviceResultKind, "", ota.ResultName("t", fmt.Sprintf("m%d", i)), 0, ""); err != nil {
			t.Fatal(err)
		}
	}
	want("deleted", 0, 1, 1, false)

	tl.reset()
	if _, _, err := tl.counts(ctx, store, "t", task.UID); err != errTallyStopped {
		t.Fatalf("counts of a stopped tally: %v, want errTallyStopped", err)
	}
	tl.start(ctx, store, 0, func(err error) { ended <- err })
	want("started again", 0, 1, 1, false)
	select {
	case err := <-ended:
		t.Fatalf("a reset reported the watch's end: %v", err)
	default:
	}
}

// TestTaskResults: a task's results are listed by their names' prefix,
// without those of a task whose name extends the task's or only starts
// like it.
func TestTaskResults(t *testing.T) {
	t.Parallel()
	store := consensustest.NewStore(t, ota.Register)
	for _, r := range []struct{ task, node string }{{"t", "n1"}, {"t", "n2"}, {"t.b", "n3"}, {"tb", "n4"}, {"u", "n5"}} {
		obj := &consensus.Object{ObjectMeta: metav1.ObjectMeta{Name: ota.ResultName(r.task, r.node), Labels: map[string]string{ota.LabelTask: r.task}}}
		_ = obj.SetSpec(ota.DeviceResultSpec{Task: r.task, Node: r.node, Site: "a"})
		if _, err := store.Create(t.Context(), &ota.DeviceResultKind, obj); err != nil {
			t.Fatal(err)
		}
	}
	list, err := taskResults(t.Context(), store, "t")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, o := range list.Items {
		got = append(got, o.Name)
	}
	if fmt.Sprint(got) != "[t.n1 t.n2]" {
		t.Errorf("results of task t: %v, want [t.n1 t.n2]", got)
	}
}
