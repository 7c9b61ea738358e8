package agent

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/outpost-mesh/outpost/ota"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testEnv is the identity steps run under in tests.
var testEnv = Env{Node: "edge-1", Site: "store-7", Task: "onboard"}

// run runs step with the default policy and a log dir of its own, and
// returns the result and the log dir.
func run(t *testing.T, step ota.Step) (ota.StepResult, string) {
	t.Helper()
	return runWith(t, step, DefaultPolicy(), nil)
}

func runWith(t *testing.T, step ota.Step, pol Policy, blobs BlobOpener) (ota.StepResult, string) {
	t.Helper()
	logDir := filepath.Join(t.TempDir(), "logs")
	return RunStep(t.Context(), step, testEnv, pol, blobs, logDir), logDir
}

// wantPhase fails the test unless r has the phase and, when reason is not
// empty, the reason.
func wantPhase(t *testing.T, r ota.StepResult, phase ota.StepPhase, reason string) {
	t.Helper()
	if r.Phase != phase || (reason != "" && r.Reason != reason) {
		t.Fatalf("phase %s reason %s (%s); want %s %s\nstdout: %s\nstderr: %s",
			r.Phase, r.Reason, r.Error, phase, reason, r.Stdout.String(), r.Stderr.String())
	}
}

// eventually polls cond every 20ms until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf(format, args...)
		case <-tick.C:
		}
	}
}

// writeFile writes content to dir/name and returns the path.
func writeFile(t *testing.T, dir, name, content string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// lines counts the lines of the file at p (0 when it does not exist).
func lines(t *testing.T, p string) int {
	t.Helper()
	b, err := os.ReadFile(p)
	if os.IsNotExist(err) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "\n")
}
