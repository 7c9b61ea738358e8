package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/outpost-mesh/outpost/ota"
)

// appendStep is an exec step that appends a line to file, so that a test
// can count how often it ran.
func appendStep(name, file string) ota.Step {
	return ota.Step{Name: name, Type: ota.StepExec, Script: "echo " + name + " >> " + file}
}

func device(steps ...ota.Step) Device {
	return Device{Env: testEnv, Attempt: 1, Steps: steps, Policy: DefaultPolicy(), Journal: NewMemJournal()}
}

func phases(st ota.DeviceResultStatus) string {
	var s []string
	for _, r := range st.Steps {
		s = append(s, string(r.Phase))
	}
	return strings.Join(s, ",")
}

func TestRunDeviceIdempotent(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "ran")
	d := device(appendStep("one", file), appendStep("two", file))
	first := RunDevice(t.Context(), d)
	if first.Phase != ota.DeviceSucceeded || phases(first) != "Succeeded,Succeeded" || first.Attempt != 1 {
		t.Fatalf("first run %s %s: %s", first.Phase, phases(first), first.Message)
	}
	// A re-dispatch of the same attempt returns the recorded results.
	again := RunDevice(t.Context(), d)
	if n := lines(t, file); n != 2 {
		t.Fatalf("steps ran %d times in all, want 2", n)
	}
	if again.Phase != ota.DeviceSucceeded || !again.Steps[1].StartTime.Equal(first.Steps[1].StartTime) {
		t.Errorf("re-dispatch did not return the recorded results: %+v", again.Steps)
	}
	// A new attempt (a retry) has a new journal and runs again.
	d.Journal, d.Attempt = NewMemJournal(), 2
	if st := RunDevice(t.Context(), d); st.Phase != ota.DeviceSucceeded || st.Attempt != 2 || lines(t, file) != 4 {
		t.Errorf("retry: %s, %d lines", st.Phase, lines(t, file))
	}
}

func TestRunDeviceResumes(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "ran")
	d := device(appendStep("one", file), appendStep("two", file), appendStep("three", file))
	// Step one was recorded before a failover; step two had started when
	// the agent died.
	j := d.Journal.(*MemJournal)
	code := 0
	_ = j.Record(0, ota.StepResult{Name: "one", Type: ota.StepExec, Phase: ota.StepSucceeded, ExitCode: &code, Stdout: ota.Output{Head: "recorded"}})
	_ = j.Record(1, ota.StepResult{Name: "two", Type: ota.StepExec, Phase: ota.StepRunning})
	st := RunDevice(t.Context(), d)
	if n := lines(t, file); n != 0 {
		t.Fatalf("a recorded or interrupted step ran again (%d lines)", n)
	}
	if st.Steps[0].Stdout.Head != "recorded" {
		t.Errorf("step one not from the journal: %+v", st.Steps[0])
	}
	if st.Phase != ota.DeviceFailed || st.Steps[1].Reason != ota.ReasonInterrupted || phases(st) != "Succeeded,Failed,Skipped" {
		t.Fatalf("got %s %s: %s", st.Phase, phases(st), st.Message)
	}
	if r, _, _ := j.Lookup(1); r.Reason != ota.ReasonInterrupted {
		t.Errorf("interruption not recorded: %+v", r)
	}
	if _, ok, _ := j.Lookup(2); ok {
		t.Error("a skipped step was recorded")
	}
}

