package netlab

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// stopWait is how long Stop waits after SIGTERM before it kills.
const stopWait = 15 * time.Second

// Proc is a long-running process that Host.Start started in a host's
// namespace. Its methods may be called from any goroutine.
type Proc struct {
	host    *Host
	name    string
	args    []string
	logPath string

	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{} // closed when the current run has exited
	err    error         // the current run's Wait error, once done
	starts int
}

// start runs the process once more with the same arguments. The previous
// run must have exited.
func (p *Proc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done != nil {
		select {
		case <-p.done:
		default:
			return fmt.Errorf("start %s: it is still running", p)
		}
	}
	f, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	p.starts++
	fmt.Fprintf(f, "=== netlab: start #%d in %s at %s: %s %s\n", p.starts, p.host.ns,
		time.Now().Format(time.RFC3339Nano), p.name, strings.Join(p.args, " "))
	cmd := exec.Command("ip", append([]string{"netns", "exec", p.host.ns, p.name}, p.args...)...)
	cmd.Stdout, cmd.Stderr = f, f
	// A process group of its own, so kills reach any child it forks; and
	// SIGKILL if the test process dies, so a crashed run leaves no daemons
	// (the next run's sweep deletes its namespaces).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", p, err)
	}
	done := make(chan struct{})
	p.cmd, p.done, p.err = cmd, done, nil
	// The waiter ends when the process does; cleanup kills every process,
	// so none outlives the test.
	go func() {
		err := cmd.Wait()
		fmt.Fprintf(f, "=== netlab: exited at %s: %v\n", time.Now().Format(time.RFC3339Nano), exitText(err))
		f.Close()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

func exitText(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// String names the process and its host for logs.
func (p *Proc) String() string { return p.host.name + ":" + p.name }

// Host is the host the process runs on.
func (p *Proc) Host() *Host { return p.host }

// Args are the process's arguments, without its name.
func (p *Proc) Args() []string { return append([]string(nil), p.args...) }

// PID is the current run's process id.
func (p *Proc) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd.Process.Pid
}

// Done is closed when the current run exits.
func (p *Proc) Done() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done
}

// Running reports whether the current run has not exited yet.
func (p *Proc) Running() bool {
	select {
	case <-p.Done():
		return false
	default:
		return true
	}
}

// Wait waits for the current run to exit and returns how it ended, as
// exec.Cmd.Wait does.
func (p *Proc) Wait() error {
	<-p.Done()
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Kill sends SIGKILL to the process (and its group) and waits for it.
func (p *Proc) Kill() {
	_ = p.killWithin(killWait)
}

func (p *Proc) killWithin(d time.Duration) error {
	done := p.Done()
	if !p.Running() {
		return nil
	}
	_ = p.signal(syscall.SIGKILL)
	select {
	case <-done:
		return nil
	case <-time.After(d):
		return fmt.Errorf("%s (pid %d) still runs %s after SIGKILL", p, p.PID(), d)
	}
}

// Stop sends SIGTERM and waits up to 15 s for the process to exit, then
// kills it. It returns the run's Wait error (nil for exit status 0), or an
// error saying it had to be killed.
func (p *Proc) Stop() error {
	done := p.Done()
	if !p.Running() {
		return p.Wait()
	}
	_ = p.signal(syscall.SIGTERM)
	select {
	case <-done:
		return p.Wait()
	case <-time.After(stopWait):
	}
	if err := p.killWithin(killWait); err != nil {
		return err
	}
	return fmt.Errorf("%s did not exit within %s of SIGTERM and was killed", p, stopWait)
}

// Restart stops the process if it still runs (see Stop) and starts it
// again with the same arguments, appending to the same log.
func (p *Proc) Restart() {
	t := p.host.lab.t
	t.Helper()
	if p.Running() {
		if err := p.Stop(); err != nil {
			t.Logf("netlab: restart %s: %v", p, err)
		}
	}
	p.host.lab.mu.Lock()
	closed := p.host.lab.closed
	p.host.lab.mu.Unlock()
	if closed {
		t.Fatalf("netlab: Restart(%s) after the lab was closed", p)
	}
	if err := p.start(); err != nil {
		t.Fatalf("netlab: %v", err)
	}
}

// signal sends sig to the process's group.
func (p *Proc) signal(sig syscall.Signal) error {
	pid := p.PID()
	err := syscall.Kill(-pid, sig)
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	return err
}

// LogPath is the file that collects the process's stdout and stderr, all
// runs appended.
func (p *Proc) LogPath() string { return p.logPath }

// Log returns the whole log.
func (p *Proc) Log() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(read %s: %v)", p.logPath, err)
	}
	return string(b)
}

// Tail returns the log's last n lines.
func (p *Proc) Tail(n int) string {
	b := bytes.TrimRight([]byte(p.Log()), "\n")
	lines := bytes.Split(b, []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}
