//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// outpostBin is the binary under test: $OUTPOST_BIN, or one TestMain
// builds from ./cmd/outpost. It is empty when the tests will skip (not
// root), so no time goes to a build nobody runs.
var outpostBin string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	bin := os.Getenv("OUTPOST_BIN")
	// The daemons and CLI calls inherit this environment: a developer's
	// OUTPOST_* settings must not change what they do.
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "OUTPOST_") {
			os.Unsetenv(k)
		}
	}
	if bin == "" && os.Geteuid() == 0 {
		dir, err := os.MkdirTemp("", "outpost-e2e-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
			return 1
		}
		defer os.RemoveAll(dir)
		bin = filepath.Join(dir, "outpost")
		out, err := exec.Command("go", "build", "-o", bin, "github.com/outpost-mesh/outpost/cmd/outpost").CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "e2e: go build ./cmd/outpost: %v\n%s", err, out)
			return 1
		}
	}
	if bin != "" {
		abs, err := filepath.Abs(bin)
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
			return 1
		}
		if _, err := os.Stat(abs); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: OUTPOST_BIN: %v\n", err)
			return 1
		}
		outpostBin = abs
	}
	return m.Run()
}