func TestRunDeviceContinueOnError(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "ran")
	bad := ota.Step{Name: "bad", Type: ota.StepExec, Command: []string{"false"}}

	tolerant := bad
	tolerant.ContinueOnError = true
	st := RunDevice(t.Context(), device(tolerant, appendStep("after", file)))
	if st.Phase != ota.DeviceSucceeded || phases(st) != "Failed,Succeeded" || lines(t, file) != 1 {
		t.Fatalf("continueOnError: %s %s", st.Phase, phases(st))
	}
	if !strings.Contains(st.Message, "continueOnError") {
		t.Errorf("message %q", st.Message)
	}

	st = RunDevice(t.Context(), device(bad, appendStep("after", file)))
	if st.Phase != ota.DeviceFailed || st.Reason != ota.ReasonStepFailed || phases(st) != "Failed,Skipped" || lines(t, file) != 1 {
		t.Fatalf("stop on error: %s %s %s", st.Phase, st.Reason, phases(st))
	}
	if st.Steps[1].Reason != ota.ReasonPreviousStepFailed || !strings.Contains(st.Message, `step "bad" failed: ExitCode`) {
		t.Errorf("skipped %+v, message %q", st.Steps[1], st.Message)
	}
}

func TestRunDeviceTimeout(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "ran")
	d := device(ota.Step{Name: "slow", Type: ota.StepExec, Command: []string{"sleep", "60"}}, appendStep("after", file))
	d.Timeout = 300 * time.Millisecond
	start := time.Now()
	st := RunDevice(t.Context(), d)
	if time.Since(start) > 10*time.Second {
		t.Errorf("took %v", time.Since(start))
	}
	if st.Phase != ota.DeviceTimedOut || st.Reason != ota.ReasonDeviceTimeout || phases(st) != "Failed,Skipped" {
		t.Fatalf("got %s %s %s: %s", st.Phase, st.Reason, phases(st), st.Message)
	}
	if st.Steps[0].Reason != ota.ReasonDeviceTimeout || st.Steps[1].Reason != ota.ReasonDeviceTimeout || lines(t, file) != 0 {
		t.Errorf("steps %+v", st.Steps)
	}
}

func TestRunDeviceCanceled(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(200*time.Millisecond, cancel)
	d := device(ota.Step{Name: "slow", Type: ota.StepExec, Command: []string{"sleep", "60"}}, ota.Step{Name: "next", Type: ota.StepExec, Command: []string{"true"}})
	st := RunDevice(ctx, d)
	if st.Phase != ota.DeviceCanceled || st.Reason != ota.ReasonCanceled || phases(st) != "Failed,Skipped" {
		t.Fatalf("got %s %s %s", st.Phase, st.Reason, phases(st))
	}
	// Not started: a canceled device runs nothing and records nothing, so
	// a later dispatch runs the step; a recorded step is still returned.
	j := NewMemJournal()
	_ = j.Record(0, ota.StepResult{Name: "done", Type: ota.StepExec, Phase: ota.StepSucceeded})
	d = device(ota.Step{Name: "done", Type: ota.StepExec, Command: []string{"true"}}, ota.Step{Name: "next", Type: ota.StepExec, Command: []string{"true"}})
	d.Journal = j
	st = RunDevice(ctx, d)
	if _, ok, _ := j.Lookup(1); st.Phase != ota.DeviceCanceled || ok || phases(st) != "Succeeded,Skipped" {
		t.Errorf("canceled before the start: %s %s, recorded %v", st.Phase, phases(st), ok)
	}
}

// brokenJournal fails Record from the given call on.
type brokenJournal struct {
	*MemJournal
	calls, failFrom int
}

func (j *brokenJournal) Record(i int, r ota.StepResult) error {
	j.calls++
	if j.calls >= j.failFrom {
		return errors.New("disk full")
	}
	return j.MemJournal.Record(i, r)
}

func TestRunDeviceJournalErrors(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "ran")
	d := device(appendStep("one", file), appendStep("two", file))
	d.Journal = &brokenJournal{MemJournal: NewMemJournal(), failFrom: 1}
	st := RunDevice(t.Context(), d)
	if st.Phase != ota.DeviceFailed || st.Reason != ota.ReasonJournal || lines(t, file) != 0 {
		t.Fatalf("unrecordable start: %s %s, %d lines", st.Phase, st.Reason, lines(t, file))
	}

	// The journal holds another step under this index: the task changed.
	d = device(appendStep("one", file))
	_ = d.Journal.Record(0, ota.StepResult{Name: "other", Type: ota.StepExec, Phase: ota.StepSucceeded})
	st = RunDevice(t.Context(), d)
	if st.Phase != ota.DeviceFailed || st.Reason != ota.ReasonJournal || lines(t, file) != 0 {
		t.Fatalf("mismatch: %s %s", st.Phase, st.Reason)
	}
}

