package node_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-mesh/outpost/ota"
)

const (
	tasksPath   = "/apis/ota.outpost.dev/v1alpha1/tasks"
	resultsPath = "/apis/ota.outpost.dev/v1alpha1/deviceresults"
)

// taskJSON is a Task manifest with the given spec.
func taskJSON(name string, spec map[string]any) []byte {
	b, _ := json.Marshal(map[string]any{
		"apiVersion": "ota.outpost.dev/v1alpha1", "kind": "Task",
		"metadata": map[string]any{"name": name}, "spec": spec,
	})
	return b
}

type taskView struct {
	Spec   ota.TaskSpec   `json:"spec"`
	Status ota.TaskStatus `json:"status"`
}

// waitTask polls the task until done says so.
func (tn *testNode) waitTask(t *testing.T, name string, done func(*taskView) bool) *taskView {
	t.Helper()
	var v taskView
	eventually(t, 60*time.Second, func() error {
		code, b := tn.do(t, call{method: http.MethodGet, path: tasksPath + "/" + name})
		if code != http.StatusOK {
			return fmt.Errorf("%d %s", code, b)
		}
		v = taskView{}
		if err := json.Unmarshal(b, &v); err != nil {
			return err
		}
		if !done(&v) {
			return fmt.Errorf("task %s: phase %q, counts %+v", name, v.Status.Phase, v.Status.Counts)
		}
		return nil
	})
	return &v
}

func ended(v *taskView) bool {
	switch v.Status.Phase {
	case ota.TaskSucceeded, ota.TaskFailed, ota.TaskCanceled:
		return true
	}
	return false
}

// results lists a task's DeviceResults by node.
func (tn *testNode) results(t *testing.T, task string) map[string]ota.DeviceResultStatus {
	t.Helper()
	var list struct {
		Items []struct {
			Spec   ota.DeviceResultSpec   `json:"spec"`
			Status ota.DeviceResultStatus `json:"status"`
		} `json:"items"`
	}
	tn.mustDo(t, call{method: http.MethodGet, path: resultsPath + "?labelSelector=ota.outpost.dev/task%3D" + task}, http.StatusOK, &list)
	out := map[string]ota.DeviceResultStatus{}
	for _, it := range list.Items {
		out[it.Spec.Node] = it.Status
	}
	return out
}

