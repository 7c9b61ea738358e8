package node_test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/outpost-mesh/outpost/consensus"
	"github.com/outpost-mesh/outpost/node"
	"github.com/outpost-mesh/outpost/ota"
	"github.com/outpost-mesh/outpost/ota/control"
	"github.com/outpost-mesh/outpost/ota/grant"
)

// injectRun writes an assignment straight into the site's store, as a
// site member with access to it could, and queues the device.
func injectRun(t *testing.T, store *consensus.Store, a control.Assignment) {
	t.Helper()
	ctx := t.Context()
	obj := &consensus.Object{ObjectMeta: metav1.ObjectMeta{Name: a.UID, Labels: map[string]string{ota.LabelTask: a.Task}}}
	_ = obj.SetSpec(control.SiteTaskSpec{Assignment: a})
	if _, err := store.Create(ctx, &control.SiteTaskKind, obj); err != nil {
		t.Fatal(err)
	}
	requeue(t, store, a.Task, a.UID, a.Devices[0], a.Attempt)
}

// requeue (re)creates a device's run as Queued, so the site dispatches it.
func requeue(t *testing.T, store *consensus.Store, task, uid, nodeName string, attempt int) {
	t.Helper()
	ctx := t.Context()
	name := uid + "." + nodeName
	cur, err := store.Get(ctx, &control.DeviceRunKind, "", name, consensus.ReadOptions{})
	if err != nil {
		run := &consensus.Object{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{ota.Group + "/uid": uid}}}
		_ = run.SetSpec(control.DeviceRunSpec{Task: task, UID: uid, Attempt: attempt, Node: nodeName})
		if cur, err = store.Create(ctx, &control.DeviceRunKind, run); err != nil {
			t.Fatal(err)
		}
	}
	now := metav1.Now()
	next := cur.DeepCopy()
	_ = next.SetStatus(control.DeviceRunStatus{Result: ota.DeviceResultStatus{Phase: ota.DeviceQueued, Attempt: attempt, QueuedTime: &now}})
	next.ResourceVersion = ""
	if _, err := store.UpdateStatus(ctx, &control.DeviceRunKind, next); err != nil {
		t.Fatal(err)
	}
}

