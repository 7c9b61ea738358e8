package netlab

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
)

// Host is a network namespace plugged into the lab's switch: eth0 with one
// address of the lab's subnet, lo, and no default route.
type Host struct {
	lab  *Lab
	name string
	ns   string
	ip   string

	mu      sync.Mutex
	blocked map[string]bool // IPs dropped by Block
}

// AddHost creates the namespace <prefix>-<name>, a veth pair with eth0 in
// it (the lab's next address, /24) and the other end on the switch's
// bridge, and brings lo and eth0 up. name is 1 to 8 of [a-z0-9-], unique in
// the lab.
func (l *Lab) AddHost(name string) *Host {
	l.t.Helper()
	if !hostName.MatchString(name) || len(name) > maxHostName || name == switchHost {
		l.t.Fatalf("netlab: host name %q: use 1 to %d of [a-z0-9-], not %q", name, maxHostName, switchHost)
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		l.t.Fatalf("netlab: AddHost(%q) after the lab was closed", name)
	}
	for _, h := range l.hosts {
		if h.name == name {
			l.mu.Unlock()
			l.t.Fatalf("netlab: host %q added twice", name)
		}
	}
	if len(l.hosts) >= maxHosts {
		l.mu.Unlock()
		l.t.Fatalf("netlab: a lab has at most %d hosts", maxHosts)
	}
	h := &Host{lab: l, name: name, ns: l.nsName(name), blocked: map[string]bool{}}
	h.ip = fmt.Sprintf("%s.%d", l.subnet, len(l.hosts)+1)
	l.hosts = append(l.hosts, h)
	l.mu.Unlock()

	l.mustIP("netns", "add", h.ns)
	l.mu.Lock()
	l.nss = append(l.nss, h.ns)
	l.mu.Unlock()
	// Both ends are created directly in their namespaces: nothing appears in
	// the root namespace, not even for a moment.
	port := "v-" + name
	sw := l.nsName(switchHost)
	l.mustIP("link", "add", "name", "eth0", "netns", h.ns, "type", "veth", "peer", "name", port, "netns", sw)
	l.mustIP("-n", sw, "link", "set", port, "master", bridgeName)
	l.mustIP("-n", sw, "link", "set", port, "up")
	l.mustIP("-n", h.ns, "addr", "add", h.ip+"/24", "dev", "eth0")
	l.mustIP("-n", h.ns, "link", "set", "lo", "up")
	l.mustIP("-n", h.ns, "link", "set", "eth0", "up")
	return h
}

// Name is the host's name as given to AddHost.
func (h *Host) Name() string { return h.name }

// Namespace is the name of the host's network namespace.
func (h *Host) Namespace() string { return h.ns }

// IP is the host's address on eth0, without the prefix length.
func (h *Host) IP() string { return h.ip }

// String names the host and its address for logs.
func (h *Host) String() string { return h.name + "(" + h.ip + ")" }

// Cut takes eth0 down: the host can reach nothing but itself.
func (h *Host) Cut() {
	h.lab.t.Helper()
	h.lab.mustIP("-n", h.ns, "link", "set", "eth0", "down")
}

// Restore brings eth0 back up after Cut.
func (h *Host) Restore() {
	h.lab.t.Helper()
	h.lab.mustIP("-n", h.ns, "link", "set", "eth0", "up")
}

// Block drops every packet between h and other, both ways, with iptables
// rules in h's namespace. Other hosts still reach both. Blocking twice is a
// no-op.
func (h *Host) Block(other *Host) {
	h.lab.t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.blocked[other.ip] {
		return
	}
	h.iptables("-I", "INPUT", "-s", other.ip, "-j", "DROP")
	h.iptables("-I", "OUTPUT", "-d", other.ip, "-j", "DROP")
	h.blocked[other.ip] = true
}

// Unblock removes the rules of Block. Unblocking a host not blocked is a
// no-op.
func (h *Host) Unblock(other *Host) {
	h.lab.t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.blocked[other.ip] {
		return
	}
	h.iptables("-D", "INPUT", "-s", other.ip, "-j", "DROP")
	h.iptables("-D", "OUTPUT", "-d", other.ip, "-j", "DROP")
	delete(h.blocked, other.ip)
}

func (h *Host) iptables(args ...string) {
	h.lab.t.Helper()
	if _, err := exec.LookPath("iptables"); err != nil {
		h.lab.t.Fatalf("netlab: Block needs iptables (apt-get install iptables)")
	}
	// -w: the xtables lock in /run is shared by every namespace.
	if err := run("ip", append([]string{"netns", "exec", h.ns, "iptables", "-w", "5"}, args...)...); err != nil {
		h.lab.t.Fatalf("netlab: %v", err)
	}
}

// LimitRate caps what eth0 sends to mbit Mbit/s with a tbf qdisc; mbit <= 0
// removes the cap. The cap is on egress only: limit both hosts of a link to
// cap it both ways.
func (h *Host) LimitRate(mbit int) {
	h.lab.t.Helper()
	if _, err := exec.LookPath("tc"); err != nil {
		h.lab.t.Fatalf("netlab: LimitRate needs tc (apt-get install iproute2)")
	}
	tc := []string{"netns", "exec", h.ns, "tc", "qdisc"}
	if mbit <= 0 {
		_ = run("ip", append(tc, "del", "dev", "eth0", "root")...) // none set is fine
		return
	}
	// The bucket must hold at least one timer tick of traffic (HZ may be
	// 100) and a few full-size packets.
	burst := max(mbit*1_000_000/8/100, 32*1024)
	args := append(tc, "replace", "dev", "eth0", "root", "tbf",
		"rate", strconv.Itoa(mbit)+"mbit", "burst", strconv.Itoa(burst), "latency", "50ms")
	if err := run("ip", args...); err != nil {
		h.lab.t.Fatalf("netlab: %v", err)
	}
}

// Command returns a command that runs name with args inside the host's
// namespace (`ip netns exec NS name args...`). ip execs name, so the
// command's process is name itself and ctx's cancellation kills it.
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.ns, name}, args...)...)
}

// Start runs name with args in the host's namespace as a long-running
// process, its stdout and stderr appended to a log file of the lab. The
// lab's cleanup kills it if it still runs, and prints its log's tail if the
// test failed.
func (h *Host) Start(name string, args ...string) *Proc {
	l := h.lab
	l.t.Helper()
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		l.t.Fatalf("netlab: Start(%q) on %s after the lab was closed", name, h.name)
	}
	p := &Proc{host: h, name: name, args: args}
	p.logPath = filepath.Join(l.logDir, fmt.Sprintf("%02d-%s-%s.log", len(l.procs)+1, h.name, filepath.Base(name)))
	l.procs = append(l.procs, p)
	l.mu.Unlock()
	if err := p.start(); err != nil {
		l.t.Fatalf("netlab: %v", err)
	}
	return p
}
