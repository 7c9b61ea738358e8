package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-mesh/outpost/node"
	"github.com/outpost-mesh/outpost/ota"
)

// The tests in this file build the real outpost binary once, run
// `outpost node` as a child process and drive it with the CLI, as an
// operator would. They take seconds each and are skipped by -short.

var (
	buildOnce sync.Once
	buildDir  string
	binary    string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// outpostBinary builds cmd/outpost once per test run, with the race
// detector when the tests have it, and returns its path. It skips the test
// under -short.
func outpostBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the outpost binary; skipped with -short")
	}
	buildOnce.Do(func() {
		goTool, err := exec.LookPath("go")
		if err != nil {
			buildErr = fmt.Errorf("the go command is needed to build outpost: %w", err)
			return
		}
		if buildDir, buildErr = os.MkdirTemp("", "outpost-cli-test-"); buildErr != nil {
			return
		}
		binary = filepath.Join(buildDir, "outpost")
		args := []string{"build", "-o", binary}
		if raceEnabled() {
			args = append(args, "-race")
		}
		out, err := exec.Command(goTool, append(args, ".")...).CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binary
}

// raceEnabled reports whether this test binary was built with -race.
func raceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" && s.Value == "true" {
			return true
		}
	}
	return false
}

// childEnv is the environment of child processes: this one's without
// OUTPOST_* variables, so a developer's settings do not leak into the test,
// and, for a race-enabled binary, without the race detector's default
// second of sleep at every exit.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OUTPOST_") {
			env = append(env, kv)
		}
	}
	if _, ok := os.LookupEnv("GORACE"); !ok {
		env = append(env, "GORACE=atexit_sleep_ms=0")
	}
	return env
}

// syncBuffer is a bytes.Buffer that a child process writes while the test
// reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// daemon is an `outpost node` child process.
type daemon struct {
	bin    string
	name   string
	dir    string
	addr   string
	cmd    *exec.Cmd
	stderr *syncBuffer
	exited chan struct{} // closed once cmd.Wait returned
}

// errAddrInUse is a daemon that could not bind its API port.
var errAddrInUse = errors.New("API address in use")

