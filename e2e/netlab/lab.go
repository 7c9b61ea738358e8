package netlab

import (
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	// switchHost is the name part of the switch namespace: <prefix>-sw.
	switchHost = "sw"
	// bridgeName is the bridge inside the switch namespace.
	bridgeName = "br0"
	// maxHostName keeps <prefix>-<name> within the kernel's 15 characters.
	maxHostName = 8
	// maxHosts is how many addresses of the /24 a lab hands out (.1 up).
	maxHosts = 250
	// killWait bounds how long cleanup waits for a killed process to go.
	killWait = 10 * time.Second
	// logTail is how many lines of each process's log a failed test prints.
	logTail = 50
)

// lockDir holds one lock file per live lab, <prefix>.lock, flocked by the
// process that owns the lab. The kernel drops the lock when that process
// dies, which is how the sweep tells a crashed lab from a running one.
const lockDir = "/run/outpost-netlab"

// labName matches the names of lab namespaces and captures the lab prefix:
// "op", four hex digits, "-", the host name.
var labName = regexp.MustCompile(`^(op[0-9a-f]{4})-`)

// hostName is what AddHost accepts.
var hostName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)

// Lab is a switch and the hosts plugged into it. Its methods call t.Fatal,
// so call them from the test's goroutine.
type Lab struct {
	t      testing.TB
	name   string
	prefix string // "op" + 4 hex digits, unique among live labs
	subnet string // "10.213.X"
	logDir string
	lock   *os.File

	mu     sync.Mutex
	nss    []string // namespaces created, switch first
	hosts  []*Host
	procs  []*Proc
	closed bool
}

// New creates a lab for t: a namespace <prefix>-sw holding the bridge, and
// no hosts yet. name only labels the lab in logs and seeds its prefix. It
// first deletes labs that crashed runs left behind. It skips the test if it
// is not run as root or iproute2's ip is missing. Everything the lab makes
// is torn down by a cleanup registered on t, also when the test fails.
func New(t testing.TB, name string) *Lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("netlab: needs root to create network namespaces; run the test as root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("netlab: needs the ip command of iproute2 (apt-get install iproute2)")
	}
	if err := os.MkdirAll(lockDir, 0o700); err != nil {
		t.Fatalf("netlab: %v", err)
	}
	sweepStale(t)

	// The first TempDir registers its removal before our cleanup, so the
	// logs still exist when a failed test prints them.
	l := &Lab{t: t, name: name, logDir: t.TempDir()}
	prefix, lock, err := claimPrefix(name)
	if err != nil {
		t.Fatalf("netlab: %v", err)
	}
	l.prefix, l.lock = prefix, lock
	l.subnet = fmt.Sprintf("10.213.%d", subnetOctet(prefix))
	t.Cleanup(l.close)

	sw := l.nsName(switchHost)
	l.mustIP("netns", "add", sw)
	l.mu.Lock()
	l.nss = append(l.nss, sw)
	l.mu.Unlock()
	l.mustIP("-n", sw, "link", "set", "lo", "up")
	l.mustIP("-n", sw, "link", "add", bridgeName, "type", "bridge")
	l.mustIP("-n", sw, "link", "set", bridgeName, "up")
	t.Logf("netlab: lab %q is %s, subnet %s.0/24, logs in %s", name, prefix, l.subnet, l.logDir)
	return l
}

// Prefix is the lab's unique name prefix: its namespaces are <prefix>-<host>.
func (l *Lab) Prefix() string { return l.prefix }

// Subnet is the lab's IPv4 subnet in CIDR notation, 10.213.X.0/24.
func (l *Lab) Subnet() string { return l.subnet + ".0/24" }

// SwitchNamespace is the namespace that holds the lab's bridge.
func (l *Lab) SwitchNamespace() string { return l.nsName(switchHost) }

// Hosts returns the lab's hosts in the order they were added.
func (l *Lab) Hosts() []*Host {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*Host(nil), l.hosts...)
}

func (l *Lab) nsName(host string) string { return l.prefix + "-" + host }

// mustIP runs ip with args and fails the test if it fails.
func (l *Lab) mustIP(args ...string) {
	l.t.Helper()
	if err := run("ip", args...); err != nil {
		l.t.Fatalf("netlab: %v", err)
	}
}

// close kills the lab's processes, prints their logs if the test failed,
// and deletes the namespaces, hosts before the switch.
func (l *Lab) close() {
	l.mu.Lock()
	l.closed = true
	procs := append([]*Proc(nil), l.procs...)
	nss := append([]string(nil), l.nss...)
	l.mu.Unlock()

	for _, p := range procs {
		if err := p.killWithin(killWait); err != nil {
			l.t.Errorf("netlab: %v", err)
		}
	}
	if l.t.Failed() {
		for _, p := range procs {
			l.t.Logf("netlab: --- %s: last %d lines of %s ---\n%s", p, logTail, p.LogPath(), p.Tail(logTail))
		}
	}
	for i := len(nss) - 1; i >= 0; i-- {
		if err := deleteNamespace(nss[i]); err != nil {
			l.t.Errorf("netlab: %v", err)
		}
	}
	if l.lock != nil {
		os.Remove(lockPath(l.prefix))
		l.lock.Close()
	}
}