// TestTaskRejectsBadInput checks that an invalid task is refused with 422
// and the field's path, and that nothing is created.
func TestTaskRejectsBadInput(t *testing.T) {
	t.Parallel()
	hub := startNode(t)
	exec := func(extra map[string]any) map[string]any {
		s := map[string]any{"name": "s", "type": "exec", "command": []string{"true"}}
		for k, v := range extra {
			s[k] = v
		}
		return s
	}
	spec := func(steps ...map[string]any) map[string]any {
		return map[string]any{"targets": map[string]any{"sites": []string{"hub"}}, "steps": steps}
	}
	withSpec := func(k string, v any) map[string]any { s := spec(exec(nil)); s[k] = v; return s }
	cases := []struct {
		name string
		spec map[string]any
		path string
	}{
		{"unknown step type", spec(map[string]any{"name": "s", "type": "reboot"}), "spec.steps[0].type"},
		{"empty command", spec(map[string]any{"name": "s", "type": "exec"}), "spec.steps[0].command"},
		{"relative path", spec(map[string]any{"name": "s", "type": "read", "path": "etc/passwd"}), "spec.steps[0].path"},
		{"escaping path", spec(map[string]any{"name": "s", "type": "write", "path": "/var/tmp/../../etc/x", "content": "x"}), "spec.steps[0].path"},
		{"oversized content", spec(map[string]any{"name": "s", "type": "write", "path": "/var/tmp/x", "content": strings.Repeat("x", 1<<20+1)}), "spec.steps[0].content"},
		{"bad concurrency", withSpec("concurrency", "150%"), "spec.concurrency"},
		{"zero concurrency", withSpec("concurrency", 0), "spec.concurrency"},
		{"bad selector", map[string]any{"targets": map[string]any{"selector": map[string]any{"matchExpressions": []map[string]any{{"key": "a", "operator": "Sometimes"}}}}, "steps": []map[string]any{exec(nil)}}, "spec.targets.selector"},
		{"no targets", map[string]any{"steps": []map[string]any{exec(nil)}}, "spec.targets"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			body := taskJSON("bad", tc.spec)
			code, b := hub.do(t, call{method: http.MethodPost, path: tasksPath, body: body})
			if tc.name == "oversized content" && code == http.StatusRequestEntityTooLarge {
				return // the body limit refuses it before validation does
			}
			if code != http.StatusUnprocessableEntity || !strings.Contains(string(b), tc.path) {
				t.Fatalf("POST: %d %s, want 422 naming %s", code, b, tc.path)
			}
		})
	}
	// A value its type's own decoder refuses is a malformed body (400, as
	// in Kubernetes), still named by its path.
	for _, tc := range []struct {
		spec map[string]any
		path string
	}{
		{spec(exec(map[string]any{"timeout": "5x"})), "spec.steps[0].timeout"},
		{withSpec("deliveryDeadline", "soon"), "spec.deliveryDeadline"},
	} {
		code, b := hub.do(t, call{method: http.MethodPost, path: tasksPath, body: taskJSON("bad", tc.spec)})
		if code != http.StatusBadRequest || !strings.Contains(string(b), "field "+tc.path+": time: ") {
			t.Errorf("POST: %d %s, want 400 naming %s", code, b, tc.path)
		}
	}
	code, b := hub.do(t, call{method: http.MethodGet, path: tasksPath + "/bad"})
	if code != http.StatusNotFound {
		t.Errorf("a refused task exists: %d %s", code, b)
	}
	code, _ = hub.do(t, call{method: http.MethodPost, path: resultsPath, body: []byte(`{}`)})
	if code != http.StatusMethodNotAllowed {
		t.Errorf("POST deviceresults: %d, want 405 (read-only)", code)
	}
}

// TestTaskAcrossSites runs a task of every step type on the hub and on a
// site of two, and checks phases, counters and results.
func TestTaskAcrossSites(t *testing.T) {
	t.Parallel()
	hub := startNode(t)
	addr := hub.hubQUIC(t)
	token := hub.createToken(t, "a", 0, time.Time{})
	for i := range 2 {
		startEdge(t, addr, token, fmt.Sprintf("ta-%d", i))
	}
	hub.waitNodes(t, 3)
	dir := t.TempDir()
	hub.mustDo(t, call{method: http.MethodPost, path: tasksPath, body: taskJSON("all", map[string]any{
		"targets":     map[string]any{"sites": []string{"a", "hub"}},
		"concurrency": 1,
		"steps": []map[string]any{
			{"name": "write", "type": "write", "path": dir + "/$node", "content": "hello\n", "mode": "0640"},
			{"name": "exec", "type": "exec", "script": "echo $OUTPOST_NODE >> " + dir + "/ran-$OUTPOST_NODE; echo done"},
			{"name": "read", "type": "read", "path": "/etc/hostname"},
		},
	})}, http.StatusCreated, nil)
	v := hub.waitTask(t, "all", ended)
	if v.Status.Phase != ota.TaskSucceeded || v.Status.Counts.Total != 3 || v.Status.Counts.Succeeded != 3 {
		t.Fatalf("task ended %s with %+v, want Succeeded 3/3", v.Status.Phase, v.Status.Counts)
	}
	if c := v.Status.Sites["a"]; c.Total != 2 || c.Succeeded != 2 {
		t.Errorf("site a counts %+v, want 2 of 2", c)
	}
	for node, st := range hub.results(t, "all") {
		if st.Phase != ota.DeviceSucceeded || len(st.Steps) != 3 {
			t.Errorf("%s: %s with %d steps", node, st.Phase, len(st.Steps))
			continue
		}
		if r := st.Steps[2].Read; r == nil || len(r.SHA256) != 64 {
			t.Errorf("%s: read step result %+v lacks a sha256", node, st.Steps[2].Read)
		}
		b, err := os.ReadFile(filepath.Join(dir, "ran-"+node))
		if err != nil || strings.Count(string(b), "\n") != 1 {
			t.Errorf("%s: the exec step ran %q, want exactly once", node, b)
		}
	}
}

