package node

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