// startDaemon runs `outpost node` on dir with its API on a free loopback
// port, and waits until it leads its Raft group and admin.yaml names it. A
// port taken between choosing and binding it is retried once on another.
// The process is killed on cleanup if still running.
func startDaemon(t *testing.T, bin, dir string, extra ...string) *daemon {
	t.Helper()
	for attempt := 0; ; attempt++ {
		d, err := tryStartDaemon(t, bin, dir, extra...)
		if errors.Is(err, errAddrInUse) && attempt == 0 {
			t.Logf("retrying on another port: %v", err)
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
}

func tryStartDaemon(t *testing.T, bin, dir string, extra ...string) (*daemon, error) {
	t.Helper()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t, "tcp")))
	d := &daemon{bin: bin, name: "cli-node", dir: dir, addr: addr, stderr: &syncBuffer{}, exited: make(chan struct{})}
	d.cmd = exec.Command(bin, "node", "--name", d.name, "--data-dir", dir, "--api-addr", addr,
		"--bind-addr", "127.0.0.1", "--quic-port", strconv.Itoa(freePort(t, "udp")), "--gossip-port", strconv.Itoa(freePort(t, "tcp", "udp")),
		"--heartbeat-interval", "200ms", "--log-level", "info")
	d.cmd.Args = append(d.cmd.Args, extra...)
	d.cmd.Env = childEnv()
	d.cmd.Stdout = d.stderr
	d.cmd.Stderr = d.stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	go func() {
		_ = d.cmd.Wait()
		close(d.exited)
	}()
	t.Cleanup(func() {
		if !d.done() {
			_ = d.cmd.Process.Kill()
			<-d.exited
		}
		if t.Failed() {
			t.Logf("outpost node on %s (pid %d) printed:\n%s", addr, d.cmd.Process.Pid, d.stderr.String())
		}
		if strings.Contains(d.stderr.String(), "WARNING: DATA RACE") {
			t.Errorf("outpost node on %s reported a data race:\n%s", addr, d.stderr.String())
		}
	})

	deadline := time.Now().Add(60 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		if d.done() {
			if strings.Contains(d.stderr.String(), "address already in use") {
				return nil, fmt.Errorf("%w: %s", errAddrInUse, strings.TrimSpace(d.stderr.String()))
			}
			return nil, fmt.Errorf("outpost node exited early (%v):\n%s", d.cmd.ProcessState, d.stderr.String())
		}
		if last = d.ready(); last == nil {
			return d, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil, fmt.Errorf("outpost node on %s not ready within 60s: %v\n%s", addr, last, d.stderr.String())
}

// givenPorts holds every port freePort has returned in this test binary:
// the kernel hands a just-closed ephemeral port out again, and two daemons
// (or one daemon's API and gossip) given the same port fail long after
// the choice.
var givenPorts sync.Map

// freePort returns a loopback port that is free, right now, on every one of
// networks ("tcp", "udp"), and that it has not returned before: chosen by
// listening on port 0 and closing.
func freePort(t *testing.T, networks ...string) int {
	t.Helper()
	for range 100 {
		port := 0
		ok := true
		for _, network := range networks {
			addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
			var c io.Closer
			var err error
			if network == "udp" {
				var pc net.PacketConn
				pc, err = net.ListenPacket("udp", addr)
				if err == nil {
					c, port = pc, pc.LocalAddr().(*net.UDPAddr).Port
				}
			} else {
				var ln net.Listener
				ln, err = net.Listen("tcp", addr)
				if err == nil {
					c, port = ln, ln.Addr().(*net.TCPAddr).Port
				}
			}
			if err != nil {
				ok = false
				break
			}
			c.Close()
		}
		if !ok {
			continue
		}
		if _, given := givenPorts.LoadOrStore(port, true); !given {
			return port
		}
	}
	t.Fatalf("no free loopback port for %v", networks)
	return 0
}

// ready returns nil once the daemon leads its group and admin.yaml names
// its API address.
func (d *daemon) ready() error {
	st, err := node.ReadLocalStatus(filepath.Join(d.dir, node.SocketName))
	if err != nil {
		return err
	}
	if st.Raft.State != "Leader" {
		return fmt.Errorf("raft state %s", st.Raft.State)
	}
	creds, err := node.LoadCredentials(d.config())
	if err != nil {
		return err
	}
	if creds.Server != "https://"+d.addr {
		return fmt.Errorf("admin.yaml names %s, not https://%s yet", creds.Server, d.addr)
	}
	return nil
}

func (d *daemon) done() bool {
	select {
	case <-d.exited:
		return true
	default:
		return false
	}
}

func (d *daemon) config() string { return filepath.Join(d.dir, "admin.yaml") }

// stop sends sig and waits for the process to exit, returning its code.
func (d *daemon) stop(t *testing.T, sig os.Signal) int {
	t.Helper()
	if err := d.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v: %v", sig, err)
	}
	select {
	case <-d.exited:
	case <-time.After(60 * time.Second):
		t.Fatalf("outpost node did not exit within 60s of %v", sig)
	}
	return d.cmd.ProcessState.ExitCode()
}

// result is what one CLI run printed.
type result struct {
	stdout, stderr string
	code           int
}

// runCLI runs the outpost binary with args (and stdin, when not empty) and
// returns what it printed and its exit code. It fails the test if the
// command does not finish within a minute.
func runCLI(t *testing.T, bin, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = childEnv()
	cmd.Dir = t.TempDir()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("outpost %s: %v", strings.Join(args, " "), err)
	}
	if ctx.Err() != nil {
		t.Fatalf("outpost %s: still running after a minute", strings.Join(args, " "))
	}
	return result{stdout: stdout.String(), stderr: stderr.String(), code: cmd.ProcessState.ExitCode()}
}

