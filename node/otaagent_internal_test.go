package node

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-mesh/outpost/ota"
	"github.com/outpost-mesh/outpost/ota/agent"
)

// TestLostResultIsAnsweredFromTheJournal: a run's final result is kept
// without fsync, so a crash of the machine can leave it empty or missing.
// The run is then answered from its journal: the same phase and step
// results, and no step run again.
func TestLostResultIsAnsweredFromTheJournal(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	count := filepath.Join(dir, "count")
	store := fileRunStore{dir: filepath.Join(dir, "ota")}
	const run = "uid-1"
	device := func() agent.Device {
		return agent.Device{
			Env: agent.Env{Node: "n1", Site: "s1", Task: "t"}, Attempt: 1, Policy: agent.DefaultPolicy(),
			Steps: []ota.Step{
				{Name: "count", Type: ota.StepExec, Script: "echo ran >> " + count + "; echo done"},
				{Name: "again", Type: ota.StepExec, Script: "echo ran >> " + count},
			},
			Journal: store.Journal(run),
		}
	}
	first := agent.RunDevice(context.Background(), device())
	if first.Phase != ota.DeviceSucceeded {
		t.Fatalf("first run %s: %s", first.Phase, first.Message)
	}
	if err := store.SaveResult(run, first); err != nil {
		t.Fatal(err)
	}
	if st, ok, err := store.Result(run); err != nil || !ok || st.Phase != ota.DeviceSucceeded {
		t.Fatalf("saved result: %v %v %v", st.Phase, ok, err)
	}

	for name, lose := range map[string]func(string) error{
		"empty":   func(p string) error { return os.WriteFile(p, nil, 0o600) },
		"missing": os.Remove,
	} {
		if err := lose(filepath.Join(store.dir, run, "result.json")); err != nil {
			t.Fatal(err)
		}
		if _, ok, err := store.Result(run); ok || err != nil {
			t.Fatalf("%s result: ok %v, err %v; want none and no error", name, ok, err)
		}
		again := agent.RunDevice(context.Background(), device())
		if again.Phase != ota.DeviceSucceeded || len(again.Steps) != 2 || again.Steps[0].Stdout.Head != first.Steps[0].Stdout.Head {
			t.Fatalf("%s result: answered %s with %+v, want the first run's", name, again.Phase, again.Steps)
		}
	}
	b, err := os.ReadFile(count)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), "ran"); n != 2 {
		t.Fatalf("the steps ran %d times in all, want 2 (once each)", n)
	}
}

// TestPruneRuns: runs last written before the retention are deleted with
// their output; a recent run, a run in progress and the grant log stay.
func TestPruneRuns(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	a, err := newAgentService(dataDir, agent.DefaultPolicy(), 7*24*time.Hour, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	write := func(run, file string, at time.Time) {
		dir := filepath.Join(a.dir, run)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, file)
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		for _, q := range []string{p, dir} {
			if err := os.Chtimes(q, at, at); err != nil {
				t.Fatal(err)
			}
		}
	}
	old := now.Add(-8 * 24 * time.Hour)
	write("old-1", "result.json", old)
	write("old-1", "run.stdout", old)
	write("recent-1", "result.json", old)
	write("recent-1", "step-0.json", now.Add(-time.Hour)) // written since: recent
	write("busy-1", "step-0.json", old)
	a.running["busy-1"] = &agentRun{done: make(chan struct{})}

	n, err := a.prune(a.store.(runPruner), now)
	if err != nil || n != 1 {
		t.Fatalf("pruned %d runs, %v; want 1", n, err)
	}
	left, _ := os.ReadDir(a.dir)
	var names []string
	for _, e := range left {
		names = append(names, e.Name())
	}
	if fmt.Sprint(names) != "[busy-1 grants.log recent-1]" && fmt.Sprint(names) != "[busy-1 recent-1]" {
		t.Fatalf("left %v, want busy-1 and recent-1 (and the grant log)", names)
	}
	if _, err := os.Stat(filepath.Join(a.dir, "old-1")); !os.IsNotExist(err) {
		t.Fatalf("old-1 is still there: %v", err)
	}
}

// TestLoggedStepsOfARunInProgress: before a run has its result, its
// steps' logs are listed in the order their files were written, a step
// with only stderr included; once it has one, in the result's order.
func TestLoggedStepsOfARunInProgress(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a := &agentService{store: fileRunStore{dir: dir}}
	const run = "uid-1"
	logs := filepath.Join(dir, run)
	if err := os.MkdirAll(logs, 0o700); err != nil {
		t.Fatal(err)
	}
	base := time.Now().Add(-time.Hour)
	for i, f := range []string{"zeta.stdout", "zeta.stderr", "alpha.stderr", "mid.stdout"} {
		path := filepath.Join(logs, f)
		if err := os.WriteFile(path, []byte("x\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		at := base.Add(time.Duration(i) * time.Minute)
		if err := os.Chtimes(path, at, at); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := strings.Join(a.loggedSteps(run, logs), ","), "zeta,alpha,mid"; got != want {
		t.Errorf("in progress: %s, want %s", got, want)
	}
	st := ota.DeviceResultStatus{Phase: ota.DeviceSucceeded, Steps: []ota.StepResult{{Name: "mid"}, {Name: "quiet"}, {Name: "zeta"}, {Name: "alpha"}}}
	if err := a.store.SaveResult(run, st); err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(a.loggedSteps(run, logs), ","), "mid,zeta,alpha"; got != want {
		t.Errorf("with a result: %s, want %s", got, want)
	}
}
