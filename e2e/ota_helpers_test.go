//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// Helpers of the OTA e2e tests (ota_test.go): manifests, reading tasks and
// results through the CLI, and the per-node step counters.

const (
	// otaWait bounds the wait for a task to end after the disruption.
	otaWait = 2 * time.Minute
	// otaCut is how long TestOTASiteCutOff keeps the site off the hub.
	otaCut = 60 * time.Second
	// otaWatchMax bounds one `task watch` process.
	otaWatchMax = 5 * time.Minute
)

// otaTask is a Task manifest.
type otaTask struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec otaSpec `json:"spec"`
}

type otaSpec struct {
	Targets struct {
		Sites []string `json:"sites"`
	} `json:"targets"`
	Steps            []otaStep `json:"steps"`
	Concurrency      int       `json:"concurrency,omitempty"`
	DeviceTimeout    string    `json:"deviceTimeout,omitempty"`
	DeliveryDeadline string    `json:"deliveryDeadline,omitempty"`
}

type otaStep struct {
	Name        string          `json:"name"`
	Type        string          `json:"type"`
	Script      string          `json:"script,omitempty"`
	Path        string          `json:"path,omitempty"`
	ContentFrom *otaContentFrom `json:"contentFrom,omitempty"`
}

// otaContentFrom is a write step's contentFrom.
type otaContentFrom struct {
	Blob string `json:"blob"`
	Size int64  `json:"size"`
}

// otaCounts are a task's counts, as `get tasks -o json` shows them.
type otaCounts struct {
	Total       int `json:"total"`
	Queued      int `json:"queued"`
	Running     int `json:"running"`
	Succeeded   int `json:"succeeded"`
	Failed      int `json:"failed"`
	Unreachable int `json:"unreachable"`
	Canceled    int `json:"canceled"`
}

// otaTaskView is what the tests read of a Task.
type otaTaskView struct {
	Status struct {
		Phase   string    `json:"phase"`
		Attempt int       `json:"attempt"`
		Counts  otaCounts `json:"counts"`
	} `json:"status"`
}

func (v *otaTaskView) ended() bool {
	switch v.Status.Phase {
	case "Succeeded", "Failed", "Canceled":
		return true
	}
	return false
}

// otaResult is what the tests read of a DeviceResult.
type otaResult struct {
	Metadata struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		Task string `json:"task"`
		Node string `json:"node"`
	} `json:"spec"`
	Status struct {
		Phase          string     `json:"phase"`
		Attempt        int        `json:"attempt"`
		Reason         string     `json:"reason"`
		Message        string     `json:"message"`
		CompletionTime *time.Time `json:"completionTime"`
		Steps          []struct {
			Name   string `json:"name"`
			Phase  string `json:"phase"`
			Reason string `json:"reason"`
		} `json:"steps"`
	} `json:"status"`
}

// String is a one-line summary for failure messages.
func (r otaResult) String() string {
	var steps []string
	for _, s := range r.Status.Steps {
		st := s.Name + ":" + s.Phase
		if s.Reason != "" {
			st += "(" + s.Reason + ")"
		}
		steps = append(steps, st)
	}
	return fmt.Sprintf("%s phase=%s attempt=%d reason=%q message=%q steps=[%s]", r.Spec.Node, r.Status.Phase,
		r.Status.Attempt, r.Status.Reason, r.Status.Message, strings.Join(steps, " "))
}

// otaCountDir is the test's directory of count files.
func (m *mesh) otaCountDir() string {
	m.t.Helper()
	dir := filepath.Join(m.dir, "ota-count")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		m.t.Fatal(err)
	}
	return dir
}

// otaMark is the script line that records that step started on this node.
func otaMark(dir, step string) string {
	return fmt.Sprintf("echo \"$OUTPOST_TASK %s\" >> %q/\"$OUTPOST_NODE\".count\n", step, dir)
}

// otaSleepSteps are exec steps named names that each record their start
// and then sleep for secs seconds.
func otaSleepSteps(dir string, secs int, names ...string) []otaStep {
	var steps []otaStep
	for _, name := range names {
		steps = append(steps, otaStep{Name: name, Type: "exec", Script: otaMark(dir, name) + fmt.Sprintf("sleep %d\n", secs)})
	}
	return steps
}

// newOTATask is a task named name on the nodes of site a.
func newOTATask(name string, spec otaSpec) otaTask {
	t := otaTask{APIVersion: "ota.outpost.dev/v1alpha1", Kind: "Task", Spec: spec}
	t.Metadata.Name = name
	t.Spec.Targets.Sites = []string{"a"}
	return t
}