// ok runs the CLI and fails the test unless it exits 0.
func (d *daemon) ok(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	r := runCLI(t, d.bin, stdin, append(args, "--config", d.config())...)
	if r.code != 0 {
		t.Fatalf("outpost %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// fails runs the CLI and fails the test unless it exits non-zero.
func (d *daemon) fails(t *testing.T, args ...string) result {
	t.Helper()
	r := runCLI(t, d.bin, "", append(args, "--config", d.config())...)
	if r.code == 0 {
		t.Fatalf("outpost %s: exit 0, want an error\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.stdout, r.stderr)
	}
	return r
}

func writeFile(t *testing.T, dir, name, text string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func siteYAML(name, location string) string {
	return fmt.Sprintf("apiVersion: core.outpost.dev/v1alpha1\nkind: Site\nmetadata:\n  name: %s\nspec:\n  location: %s\n", name, location)
}

func TestCLI(t *testing.T) {
	t.Parallel()
	bin := outpostBinary(t)
	d := startDaemon(t, bin, t.TempDir())
	files := t.TempDir()

	t.Run("get nodes", func(t *testing.T) {
		// The node registers itself with its first heartbeat (the Node
		// object first, then its status: wait for a whole row).
		var out string
		deadline := time.Now().Add(30 * time.Second)
		for {
			r := runCLI(t, bin, "", "get", "nodes", "--config", d.config())
			out = r.stdout
			if r.code == 0 && strings.Contains(out, d.name) && !strings.Contains(out, "<none>") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("get nodes: exit %d, no row for %s within 30s\nstdout: %s\nstderr: %s", r.code, d.name, r.stdout, r.stderr)
			}
			time.Sleep(100 * time.Millisecond)
		}
		lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
		if got, want := strings.Fields(lines[0]), []string{"NAME", "SITE", "ROLE", "STATE", "VERSION", "AGE"}; !slices.Equal(got, want) {
			t.Errorf("header %q, want %v", lines[0], want)
		}
		if len(lines) != 2 {
			t.Fatalf("get nodes printed %d lines, want a header and one row:\n%s", len(lines), out)
		}
		row := strings.Fields(lines[1])
		if len(row) != 6 || row[0] != d.name || row[1] != "hub" || row[2] != "hub" || row[3] == "<none>" {
			t.Errorf("row %q, want %s hub hub STATE VERSION AGE", lines[1], d.name)
		}
		wide := strings.Split(d.ok(t, "", "get", "nodes", "-o", "wide"), "\n")
		if !strings.Contains(wide[0], "RAFT") || !strings.Contains(wide[1], "Leader") {
			t.Errorf("get nodes -o wide:\n%s", strings.Join(wide, "\n"))
		}
	})

	t.Run("apply", func(t *testing.T) {
		path := writeFile(t, files, "sites.yaml", siteYAML("alpha", "north")+"---\n"+siteYAML("beta", "south"))
		if out, want := d.ok(t, "", "apply", "-f", path), "site/alpha created\nsite/beta created\n"; out != want {
			t.Errorf("first apply printed %q, want %q", out, want)
		}
		if out, want := d.ok(t, "", "apply", "-f", path), "site/alpha unchanged\nsite/beta unchanged\n"; out != want {
			t.Errorf("second apply printed %q, want %q", out, want)
		}
		writeFile(t, files, "sites.yaml", siteYAML("alpha", "north")+"---\n"+siteYAML("beta", "east"))
		if out, want := d.ok(t, "", "apply", "-f", path), "site/alpha unchanged\nsite/beta configured\n"; out != want {
			t.Errorf("apply after a change printed %q, want %q", out, want)
		}
		if out := d.ok(t, "", "get", "site", "beta", "-o", "json"); !strings.Contains(out, `"location": "east"`) {
			t.Errorf("beta after apply:\n%s", out)
		}
		// Standard input.
		if out, want := d.ok(t, siteYAML("gamma", "west"), "apply", "-f", "-"), "site/gamma created\n"; out != want {
			t.Errorf("apply -f - printed %q, want %q", out, want)
		}
		out := d.ok(t, "", "get", "sites")
		for _, name := range []string{"alpha", "beta", "gamma", "hub"} {
			if !strings.Contains(out, "\n"+name+" ") {
				t.Errorf("get sites lacks %s:\n%s", name, out)
			}
		}
	})

	t.Run("apply of a malformed file changes nothing", func(t *testing.T) {
		// Line 12, the second document's location, is indented by one space.
		text := siteYAML("delta", "up") + "---\n" + strings.Replace(siteYAML("epsilon", "down"), "spec:\n  location", " location", 1)
		path := writeFile(t, files, "bad.yaml", text)
		r := d.fails(t, "apply", "-f", path)
		if !strings.Contains(r.stderr, path+":12:") {
			t.Errorf("stderr %q does not name %s:12", r.stderr, path)
		}
		if r.stdout != "" {
			t.Errorf("stdout %q, want nothing applied", r.stdout)
		}
		for _, name := range []string{"delta", "epsilon"} {
			r := d.fails(t, "get", "site", name)
			if !strings.Contains(r.stderr, "not found") {
				t.Errorf("get site %s after a failed apply: %q, want not found", name, r.stderr)
			}
		}
	})

	t.Run("apply of an unknown kind", func(t *testing.T) {
		path := writeFile(t, files, "widget.yaml", "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n")
		r := d.fails(t, "apply", "-f", path)
		if !strings.Contains(r.stderr, path+":1:") || !strings.Contains(r.stderr, "Widget") {
			t.Errorf("stderr %q, want it to name %s:1 and Widget", r.stderr, path)
		}
	})

	t.Run("describe", func(t *testing.T) {
		out := d.ok(t, "", "describe", "site", "alpha")
		for _, want := range []string{"Name:", "alpha", "Kind:", "Site", "API Version:", "core.outpost.dev/v1alpha1", "Resource Version:", "Spec:", "location: north"} {
			if !strings.Contains(out, want) {
				t.Errorf("describe site alpha lacks %q:\n%s", want, out)
			}
		}
		if r := d.fails(t, "describe", "site", "nope"); !strings.Contains(r.stderr, `"nope" not found`) {
			t.Errorf("describe site nope: %q", r.stderr)
		}
	})

	t.Run("delete", func(t *testing.T) {
		if out, want := d.ok(t, "", "delete", "site", "alpha"), "site \"alpha\" deleted\n"; out != want {
			t.Errorf("delete printed %q, want %q", out, want)
		}
		if r := d.fails(t, "get", "site", "alpha"); !strings.Contains(r.stderr, `"alpha" not found`) {
			t.Errorf("get site alpha after delete: %q", r.stderr)
		}
		if r := d.fails(t, "delete", "site", "alpha"); !strings.Contains(r.stderr, `"alpha" not found`) {
			t.Errorf("second delete: %q", r.stderr)
		}
	})

	t.Run("status", func(t *testing.T) {
		r := runCLI(t, bin, "", "status", "--data-dir", d.dir, "-o", "json")
		if r.code != 0 {
			t.Fatalf("status: exit %d: %s", r.code, r.stderr)
		}
		var st struct {
			Name string `json:"name"`
			Site string `json:"site"`
			Role string `json:"role"`
			Raft *struct {
				State       string            `json:"state"`
				Leader      string            `json:"leader"`
				Term        *uint64           `json:"term"`
				CommitIndex *uint64           `json:"commitIndex"`
				Peers       []json.RawMessage `json:"peers"`
			} `json:"raft"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
			t.Fatalf("status -o json: %v\n%s", err, r.stdout)
		}
		if st.Name != d.name || st.Site != "hub" || st.Role != "hub" || st.Raft == nil {
			t.Fatalf("status %s: want name %s, site and role hub, and raft", r.stdout, d.name)
		}
		if st.Raft.State != "Leader" || st.Raft.Leader != d.name || st.Raft.Term == nil || *st.Raft.Term == 0 || st.Raft.CommitIndex == nil || *st.Raft.CommitIndex == 0 || len(st.Raft.Peers) != 1 {
			t.Errorf("status raft: %s", r.stdout)
		}

		text := runCLI(t, bin, "", "status", "--data-dir", d.dir)
		if text.code != 0 || !strings.Contains(text.stdout, "State:") || !strings.Contains(text.stdout, "Leader") {
			t.Errorf("status (text): exit %d\n%s%s", text.code, text.stdout, text.stderr)
		}
		gone := runCLI(t, bin, "", "status", "--data-dir", t.TempDir())
		if gone.code == 0 || !strings.Contains(gone.stderr, "no outpost node answers") {
			t.Errorf("status of an empty data dir: exit %d, %q", gone.code, gone.stderr)
		}
	})

	t.Run("get of an unknown type", func(t *testing.T) {
		r := d.fails(t, "get", "bogus")
		lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
		if len(lines) != 1 || !strings.Contains(lines[0], `"bogus"`) || !strings.Contains(lines[0], "nodes") || !strings.Contains(lines[0], "sites") {
			t.Errorf("get bogus printed %q, want one line naming bogus and the known types", r.stderr)
		}
		if strings.Contains(lines[0], "members") {
			t.Errorf("get bogus lists the hidden members: %q", lines[0])
		}
	})

	t.Run("task steering", func(t *testing.T) {
		// One device, sleeping: halt, resume and cancel say what they did,
		// and refuse what does not apply (resuming a running task, steering
		// an ended one) without changing it.
		task := fmt.Sprintf("apiVersion: ota.outpost.dev/v1alpha1\nkind: Task\nmetadata:\n  name: steer\nspec:\n  targets: {nodes: [%s]}\n  steps:\n  - {name: nap, type: exec, command: [sleep, \"60\"]}\n", d.name)
		for deadline := time.Now().Add(30 * time.Second); !strings.Contains(d.ok(t, "", "get", "nodes"), d.name); {
			if time.Now().After(deadline) {
				t.Fatalf("node %s never registered", d.name)
			}
			time.Sleep(100 * time.Millisecond)
		}
		d.ok(t, "", "apply", "-f", writeFile(t, files, "steer.yaml", task))
		steps := []struct {
			args []string
			out  string // stdout when it succeeds
			err  string // in stderr when it fails
		}{
			{[]string{"halt"}, "task/steer halted\n", ""},
			{[]string{"halt"}, "task/steer already halted\n", ""},
			{[]string{"resume"}, "task/steer resumed\n", ""},
			{[]string{"resume"}, "", "task steer is not halted"},
			{[]string{"cancel"}, "task/steer canceled\n", ""},
		}
		for _, st := range steps {
			args := append([]string{"task"}, append(st.args, "steer")...)
			if st.err != "" {
				if r := d.fails(t, args...); !strings.Contains(r.stderr, st.err) {
					t.Errorf("%v: %q, want it to say %q", args, r.stderr, st.err)
				}
				continue
			}
			if out := d.ok(t, "", args...); out != st.out {
				t.Errorf("%v printed %q, want %q", args, out, st.out)
			}
		}
		if r := d.fails(t, "task", "watch", "steer"); !strings.Contains(r.stdout, "Canceled") {
			t.Errorf("task watch of the canceled task: exit %d\n%s", r.code, r.stdout)
		}
		for _, verb := range []string{"cancel", "halt", "resume"} {
			r := d.fails(t, "task", verb, "steer")
			if want := "task steer has ended (Canceled): there is nothing to " + verb; !strings.Contains(r.stderr, want) {
				t.Errorf("task %s of an ended task: %q, want %q", verb, r.stderr, want)
			}
		}
		if out := d.ok(t, "", "get", "task", "steer", "-o", "json"); !strings.Contains(out, `"phase": "Canceled"`) || strings.Contains(out, `"halted": true`) {
			t.Errorf("after the refused verbs:\n%s", out)
		}
		// Applying the task's file again keeps what the commands set; a
		// changed step is refused by name.
		if out := d.ok(t, "", "apply", "-f", writeFile(t, files, "steer.yaml", task)); out != "task/steer unchanged\n" {
			t.Errorf("apply of the same file again: %q", out)
		}
		changed := strings.Replace(task, `"60"`, `"61"`, 1)
		if r := d.fails(t, "apply", "-f", writeFile(t, files, "steer.yaml", changed)); !strings.Contains(r.stderr, "spec.steps: Forbidden: cannot change once the task is created") {
			t.Errorf("apply of a changed step: %q", r.stderr)
		}
		if r := d.fails(t, "task", "results", "steer", "--phase", "done"); !strings.Contains(r.stderr, `--phase "done": want one of`) {
			t.Errorf("results --phase done: %q", r.stderr)
		}
		if r := d.fails(t, "task", "results", "nope"); !strings.Contains(r.stderr, `"nope" not found`) {
			t.Errorf("results of a task that does not exist: %q", r.stderr)
		}
		if out := d.ok(t, "", "task", "results", "steer", "--phase", "CANCELED"); !strings.Contains(out, "Canceled") || !strings.Contains(out, d.name) {
			t.Errorf("results --phase CANCELED:\n%s", out)
		}
	})

	t.Run("task naming a node not in the mesh", func(t *testing.T) {
		// The node that exists runs; the one that does not is named, in
		// the status and in task watch, not silently dropped.
		task := fmt.Sprintf("apiVersion: ota.outpost.dev/v1alpha1\nkind: Task\nmetadata:\n  name: typo\nspec:\n  targets: {nodes: [%s, ghost]}\n  steps:\n  - {name: t, type: exec, command: [\"true\"]}\n", d.name)
		d.ok(t, "", "apply", "-f", writeFile(t, files, "typo.yaml", task))
		out := d.ok(t, "", "task", "watch", "typo")
		if !strings.Contains(out, "Succeeded") || !strings.Contains(out, "not found, not run: node ghost\n") {
			t.Errorf("task watch:\n%s", out)
		}
		if out := d.ok(t, "", "get", "task", "typo", "-o", "json"); !strings.Contains(out, `"reason": "NotFound"`) || !strings.Contains(out, `"targets": [`) {
			t.Errorf("status:\n%s", out)
		}
	})

	t.Run("watch of a halted task exits", func(t *testing.T) {
		// Created halted, nothing runs: watch says how to go on and exits
		// 1 rather than wait for a steer that may never come.
		task := fmt.Sprintf("apiVersion: ota.outpost.dev/v1alpha1\nkind: Task\nmetadata:\n  name: halts\nspec:\n  targets: {nodes: [%s]}\n  failurePolicy: {maxFailures: 0}\n  halted: true\n  steps:\n  - {name: f, type: exec, command: [\"false\"]}\n", d.name)
		d.ok(t, "", "apply", "-f", writeFile(t, files, "halts.yaml", task))
		r := d.fails(t, "task", "watch", "halts")
		if r.code != 1 || !strings.Contains(r.stdout, "Halted (Operator)") || !strings.Contains(r.stdout, "`outpost task resume halts`") {
			t.Errorf("task watch of a halted task: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
	})

	t.Run("delete of a running task stops its device", func(t *testing.T) {
		// The task goes once its device was canceled and its process
		// killed, not when the process would have ended by itself.
		const nap = "86.4242"
		task := fmt.Sprintf("apiVersion: ota.outpost.dev/v1alpha1\nkind: Task\nmetadata:\n  name: doomed\nspec:\n  targets: {nodes: [%s]}\n  steps:\n  - {name: nap, type: exec, command: [sleep, %q]}\n", d.name, nap)
		d.ok(t, "", "apply", "-f", writeFile(t, files, "doomed.yaml", task))
		napping := func() bool {
			out, _ := exec.Command("pgrep", "-f", "sleep "+nap).Output()
			return len(out) > 0
		}
		for deadline := time.Now().Add(30 * time.Second); !napping(); time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("the task's process never started")
			}
		}
		if out := d.ok(t, "", "delete", "task", "doomed"); !strings.Contains(out, "waiting for finalizers: "+ota.TaskFinalizer+"\n  its devices are being canceled") {
			t.Errorf("delete printed %q", out)
		}
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			r := runCLI(t, d.bin, "", "get", "task", "doomed", "--config", d.config())
			if r.code != 0 && strings.Contains(r.stderr, "not found") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the deleted task is still there after 30s:\n%s%s", r.stdout, r.stderr)
			}
		}
		if napping() {
			t.Error("the deleted task's process still runs")
		}
	})

	t.Run("wrong token", func(t *testing.T) {
		creds, err := node.LoadCredentials(d.config())
		if err != nil {
			t.Fatal(err)
		}
		id, _, _ := strings.Cut(creds.Token, ".")
		creds.Token = id + ".wrong"
		bad := filepath.Join(t.TempDir(), "admin.yaml")
		if err := creds.Write(bad); err != nil {
			t.Fatal(err)
		}
		r := runCLI(t, bin, "", "get", "sites", "--config", bad)
		if r.code == 0 || !strings.Contains(r.stderr, "invalid bearer token") || !strings.Contains(r.stderr, "--config") {
			t.Errorf("get with a wrong token: exit %d, %q", r.code, r.stderr)
		}
	})
}

// apiClient is an admin client of a daemon's API, for bulk writes.
type apiClient struct {
	server string
	token  string
	http   *http.Client
}

func newAPIClient(t *testing.T, d *daemon) *apiClient {
	t.Helper()
	creds, err := node.LoadCredentials(d.config())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(creds.CA)) {
		t.Fatal("admin.yaml has no CA certificate")
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, MaxIdleConnsPerHost: 32}
	t.Cleanup(tr.CloseIdleConnections)
	return &apiClient{server: creds.Server, token: creds.Token, http: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

func (c *apiClient) do(ctx context.Context, method, path string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.server+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

const sitesPath = "/apis/core.outpost.dev/v1alpha1/sites"

type siteMeta struct {
	Metadata struct {
		Name            string `json:"name"`
		ResourceVersion string `json:"resourceVersion"`
	} `json:"metadata"`
}

// createSites creates n Sites labelled batch=label through the API with 16
// concurrent writers, each acknowledged with 201, and returns their
// resourceVersions by name.
func createSites(t *testing.T, c *apiClient, label string, n int) map[string]string {
	t.Helper()
	const workers = 16
	names := make(chan string)
	var mu sync.Mutex
	rvs := map[string]string{}
	var errs []error
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for name := range names {
				body := fmt.Sprintf(`{"apiVersion":"core.outpost.dev/v1alpha1","kind":"Site","metadata":{"name":%q,"labels":{"batch":%q}},"spec":{"location":"rack-%s"}}`, name, label, name)
				code, b, err := c.do(t.Context(), http.MethodPost, sitesPath, []byte(body))
				var s siteMeta
				if err == nil && code != http.StatusCreated {
					err = fmt.Errorf("create %s: %d %s", name, code, b)
				}
				if err == nil {
					err = json.Unmarshal(b, &s)
				}
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else {
					rvs[s.Metadata.Name] = s.Metadata.ResourceVersion
				}
				mu.Unlock()
			}
		})
	}
	for i := range n {
		names <- fmt.Sprintf("%s-%04d", label, i)
	}
	close(names)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d of %d creates failed; first: %v", len(errs), n, errs[0])
	}
	if len(rvs) != n {
		t.Fatalf("%d creates acknowledged, want %d", len(rvs), n)
	}
	return rvs
}

// checkSites lists the Sites labelled batch=label and fails the test unless
// they are exactly want, with the same resourceVersions.
func checkSites(t *testing.T, c *apiClient, label string, want map[string]string) {
	t.Helper()
	code, b, err := c.do(t.Context(), http.MethodGet, sitesPath+"?labelSelector=batch%3D"+label, nil)
	if err != nil || code != http.StatusOK {
		t.Fatalf("list sites: %d %s %v", code, b, err)
	}
	var list struct {
		Items []siteMeta `json:"items"`
	}
	if err := json.Unmarshal(b, &list); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, s := range list.Items {
		got[s.Metadata.Name] = s.Metadata.ResourceVersion
	}
	var missing, changed []string
	for name, rv := range want {
		switch g, ok := got[name]; {
		case !ok:
			missing = append(missing, name)
		case g != rv:
			changed = append(changed, fmt.Sprintf("%s: %s, acknowledged %s", name, g, rv))
		}
	}
	if len(missing) > 0 || len(changed) > 0 || len(got) != len(want) {
		slices.Sort(missing)
		t.Fatalf("after restart: %d sites, want %d; %d missing (%.5v), %d changed (%.5v)", len(got), len(want), len(missing), missing, len(changed), changed)
	}
}

// TestDurabilityKill9 checks that every acknowledged write survives the
// daemon being killed without warning.
func TestDurabilityKill9(t *testing.T) {
	t.Parallel()
	bin := outpostBinary(t)
	dir := t.TempDir()
	d := startDaemon(t, bin, dir)
	c := newAPIClient(t, d)

	start := time.Now()
	want := createSites(t, c, "kill", 1000)
	t.Logf("1000 concurrent creates took %s", time.Since(start))

	if err := d.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-d.exited

	d = startDaemon(t, bin, dir)
	c = newAPIClient(t, d)
	checkSites(t, c, "kill", want)

	// The restarted node takes writes again.
	code, b, err := c.do(t.Context(), http.MethodPost, sitesPath, []byte(`{"apiVersion":"core.outpost.dev/v1alpha1","kind":"Site","metadata":{"name":"after-restart"}}`))
	if err != nil || code != http.StatusCreated {
		t.Fatalf("create after restart: %d %s %v", code, b, err)
	}
}

// TestSIGTERM checks that SIGTERM stops the daemon cleanly, exit code 0,
// and that a restart recovers every write.
func TestSIGTERM(t *testing.T) {
	t.Parallel()
	bin := outpostBinary(t)
	dir := t.TempDir()
	d := startDaemon(t, bin, dir)
	c := newAPIClient(t, d)
	want := createSites(t, c, "term", 200)

	// The client's idle connections stay open, as a real client's would;
	// net/http's Shutdown waits up to 5s for ones that never carried a
	// request.
	stopStart := time.Now()
	if code := d.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("outpost node exited %d on SIGTERM, want 0\n%s", code, d.stderr.String())
	}
	if _, err := os.Stat(filepath.Join(dir, node.SocketName)); err == nil {
		t.Errorf("the control socket is still there after a clean stop")
	}

	t.Logf("SIGTERM to exit took %s", time.Since(stopStart))

	restart := time.Now()
	d = startDaemon(t, bin, dir)
	c = newAPIClient(t, d)
	checkSites(t, c, "term", want)
	t.Logf("restart and check took %s", time.Since(restart))
	if code := d.stop(t, os.Interrupt); code != 0 {
		t.Errorf("outpost node exited %d on SIGINT, want 0", code)
	}
}

// TestSecondDaemonOnDataDir checks that a second daemon refuses a data dir
// in use and says why.
func TestSecondDaemonOnDataDir(t *testing.T) {
	t.Parallel()
	bin := outpostBinary(t)
	d := startDaemon(t, bin, t.TempDir())
	r := runCLI(t, bin, "", "node", "--name", "other", "--data-dir", d.dir, "--api-addr", "127.0.0.1:0")
	if r.code == 0 || !strings.Contains(r.stderr, "in use") {
		t.Errorf("second node on %s: exit %d, %q; want an in-use error", d.dir, r.code, r.stderr)
	}
	if err := d.ready(); err != nil {
		t.Errorf("first node after the second was refused: %v", err)
	}
}