// TestTaskRetryAndCancel checks retry of a failed device within the task,
// and that cancel kills running steps and cancels queued devices.
func TestTaskRetryAndCancel(t *testing.T) {
	t.Parallel()
	hub := startNode(t)
	hub.waitNode(t)
	flag := filepath.Join(t.TempDir(), "ok")
	hub.mustDo(t, call{method: http.MethodPost, path: tasksPath, body: taskJSON("flaky", map[string]any{
		"targets": map[string]any{"sites": []string{"hub"}},
		"steps":   []map[string]any{{"name": "check", "type": "exec", "script": "test -f " + flag}},
	})}, http.StatusCreated, nil)
	v := hub.waitTask(t, "flaky", ended)
	if v.Status.Phase != ota.TaskFailed || v.Status.Counts.Failed != 1 {
		t.Fatalf("flaky ended %s %+v, want Failed with 1 failed", v.Status.Phase, v.Status.Counts)
	}
	if err := os.WriteFile(flag, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	hub.mustDo(t, call{method: http.MethodPatch, path: tasksPath + "/flaky", contentType: "application/merge-patch+json", body: []byte(`{"spec":{"retry":1}}`)}, http.StatusOK, nil)
	v = hub.waitTask(t, "flaky", func(v *taskView) bool { return v.Status.Attempt == 2 && ended(v) })
	if v.Status.Phase != ota.TaskSucceeded {
		t.Fatalf("after retry: %s %+v, want Succeeded", v.Status.Phase, v.Status.Counts)
	}
	if st := hub.results(t, "flaky")[hub.name]; st.Attempt != 2 || st.Phase != ota.DeviceSucceeded {
		t.Errorf("device after retry: attempt %d %s", st.Attempt, st.Phase)
	}

	hub.mustDo(t, call{method: http.MethodPost, path: tasksPath, body: taskJSON("long", map[string]any{
		"targets": map[string]any{"sites": []string{"hub"}},
		"steps":   []map[string]any{{"name": "wait", "type": "exec", "command": []string{"sleep", "60"}}},
	})}, http.StatusCreated, nil)
	hub.waitTask(t, "long", func(v *taskView) bool { return v.Status.Counts.Running == 1 })
	hub.mustDo(t, call{method: http.MethodPatch, path: tasksPath + "/long", contentType: "application/merge-patch+json", body: []byte(`{"spec":{"canceled":true}}`)}, http.StatusOK, nil)
	v = hub.waitTask(t, "long", ended)
	if v.Status.Phase != ota.TaskCanceled || v.Status.Counts.Canceled != 1 {
		t.Fatalf("long ended %s %+v, want Canceled", v.Status.Phase, v.Status.Counts)
	}
	st := hub.results(t, "long")[hub.name]
	if st.Phase != ota.DeviceCanceled || st.CompletionTime == nil || st.StartTime == nil || st.CompletionTime.Sub(st.StartTime.Time) > 30*time.Second {
		t.Errorf("canceled device: %s, ran %v to %v; the kill should end it well before sleep 60", st.Phase, st.StartTime, st.CompletionTime)
	}
}

// TestTaskWithoutTargetsFails checks that a selector matching nothing
// fails the task with a reason instead of an empty success.
func TestTaskWithoutTargetsFails(t *testing.T) {
	t.Parallel()
	hub := startNode(t)
	hub.mustDo(t, call{method: http.MethodPost, path: tasksPath, body: taskJSON("none", map[string]any{
		"targets": map[string]any{"sites": []string{"nowhere"}},
		"steps":   []map[string]any{{"name": "x", "type": "exec", "command": []string{"true"}}},
	})}, http.StatusCreated, nil)
	v := hub.waitTask(t, "none", ended)
	if v.Status.Phase != ota.TaskFailed || len(v.Status.Conditions) == 0 || v.Status.Conditions[0].Reason != "NoTargets" {
		t.Fatalf("task ended %s with %+v, want Failed with reason NoTargets", v.Status.Phase, v.Status.Conditions)
	}
}

// TestTaskHaltAndResume checks that a halted task starts no device and
// that resume lets it finish.
func TestTaskHaltAndResume(t *testing.T) {
	t.Parallel()
	hub := startNode(t)
	hub.waitNode(t)
	hub.mustDo(t, call{method: http.MethodPost, path: tasksPath, body: taskJSON("paused", map[string]any{
		"targets": map[string]any{"sites": []string{"hub"}},
		"halted":  true,
		"steps":   []map[string]any{{"name": "x", "type": "exec", "command": []string{"true"}}},
	})}, http.StatusCreated, nil)
	v := hub.waitTask(t, "paused", func(v *taskView) bool { return v.Status.Phase == ota.TaskHalted })
	if v.Status.Counts.Queued != 1 || v.Status.Counts.Running+v.Status.Counts.Succeeded != 0 {
		t.Fatalf("halted task counts %+v: a device started", v.Status.Counts)
	}
	hub.mustDo(t, call{method: http.MethodPatch, path: tasksPath + "/paused", contentType: "application/merge-patch+json", body: []byte(`{"spec":{"halted":false}}`)}, http.StatusOK, nil)
	v = hub.waitTask(t, "paused", ended)
	if v.Status.Phase != ota.TaskSucceeded {
		t.Fatalf("after resume: %s %+v, want Succeeded", v.Status.Phase, v.Status.Counts)
	}
}

// TestTaskLogs reads a device's full output through the API: every step,
// one step, and a silent step, which keeps no log files on the node.
func TestTaskLogs(t *testing.T) {
	t.Parallel()
	tn := startNode(t)
	tn.waitNode(t)
	tn.mustDo(t, call{method: http.MethodPost, path: tasksPath, body: taskJSON("talk", map[string]any{
		"targets": map[string]any{"nodes": []string{"node-1"}},
		"steps": []map[string]any{
			{"name": "talk", "type": "exec", "script": "echo out-line; echo err-line >&2"},
			{"name": "quiet", "type": "exec", "command": []string{"true"}},
			{"name": "warn", "type": "exec", "script": "echo warn-line >&2"},
			{"name": "also", "type": "exec", "command": []string{"echo", "also-line"}},
		},
	})}, http.StatusCreated, nil)
	if v := tn.waitTask(t, "talk", ended); v.Status.Phase != ota.TaskSucceeded {
		t.Fatalf("task %s", v.Status.Phase)
	}
	logs := func(query string) (int, string) {
		code, b := tn.do(t, call{method: http.MethodGet, path: tasksPath + "/talk/logs?" + query, accept: "text/plain, application/json"})
		return code, string(b)
	}
	// Every step that printed, a step that printed only to stderr
	// included, in the order the steps ran (not by name).
	talk := "==> step talk (stdout) <==\nout-line\n==> step talk (stderr) <==\nerr-line\n"
	want := talk + "==> step warn (stderr) <==\nwarn-line\n==> step also (stdout) <==\nalso-line\n"
	if code, all := logs("node=node-1"); code != http.StatusOK || all != want {
		t.Fatalf("all steps: %d %q, want %q", code, all, want)
	}
	if code, one := logs("node=node-1&step=talk"); code != http.StatusOK || one != talk {
		t.Fatalf("step talk: %d %q, want %q", code, one, talk)
	}
	if code, b := logs("node=node-1&step=quiet"); code != http.StatusNotFound || !strings.Contains(b, "left no output") {
		t.Fatalf("step quiet: %d %s, want 404 saying it left no output", code, b)
	}
	if code, b := logs("node=node-1&step=nope"); code != http.StatusBadRequest || !strings.Contains(b, `task talk has no step \"nope\"; its steps: `) {
		t.Fatalf("unknown step: %d %s, want 400 naming the task's steps", code, b)
	}
	if code, b := logs("node=elsewhere"); code != http.StatusNotFound || !strings.Contains(b, "node elsewhere is not a device of task talk") {
		t.Fatalf("unknown node: %d %s, want 404 saying it is not a device of the task", code, b)
	}
	var task struct {
		Metadata struct {
			UID string `json:"uid"`
		} `json:"metadata"`
	}
	tn.mustDo(t, call{method: http.MethodGet, path: tasksPath + "/talk"}, http.StatusOK, &task)
	run := filepath.Join(tn.dir, "ota", task.Metadata.UID+"-1")
	if _, err := os.Stat(filepath.Join(run, "talk.stdout")); err != nil {
		t.Fatalf("the talking step's log: %v", err)
	}
	for _, f := range []string{"quiet.stdout", "quiet.stderr"} {
		if _, err := os.Stat(filepath.Join(run, f)); !os.IsNotExist(err) {
			t.Errorf("the silent step left %s (%v)", f, err)
		}
	}
}

// TestTaskLoudDeviceIsRecorded: a device whose steps print much more than
// a result can carry (24 steps keep 256 KiB of output each, 6 MiB, over
// the member's answer, the site's and the hub's Raft writes) succeeds with
// its outputs cut shorter; the full streams stay on the node.
func TestTaskLoudDeviceIsRecorded(t *testing.T) {
	t.Parallel()
	hub := startNode(t)
	token := hub.createToken(t, "a", 0, time.Time{})
	startEdge(t, hub.hubQUIC(t), token, "loud-1")
	hub.waitNodes(t, 2)
	const printed = 300_000
	var steps []map[string]any
	for i := range 24 {
		steps = append(steps, map[string]any{"name": fmt.Sprintf("loud-%d", i), "type": "exec",
			"script": fmt.Sprintf("head -c %d /dev/zero | tr '\\0' o; head -c %d /dev/zero | tr '\\0' e >&2", printed, printed)})
	}
	hub.mustDo(t, call{method: http.MethodPost, path: tasksPath, body: taskJSON("loud", map[string]any{
		"targets": map[string]any{"nodes": []string{"loud-1"}}, "deviceTimeout": "20s", "steps": steps,
	})}, http.StatusCreated, nil)
	if v := hub.waitTask(t, "loud", ended); v.Status.Phase != ota.TaskSucceeded {
		t.Fatalf("task ended %s with %+v, want Succeeded", v.Status.Phase, v.Status.Counts)
	}
	st := hub.results(t, "loud")["loud-1"]
	if len(st.Steps) != 24 {
		t.Fatalf("result has %d steps, want 24", len(st.Steps))
	}
	for _, r := range st.Steps {
		for _, o := range []ota.Output{r.Stdout, r.Stderr} {
			if !o.Truncated || o.TotalBytes != printed || len(o.Head) == 0 || len(o.Head) >= ota.OutputLimit || len(o.Tail) == 0 {
				t.Fatalf("step %s output: head %d, tail %d bytes, total %d, truncated %v; want a shorter head and tail of %d bytes", r.Name, len(o.Head), len(o.Tail), o.TotalBytes, o.Truncated, printed)
			}
		}
	}
}