// claimPrefix picks a prefix no live lab holds and locks it. A prefix with
// namespaces but no live owner is cleaned and reused.
func claimPrefix(name string) (string, *os.File, error) {
	h := fnv.New32a()
	fmt.Fprintf(h, "%s/%d/%d", name, os.Getpid(), time.Now().UnixNano())
	seed := h.Sum32()
	for i := uint32(0); i < 256; i++ {
		prefix := fmt.Sprintf("op%04x", (seed+i*0x9e37)&0xffff)
		f, err := tryLock(lockPath(prefix))
		if err != nil {
			return "", nil, err
		}
		if f == nil {
			continue // a live lab holds it
		}
		if err := removeLab(prefix); err != nil {
			f.Close()
			return "", nil, err
		}
		fmt.Fprintf(f, "pid %d lab %q\n", os.Getpid(), name)
		return prefix, f, nil
	}
	return "", nil, errors.New("no free lab prefix after 256 tries")
}

// subnetOctet derives X of 10.213.X.0/24 from the prefix. Labs are isolated
// from each other anyway (each has its own switch), so equal X in two labs
// is harmless; distinct ones only make logs easier to read.
func subnetOctet(prefix string) int {
	h := fnv.New32a()
	h.Write([]byte(prefix))
	return int(h.Sum32()%254) + 1
}

func lockPath(prefix string) string { return filepath.Join(lockDir, prefix+".lock") }

// tryLock opens and flocks path without blocking. It returns nil, nil if
// another process holds the lock.
func tryLock(path string) (*os.File, error) {
	for {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("open lock: %w", err)
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				return nil, nil
			}
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		// A sweeper may have removed the file between open and flock: then
		// this lock guards nothing, so take the lock again on a fresh file.
		var held, onDisk syscall.Stat_t
		if syscall.Fstat(int(f.Fd()), &held) == nil && syscall.Stat(path, &onDisk) == nil && held.Ino == onDisk.Ino {
			if err := f.Truncate(0); err != nil {
				f.Close()
				return nil, err
			}
			return f, nil
		}
		f.Close()
	}
}

// sweepStale deletes the labs whose owners are gone: lab namespaces, and
// lock files, whose lock nobody holds.
func sweepStale(t testing.TB) {
	t.Helper()
	prefixes := map[string]bool{}
	nss, err := listNamespaces()
	if err != nil {
		t.Fatalf("netlab: %v", err)
	}
	for _, ns := range nss {
		if m := labName.FindStringSubmatch(ns); m != nil {
			prefixes[m[1]] = true
		}
	}
	if entries, err := os.ReadDir(lockDir); err == nil {
		for _, e := range entries {
			if p, ok := strings.CutSuffix(e.Name(), ".lock"); ok {
				prefixes[p] = true
			}
		}
	}
	for p := range prefixes {
		f, err := tryLock(lockPath(p))
		if err != nil {
			t.Fatalf("netlab: %v", err)
		}
		if f == nil {
			continue // its lab is alive
		}
		err = removeLab(p)
		os.Remove(lockPath(p))
		f.Close()
		if err != nil {
			t.Fatalf("netlab: remove stale lab %s: %v", p, err)
		}
	}
}

// removeLab deletes every namespace of the lab with this prefix, hosts
// first, and any root-namespace link named after it (netlab creates none
// there, but a run killed halfway through an `ip link add` could leave one).
func removeLab(prefix string) error {
	nss, err := listNamespaces()
	if err != nil {
		return err
	}
	var errs []error
	sw := prefix + "-" + switchHost
	found := false
	for _, ns := range nss {
		if strings.HasPrefix(ns, prefix+"-") {
			if ns == sw {
				found = true
				continue
			}
			errs = append(errs, deleteNamespace(ns))
		}
	}
	if found {
		errs = append(errs, deleteNamespace(sw))
	}
	links, err := output("ip", "-o", "link", "show")
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, line := range strings.Split(links, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		link, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		if strings.HasPrefix(link, prefix) {
			errs = append(errs, run("ip", "link", "del", link))
		}
	}
	return errors.Join(errs...)
}

// listNamespaces returns the names of the named network namespaces.
func listNamespaces() ([]string, error) {
	out, err := output("ip", "netns", "list")
	if err != nil {
		return nil, err
	}
	var nss []string
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			nss = append(nss, f[0])
		}
	}
	return nss, nil
}

// deleteNamespace kills what still runs in ns (only lab processes can: the
// namespace is the lab's) and deletes it. A namespace still held by a
// process would outlive its name.
func deleteNamespace(ns string) error {
	if pids, err := output("ip", "netns", "pids", ns); err == nil {
		for _, f := range strings.Fields(pids) {
			var pid int
			if _, err := fmt.Sscan(f, &pid); err == nil && pid > 1 && pid != os.Getpid() {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	if err := run("ip", "netns", "del", ns); err != nil {
		if nss, lerr := listNamespaces(); lerr == nil && !contains(nss, ns) {
			return nil // already gone
		}
		return err
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// run runs a command and returns an error that quotes its output.
func run(name string, args ...string) error {
	_, err := output(name, args...)
	return err
}

// output runs a command and returns its stdout; the error quotes stderr.
func output(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}
