package agent

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/outpost-mesh/outpost/ota"
)

func TestExecArgvAndScript(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cases := []struct {
		name   string
		step   ota.Step
		stdout string
		stderr string
	}{
		{"argv, no shell", ota.Step{Command: []string{"echo", "a  b", "$HOME"}}, "a  b $HOME\n", ""},
		{"script by sh -e", ota.Step{Script: "echo out; echo err >&2"}, "out\n", "err\n"},
		{"outpost variables", ota.Step{Script: `echo "$OUTPOST_NODE $OUTPOST_SITE $OUTPOST_TASK"`}, "edge-1 store-7 onboard\n", ""},
		{"step env", ota.Step{Script: `echo "$GREETING"`, Env: map[string]string{"GREETING": "hello there"}}, "hello there\n", ""},
		{"minimal base env", ota.Step{Command: []string{"sh", "-c", "env | cut -d= -f1 | sort | tr '\\n' ' '"}}, "HOME LANG LOGNAME OUTPOST_NODE OUTPOST_SITE OUTPOST_TASK PATH PWD SHELL USER ", ""},
		{"working dir", ota.Step{Command: []string{"pwd"}, WorkingDir: dir}, dir + "\n", ""},
		{"default working dir", ota.Step{Command: []string{"pwd"}}, "/\n", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.step.Name, tc.step.Type = "s", ota.StepExec
			r, logDir := run(t, tc.step)
			wantPhase(t, r, ota.StepSucceeded, "")
			if r.ExitCode == nil || *r.ExitCode != 0 {
				t.Errorf("exit code %v", r.ExitCode)
			}
			if r.Stdout.Head != tc.stdout || r.Stderr.Head != tc.stderr {
				t.Errorf("stdout %q stderr %q; want %q %q", r.Stdout.Head, r.Stderr.Head, tc.stdout, tc.stderr)
			}
			if got := readFile(t, filepath.Join(logDir, "s.stdout")); got != tc.stdout {
				t.Errorf("log file %q, want %q", got, tc.stdout)
			}
		})
	}
}

func TestExecFailures(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		step   ota.Step
		reason string
		exit   int // -1: no exit code
		errHas string
	}{
		{"non-zero exit", ota.Step{Command: []string{"sh", "-c", "echo bad >&2; exit 3"}}, ota.ReasonExitCode, 3, "exited with code 3"},
		{"sh -e stops at the first failure", ota.Step{Script: "false\necho not reached"}, ota.ReasonExitCode, 1, "code 1"},
		{"no such program", ota.Step{Command: []string{"no-such-program-xyz"}}, ota.ReasonStartFailed, -1, "not found in PATH"},
		{"no such working dir", ota.Step{Command: []string{"true"}, WorkingDir: "/no/such/dir"}, ota.ReasonStartFailed, -1, "working directory /no/such/dir"},
		{"killed by a foreign signal", ota.Step{Script: "kill -9 $$"}, ota.ReasonKilled, -1, "killed by signal killed"},
		{"unknown user", ota.Step{Command: []string{"true"}, User: "no-such-user-xyz"}, ota.ReasonStartFailed, -1, "no-such-user-xyz"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.step.Name, tc.step.Type = "s", ota.StepExec
			r, _ := run(t, tc.step)
			wantPhase(t, r, ota.StepFailed, tc.reason)
			if tc.exit >= 0 && (r.ExitCode == nil || *r.ExitCode != tc.exit) {
				t.Errorf("exit code %v, want %d", r.ExitCode, tc.exit)
			}
			if tc.exit < 0 && r.ExitCode != nil {
				t.Errorf("exit code %d, want none", *r.ExitCode)
			}
			if !strings.Contains(r.Error, tc.errHas) {
				t.Errorf("error %q does not say %q", r.Error, tc.errHas)
			}
		})
	}
}