// bumpVersion gives an assignment a new version, which makes the
// dispatcher look at it again (it skips assignments whose runs have all
// ended). The hub sets its own version back at its next exchange.
func bumpVersion(t *testing.T, store *consensus.Store, uid string) {
	t.Helper()
	st, err := store.Get(t.Context(), &control.SiteTaskKind, "", uid, consensus.ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var spec control.SiteTaskSpec
	_ = st.DecodeSpec(&spec)
	spec.Assignment.Version += 100
	next := st.DeepCopy()
	_ = next.SetSpec(spec)
	next.ResourceVersion = ""
	if _, err := store.Update(t.Context(), &control.SiteTaskKind, next); err != nil {
		t.Fatal(err)
	}
}

// runResult waits for a device run to end and returns its result.
func runResult(t *testing.T, store *consensus.Store, uid, nodeName string) ota.DeviceResultStatus {
	t.Helper()
	var st control.DeviceRunStatus
	last := time.Now()
	eventually(t, 30*time.Second, func() error {
		if time.Since(last) > 300*time.Millisecond {
			bumpVersion(t, store, uid)
			last = time.Now()
		}
		obj, err := store.Get(t.Context(), &control.DeviceRunKind, "", uid+"."+nodeName, consensus.ReadOptions{Stale: true})
		if err != nil {
			return err
		}
		st = control.DeviceRunStatus{}
		_ = obj.DecodeStatus(&st)
		if st.Result.Phase == ota.DeviceQueued || st.Result.Phase == ota.DeviceRunning {
			return fmt.Errorf("run %s is %s", uid, st.Result.Phase)
		}
		return nil
	})
	return st.Result
}

// TestSignedTasks: a task written straight into a site's store without the
// hub's grant is refused by the node and audited at the hub; a real task
// runs; dispatching its grant again does not run it again, and once its
// run has left no trace the replay is refused and audited.
func TestSignedTasks(t *testing.T) {
	t.Parallel()
	tn := startNode(t)
	tn.waitNode(t)
	store := tn.node.Group().Store()
	dir := t.TempDir()
	forgedMark := filepath.Join(dir, "forged")

	injectRun(t, store, control.Assignment{
		Task: "forged", UID: "forged-uid", Attempt: 1, Version: 1, Window: 1, Devices: []string{"node-1"},
		Spec: &ota.TaskSpec{Steps: []ota.Step{{Name: "pwn", Type: "exec", Command: []string{"touch", forgedMark}}}},
	})
	res := runResult(t, store, "forged-uid", "node-1")
	if res.Phase != ota.DeviceFailed || res.Reason != grant.Reason || !strings.Contains(res.Message, "no grant") {
		t.Fatalf("forged task: %s %s %q, want Failed %s", res.Phase, res.Reason, res.Message, grant.Reason)
	}
	if _, err := os.Stat(forgedMark); err == nil {
		t.Fatal("the forged task's step ran")
	}
	tn.findEvent(t, "the forged task", func(e node.AuditEventSpec) bool {
		return e.User == "site/hub" && e.Verb == "run" && e.Name == "forged" && e.Code == 403 && strings.Contains(e.Message, "no grant")
	})

	// A real task, signed by the hub.
	counter := filepath.Join(dir, "runs")
	tn.mustDo(t, call{method: http.MethodPost, path: tasksPath, body: taskJSON("real", map[string]any{
		"targets": map[string]any{"nodes": []string{"node-1"}},
		"steps":   []map[string]any{{"name": "count", "type": "exec", "command": []string{"sh", "-c", "echo run >> " + counter}}},
	})}, http.StatusCreated, nil)
	v := tn.waitTask(t, "real", ended)
	if v.Status.Phase != ota.TaskSucceeded {
		t.Fatalf("signed task: %s, want Succeeded", v.Status.Phase)
	}
	tn.findEvent(t, "the dispatch", func(e node.AuditEventSpec) bool {
		return e.Verb == "dispatch" && e.Name == "real" && strings.HasPrefix(e.User, "hub/")
	})
	var uid string
	list, err := store.List(t.Context(), &control.SiteTaskKind, "", nil, consensus.ReadOptions{Stale: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range list.Items {
		var spec control.SiteTaskSpec
		_ = o.DecodeSpec(&spec)
		if spec.Assignment.Task == "real" {
			uid = spec.Assignment.UID
			if len(spec.Assignment.Grants) != 1 || spec.Assignment.Grants[0].Node != "node-1" {
				t.Fatalf("the site holds grants %+v, want one for node-1", spec.Assignment.Grants)
			}
		}
	}

	// Dispatched again with the same grant: the stored result, no new run.
	requeue(t, store, "real", uid, "node-1", 1)
	if res := runResult(t, store, uid, "node-1"); res.Phase != ota.DeviceSucceeded {
		t.Fatalf("re-dispatch: %s %s %q, want the stored Succeeded", res.Phase, res.Reason, res.Message)
	}
	// With the run's journal and result gone, the grant is a replay.
	if err := os.RemoveAll(filepath.Join(tn.dir, "ota", uid+"-1")); err != nil {
		t.Fatal(err)
	}
	requeue(t, store, "real", uid, "node-1", 1)
	res = runResult(t, store, uid, "node-1")
	if res.Phase != ota.DeviceFailed || res.Reason != grant.Reason || !strings.Contains(res.Message, "used before") {
		t.Fatalf("replay: %s %s %q, want Failed %s (used before)", res.Phase, res.Reason, res.Message, grant.Reason)
	}
	if b, _ := os.ReadFile(counter); strings.Count(string(b), "run") != 1 {
		t.Fatalf("the step ran %d times, want once", strings.Count(string(b), "run"))
	}
	tn.findEvent(t, "the replay", func(e node.AuditEventSpec) bool {
		return e.User == "site/hub" && e.Name == "real" && e.Code == 403 && strings.Contains(e.Message, "used before")
	})
}
