package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/outpost-mesh/outpost/ota"
)

// drainGrace is how long output is still read after the process group is
// gone: a process that left the group (setsid) but kept the pipes open
// cannot hold the step up for longer.
const drainGrace = 2 * time.Second

// process is a program to run for an exec or playbook step.
type process struct {
	path string   // resolved program
	argv []string // argv[0] included
	env  []string
	dir  string
	cred *syscall.Credential // nil: run as the agent
}

// outcome is how a process ended.
type outcome struct {
	exitCode *int
	reason   string // "" when it exited 0
	msg      string
}

// run starts p in a process group of its own and waits for it, copying
// its output into stdout and stderr. When ctx ends first, the whole group is
// killed (SIGKILL to -pgid); when the leader exits, whatever is left of the
// group is killed too, so no step leaves processes behind.
func (p *process) run(ctx context.Context, stdout, stderr io.Writer) outcome {
	outR, outW, err := os.Pipe()
	if err != nil {
		return outcome{reason: ota.ReasonStartFailed, msg: fmt.Sprintf("pipe: %v", err)}
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return outcome{reason: ota.ReasonStartFailed, msg: fmt.Sprintf("pipe: %v", err)}
	}
	defer outR.Close()
	defer errR.Close()

	cmd := &exec.Cmd{
		Path: p.path, Args: p.argv, Env: p.env, Dir: p.dir,
		Stdout: outW, Stderr: errW,
		// Pdeathsig: if the daemon itself is killed (kill -9, OOM), the
		// step's process dies with it rather than running on unowned; a
		// restarted agent marks the step Interrupted and never re-runs it.
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true, Credential: p.cred, Pdeathsig: syscall.SIGKILL},
	}
	// Pdeathsig fires when the OS thread that started the child exits; Go
	// keeps idle threads, so in practice that is when the daemon dies.
	err = cmd.Start()
	outW.Close()
	errW.Close()
	if err != nil {
		return outcome{reason: ota.ReasonStartFailed, msg: startError(p, err)}
	}
	pid := cmd.Process.Pid

	var copiers errgroup.Group
	copiers.Go(func() error { _, err := io.Copy(stdout, outR); return ignoreClosed(err) })
	copiers.Go(func() error { _, err := io.Copy(stderr, errR); return ignoreClosed(err) })

	// The waiter sees the leader exit without reaping it (waitid with
	// WNOWAIT), so that its pid, the group id, cannot be reused before the
	// group is killed below. Should waitid fail, it falls back to reaping.
	var waiter errgroup.Group
	var werr error
	reaped := false
	exited := make(chan struct{})
	waiter.Go(func() error {
		defer close(exited)
		if waitExit(pid) != nil {
			werr, reaped = cmd.Wait(), true
		}
		return nil
	})

	var o outcome
	select {
	case <-exited:
	case <-ctx.Done():
		killGroup(pid)
		<-exited
		o.reason, o.msg = killReason(ctx)
	}
	_ = waiter.Wait()
	killGroup(pid) // leftovers; after a reaping fallback, best effort
	if !reaped {
		werr = cmd.Wait()
	}

	drain := time.AfterFunc(drainGrace, func() { outR.Close(); errR.Close() })
	_ = copiers.Wait()
	drain.Stop()

	if o.reason != "" {
		return o
	}
	if werr != nil && cmd.ProcessState == nil {
		return outcome{reason: ota.ReasonKilled, msg: fmt.Sprintf("wait: %v", werr)}
	}
	ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
	switch {
	case ws.Signaled():
		return outcome{reason: ota.ReasonKilled, msg: fmt.Sprintf("killed by signal %v", ws.Signal())}
	case ws.ExitStatus() != 0:
		code := ws.ExitStatus()
		return outcome{exitCode: &code, reason: ota.ReasonExitCode, msg: fmt.Sprintf("exited with code %d", code)}
	}
	code := 0
	return outcome{exitCode: &code}
}

// killReason says why ctx ended, for a step killed or not started because
// of it: its own timeout, the device timeout, or cancellation.
func killReason(ctx context.Context) (reason, msg string) {
	switch cause := context.Cause(ctx); {
	case errors.Is(cause, errStepTimeout):
		return ota.ReasonTimeout, "killed at the step timeout"
	case errors.Is(cause, errDeviceTimeout):
		return ota.ReasonDeviceTimeout, "killed at the device timeout"
	default:
		return ota.ReasonCanceled, fmt.Sprintf("killed: %v", cause)
	}
}

// killed reports whether reason is one of killReason's.
func killed(reason string) bool {
	switch reason {
	case ota.ReasonTimeout, ota.ReasonDeviceTimeout, ota.ReasonCanceled, ota.ReasonKilled:
		return true
	}
	return false
}

// waitExit blocks until process pid has exited, without reaping it.
func waitExit(pid int) error {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err != unix.EINTR {
			return err
		}
	}
}

// killGroup sends SIGKILL to every process of group pgid; a group already
// gone is fine.
func killGroup(pgid int) {
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

func ignoreClosed(err error) error {
	if errors.Is(err, os.ErrClosed) {
		return nil
	}
	return err
}

func startError(p *process, err error) string {
	return fmt.Sprintf("start %s: %v", p.argv[0], unwrapPath(err))
}

// lookPath finds file in the directories of pathEnv, as the shell would;
// a file with a slash is used as it is (relative to the working directory).
func lookPath(file, pathEnv string) (string, error) {
	if strings.Contains(file, "/") {
		return file, nil
	}
	for _, dir := range filepath.SplitList(pathEnv) {
		if dir == "" || !filepath.IsAbs(dir) {
			continue
		}
		p := filepath.Join(dir, file)
		if executable(p) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%q not found in PATH %s", file, pathEnv)
}

func executable(p string) error {
	st, err := os.Stat(p)
	if err != nil {
		return err
	}
	if st.IsDir() || st.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", p)
	}
	return nil
}