func TestRunDevicePolicy(t *testing.T) {
	t.Parallel()
	d := device(ota.Step{Name: "x", Type: ota.StepExec, Command: []string{"true"}})
	d.Policy = Policy{Allow: []string{"read"}}
	st := RunDevice(t.Context(), d)
	if st.Phase != ota.DeviceFailed || st.Steps[0].Reason != ota.ReasonPolicyDenied || !strings.Contains(st.Message, "--ota-allow") {
		t.Fatalf("got %s %+v", st.Phase, st.Steps[0])
	}
}

// TestOnboardExample runs ota/testdata/onboard.yaml's steps, their paths
// moved into a temporary directory.
func TestOnboardExample(t *testing.T) {
	t.Parallel()
	manifest, err := os.ReadFile("../testdata/onboard.yaml")
	if err != nil {
		t.Fatal(err)
	}
	demo := filepath.Join(t.TempDir(), "outpost-demo")
	manifest = []byte(strings.ReplaceAll(string(manifest), "/var/tmp/outpost-demo", demo))
	var task struct {
		Spec ota.TaskSpec `json:"spec"`
	}
	if err := yaml.Unmarshal(manifest, &task); err != nil {
		t.Fatal(err)
	}
	d := device(task.Spec.Steps...)
	d.Timeout = task.Spec.DeviceTimeoutOrDefault()
	d.LogDir = filepath.Join(t.TempDir(), "logs")
	st := RunDevice(t.Context(), d)

	if got := phases(st); got != "Succeeded,Succeeded,Succeeded,Succeeded,Succeeded,Succeeded" {
		if _, err := os.Stat("/usr/bin/ansible-playbook"); err == nil || st.Steps[5].Reason != ota.ReasonAnsibleMissing {
			t.Fatalf("phases %s: %s", got, st.Message)
		}
	}
	if q := st.Steps[3].Read; q == nil || !strings.HasPrefix(q.Content, "node=edge-1\narch=") {
		t.Errorf("device query %+v", q)
	}
	if got := readFile(t, filepath.Join(demo, "registrations.log")); got != "edge-1 store-7 onboard\n" {
		t.Errorf("registration %q", got)
	}
	if st.Steps[1].Stdout.Head != "installing\n" {
		t.Errorf("install stdout %q", st.Steps[1].Stdout.Head)
	}
}

// recordingJournal notes the phase of every Record.
type recordingJournal struct {
	*MemJournal
	records []string
}

func (r *recordingJournal) Record(i int, res ota.StepResult) error {
	r.records = append(r.records, res.Name+":"+string(res.Phase))
	return r.MemJournal.Record(i, res)
}

// TestReadIsNotMarkedBeforeItRuns: a step that changes the node is
// journaled as started before it runs, so that it never runs twice; a
// read, which changes nothing, is journaled once, with its result.
func TestReadIsNotMarkedBeforeItRuns(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "ran")
	if err := os.WriteFile(file, []byte("x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	j := &recordingJournal{MemJournal: NewMemJournal()}
	d := device(ota.Step{Name: "read", Type: ota.StepRead, Path: file}, appendStep("exec", file))
	d.Journal = j
	if st := RunDevice(t.Context(), d); st.Phase != ota.DeviceSucceeded {
		t.Fatalf("run: %s %s", st.Phase, st.Message)
	}
	if got := strings.Join(j.records, " "); got != "read:Succeeded exec:Running exec:Succeeded" {
		t.Fatalf("journal writes %q; want the read's result alone, the exec's start and result", got)
	}
}