// otaApply writes the task's manifest and applies it through via's API.
func (m *mesh) otaApply(via *meshNode, task otaTask) {
	m.t.Helper()
	b, err := yaml.Marshal(task)
	if err != nil {
		m.t.Fatal(err)
	}
	path := filepath.Join(m.dir, "task-"+task.Metadata.Name+".yaml")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		m.t.Fatal(err)
	}
	if _, err := m.adminCLI(via, "apply", "-f", path); err != nil {
		m.t.Fatal(err)
	}
	m.logf("applied task %s through %s", task.Metadata.Name, via.name)
}

// otaGetTask reads a task through via's API.
func (m *mesh) otaGetTask(via *meshNode, name string) (*otaTaskView, error) {
	out, err := m.adminCLI(via, "get", "tasks", name, "-o", "json")
	if err != nil {
		return nil, err
	}
	var v otaTaskView
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		return nil, fmt.Errorf("get tasks %s -o json: %w: %.300s", name, err, out)
	}
	return &v, nil
}

// otaResults lists a task's DeviceResults through via's API, by node; a
// node with two results is an error.
func (m *mesh) otaResults(via *meshNode, task string) (map[string]otaResult, error) {
	out, err := m.adminCLI(via, "get", "deviceresults", "-l", "ota.outpost.dev/task="+task, "-o", "json")
	if err != nil {
		return nil, err
	}
	var list struct {
		Items []otaResult `json:"items"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		return nil, fmt.Errorf("get deviceresults -o json: %w: %.300s", err, out)
	}
	byNode := map[string]otaResult{}
	for _, r := range list.Items {
		if r.Spec.Task != task {
			return nil, fmt.Errorf("result %s of task %q listed for task %s", r.Metadata.Name, r.Spec.Task, task)
		}
		if old, dup := byNode[r.Spec.Node]; dup {
			return nil, fmt.Errorf("node %s has two results of task %s: %s and %s", r.Spec.Node, task, old.Metadata.Name, r.Metadata.Name)
		}
		byNode[r.Spec.Node] = r
	}
	return byNode, nil
}

// otaResultsOf returns the task's results and fails the test unless there
// is exactly one for each of nodes and none for any other node.
func (m *mesh) otaResultsOf(via *meshNode, task string, nodes []string) map[string]otaResult {
	m.t.Helper()
	results, err := m.otaResults(via, task)
	if err != nil {
		m.t.Fatal(err)
	}
	if got := keys(results); !slices.Equal(got, nodes) {
		m.t.Fatalf("task %s has results for %v; want exactly one for each of %v", task, got, nodes)
	}
	for _, n := range keys(results) {
		m.logf("result: %s", results[n])
	}
	return results
}

// otaLines counts the lines of task in every node's count file: node →
// step → lines.
func (m *mesh) otaLines(task string) (map[string]map[string]int, error) {
	files, err := filepath.Glob(filepath.Join(m.otaCountDir(), "*.count"))
	if err != nil {
		return nil, err
	}
	lines := map[string]map[string]int{}
	for _, f := range files {
		node := strings.TrimSuffix(filepath.Base(f), ".count")
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			t, step, ok := strings.Cut(sc.Text(), " ")
			if !ok || t != task {
				continue
			}
			if lines[node] == nil {
				lines[node] = map[string]int{}
			}
			lines[node][step]++
		}
	}
	return lines, nil
}

// otaWaitStarted waits until step has started on every node of nodes.
func (m *mesh) otaWaitStarted(task, step string, nodes []string) {
	m.t.Helper()
	m.eventually(waitLong, fmt.Sprintf("step %s of task %s started on %v", step, task, nodes), func() error {
		lines, err := m.otaLines(task)
		if err != nil {
			return err
		}
		for _, n := range nodes {
			if lines[n][step] == 0 {
				return fmt.Errorf("not yet on %s (lines so far: %v)", n, lines)
			}
		}
		return nil
	})
}

// otaCheckLines fails the test unless node has want lines of each step.
func (m *mesh) otaCheckLines(task, node string, want map[string]int) {
	m.t.Helper()
	lines, err := m.otaLines(task)
	if err != nil {
		m.t.Fatal(err)
	}
	for step, n := range want {
		if got := lines[node][step]; got != n {
			m.t.Errorf("step %s of task %s started %d times on %s; want %d (all lines of the task: %v)", step, task, got, node, n, lines)
		}
	}
}

// otaOnce is want for otaCheckLines: every step exactly once.
func otaOnce(steps ...string) map[string]int {
	want := map[string]int{}
	for _, s := range steps {
		want[s] = 1
	}
	return want
}

// otaWaitPhase waits until via's API shows the task in phase.
func (m *mesh) otaWaitPhase(via *meshNode, task, phase string, timeout time.Duration) *otaTaskView {
	m.t.Helper()
	var v *otaTaskView
	m.eventually(timeout, fmt.Sprintf("task %s %s through %s", task, phase, via.name), func() error {
		var err error
		if v, err = m.otaGetTask(via, task); err != nil {
			return err
		}
		if v.Status.Phase != phase {
			return fmt.Errorf("phase %q, counts %+v", v.Status.Phase, v.Status.Counts)
		}
		return nil
	})
	return v
}

// otaWatch is `outpost task watch` running on ctl.
type otaWatch struct {
	task string
	via  string
	done chan struct{}
	// out is stdout and stderr; read it only after done.
	out bytes.Buffer
	err error
}

// otaStartWatch starts `task watch` through via's API; the test's cleanup
// ends it if it still runs.
func (m *mesh) otaStartWatch(via *meshNode, task string) *otaWatch {
	m.t.Helper()
	cfg, ok := m.admin[via.name]
	if !ok {
		m.t.Fatalf("no admin.yaml for %s", via.name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), otaWatchMax)
	w := &otaWatch{task: task, via: via.name, done: make(chan struct{})}
	cmd := m.ctl.Command(ctx, outpostBin, "--config", cfg, "task", "watch", task)
	cmd.Stdout, cmd.Stderr = &w.out, &w.out
	if err := cmd.Start(); err != nil {
		cancel()
		m.t.Fatalf("start task watch: %v", err)
	}
	go func() {
		w.err = cmd.Wait()
		cancel()
		close(w.done)
	}()
	m.t.Cleanup(func() {
		cancel()
		<-w.done
	})
	m.logf("watching task %s through %s", task, via.name)
	return w
}

func (w *otaWatch) exited() bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

// otaWaitWatch waits for the watch to exit and returns its exit code and
// output.
func (m *mesh) otaWaitWatch(w *otaWatch, timeout time.Duration) (int, string) {
	m.t.Helper()
	m.eventually(timeout, fmt.Sprintf("task watch %s (through %s) exits", w.task, w.via), func() error {
		if !w.exited() {
			return errors.New("still running")
		}
		return nil
	})
	code := 0
	if w.err != nil {
		var ee *exec.ExitError
		if !errors.As(w.err, &ee) {
			m.t.Fatalf("task watch %s: %v: %s", w.task, w.err, w.out.String())
		}
		code = ee.ExitCode()
	}
	out := w.out.String()
	m.logf("task watch %s exited %d; its last lines:\n%s", w.task, code, otaLastLines(out, 4))
	return code, out
}

func otaLastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// otaStop stops n with SIGTERM; it must exit cleanly.
func (m *mesh) otaStop(n *meshNode) {
	m.t.Helper()
	n.down = true
	if err := n.proc.Stop(); err != nil {
		m.t.Errorf("SIGTERM of %s: %v; want a clean exit", n.name, err)
	}
	m.logf("stopped %s (SIGTERM)", n.name)
}

// otaNewLeader waits until the running nodes of site agree on a leader
// other than old, and returns it.
func (m *mesh) otaNewLeader(site string, old *meshNode) *meshNode {
	m.t.Helper()
	var leader string
	m.eventually(waitLong, "a new leader of site "+site, func() error {
		var err error
		leader, err = m.agreedLeader(up(m.siteNodes(site)))
		if err == nil && leader == old.name {
			err = fmt.Errorf("the survivors still name %s", leader)
		}
		return err
	})
	m.logf("site %s elected %s", site, leader)
	return m.node(leader)
}

// otaFollower returns a running node of site that does not lead it.
func (m *mesh) otaFollower(site string, not ...*meshNode) *meshNode {
	m.t.Helper()
	leader := m.siteLeader(site)
	for _, n := range up(m.siteNodes(site)) {
		if n != leader && !slices.Contains(not, n) {
			return n
		}
	}
	m.t.Fatalf("site %s has no running follower", site)
	return nil
}

// otaWantTask waits until via's API shows the task in phase, and checks
// its counts.
func (m *mesh) otaWantTask(via *meshNode, task, phase string, want otaCounts) {
	m.t.Helper()
	if v := m.otaWaitPhase(via, task, phase, waitLong); v.Status.Counts != want {
		m.t.Errorf("task %s through %s: %s with counts %+v; want %+v", task, via.name, phase, v.Status.Counts, want)
	}
}

// otaWantSucceeded checks that the device of each of nodes succeeded at
// attempt 1 and started each of steps exactly once.
func (m *mesh) otaWantSucceeded(results map[string]otaResult, task string, nodes []string, steps ...string) {
	m.t.Helper()
	for _, n := range nodes {
		if r := results[n]; r.Status.Phase != "Succeeded" || r.Status.Attempt != 1 {
			m.t.Errorf("device %s: %s; want Succeeded at attempt 1", n, r)
		}
		m.otaCheckLines(task, n, otaOnce(steps...))
	}
}