// gone reports whether pid has exited (a zombie counts: it runs nothing).
func gone(pid int) bool {
	if err := syscall.Kill(pid, 0); err == syscall.ESRCH {
		return true
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	// pid (comm) S ...: the state follows the last ')'.
	s := string(stat)
	return strings.HasPrefix(strings.TrimSpace(s[strings.LastIndexByte(s, ')')+1:]), "Z")
}

func TestExecTimeoutKillsTheGroup(t *testing.T) {
	t.Parallel()
	pidFile := filepath.Join(t.TempDir(), "pid")
	step := ota.Step{
		Name: "hang", Type: ota.StepExec, Timeout: metav1.Duration{Duration: 300 * time.Millisecond},
		Script: "sleep 60 & echo $! > " + pidFile + "\nsleep 60",
	}
	start := time.Now()
	r, _ := run(t, step)
	wantPhase(t, r, ota.StepFailed, ota.ReasonTimeout)
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %v", d)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(readFile(t, pidFile)))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, func() bool { return gone(pid) }, "grandchild %d still runs", pid)
}

func TestExecLeftoversKilledAtExit(t *testing.T) {
	t.Parallel()
	// The script exits at once, leaving a background child that holds
	// stdout open: the step must not wait for it, and it must not survive.
	pidFile := filepath.Join(t.TempDir(), "pid")
	r, _ := run(t, ota.Step{Name: "bg", Type: ota.StepExec, Script: "sleep 60 & echo $! > " + pidFile + "\necho done"})
	wantPhase(t, r, ota.StepSucceeded, "")
	if r.DurationMillis > 5000 || r.Stdout.Head != "done\n" {
		t.Errorf("duration %dms stdout %q", r.DurationMillis, r.Stdout.Head)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(readFile(t, pidFile)))
	eventually(t, 5*time.Second, func() bool { return gone(pid) }, "background child %d survived the step", pid)
}

func TestExecCanceled(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(200*time.Millisecond, cancel)
	r := RunStep(ctx, ota.Step{Name: "s", Type: ota.StepExec, Command: []string{"sleep", "60"}}, testEnv, DefaultPolicy(), nil, "")
	wantPhase(t, r, ota.StepFailed, ota.ReasonCanceled)
	if r.DurationMillis > 5000 {
		t.Errorf("took %dms", r.DurationMillis)
	}
}

func TestExecLargeOutput(t *testing.T) {
	t.Parallel()
	const n = 300_000
	r, logDir := run(t, ota.Step{
		Name: "big", Type: ota.StepExec,
		Script: "printf START; head -c " + strconv.Itoa(n) + " /dev/zero | tr '\\0' x; printf END; printf e >&2",
	})
	wantPhase(t, r, ota.StepSucceeded, "")
	o := r.Stdout
	if o.TotalBytes != n+8 || !o.Truncated {
		t.Fatalf("total %d truncated %v", o.TotalBytes, o.Truncated)
	}
	if len(o.Head) != ota.OutputLimit || !strings.HasPrefix(o.Head, "STARTxxx") {
		t.Errorf("head: %d bytes, starts %q", len(o.Head), o.Head[:10])
	}
	if len(o.Tail) != ota.OutputLimit || !strings.HasSuffix(o.Tail, "xxxEND") {
		t.Errorf("tail: %d bytes, ends %q", len(o.Tail), o.Tail[len(o.Tail)-10:])
	}
	if r.Stderr.Head != "e" || r.Stderr.Truncated {
		t.Errorf("stderr %+v", r.Stderr)
	}
	full := readFile(t, filepath.Join(logDir, "big.stdout"))
	if len(full) != n+8 || !strings.HasPrefix(full, "START") || !strings.HasSuffix(full, "END") {
		t.Errorf("log file: %d bytes", len(full))
	}
}

func TestExecAsUser(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		r, _ := run(t, ota.Step{Name: "s", Type: ota.StepExec, Command: []string{"id", "-u"}, User: "root"})
		wantPhase(t, r, ota.StepFailed, ota.ReasonNotRoot)
		return
	}
	r, _ := run(t, ota.Step{Name: "s", Type: ota.StepExec, Script: `echo "$(id -u) $HOME $USER"`, User: "nobody"})
	wantPhase(t, r, ota.StepSucceeded, "")
	if !strings.HasPrefix(r.Stdout.Head, "65534 ") || !strings.HasSuffix(r.Stdout.Head, " nobody\n") {
		t.Errorf("ran as %q", r.Stdout.Head)
	}
}
