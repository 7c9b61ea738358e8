package netlab

import (
	"context"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// needPing fails (not skips) without ping: CI must install iputils-ping.
func needPing(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("ping"); err != nil {
		t.Fatal("ping is needed: apt-get install -y --no-install-recommends iputils-ping")
	}
}

// ping sends one echo request from -> to, both inside the lab.
func ping(t *testing.T, from, to *Host) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	out, err := from.Command(ctx, "ping", "-n", "-c1", "-W1", to.IP()).CombinedOutput()
	if err != nil {
		return &pingError{from: from, to: to, out: string(out), err: err}
	}
	return nil
}

type pingError struct {
	from, to *Host
	out      string
	err      error
}

func (e *pingError) Error() string {
	return "ping " + e.from.String() + " -> " + e.to.String() + ": " + e.err.Error() + ": " + strings.TrimSpace(e.out)
}

func mustReach(t *testing.T, from, to *Host) {
	t.Helper()
	if err := ping(t, from, to); err != nil {
		t.Fatal(err)
	}
}

func mustNotReach(t *testing.T, from, to *Host) {
	t.Helper()
	if err := ping(t, from, to); err == nil {
		t.Fatalf("ping %s -> %s got through; want it dropped", from, to)
	}
}

func TestLabLinks(t *testing.T) {
	lab := New(t, "links")
	needPing(t)
	a, b, c := lab.AddHost("a"), lab.AddHost("b"), lab.AddHost("c")

	mustReach(t, a, b)
	mustReach(t, b, a)

	a.Cut()
	mustNotReach(t, a, b)
	mustNotReach(t, b, a)
	a.Restore()
	mustReach(t, a, b)
	mustReach(t, b, a)

	a.Block(b)
	a.Block(b) // idempotent
	mustNotReach(t, a, b)
	mustNotReach(t, b, a)
	mustReach(t, a, c)
	mustReach(t, c, b)
	a.Unblock(b)
	a.Unblock(b)
	mustReach(t, a, b)
	mustReach(t, b, a)

	a.LimitRate(10)
	out, err := a.Command(t.Context(), "tc", "qdisc", "show", "dev", "eth0").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "tbf") {
		t.Fatalf("tc qdisc show after LimitRate(10): %v: %s", err, out)
	}
	mustReach(t, a, b)
	a.LimitRate(0)
	out, _ = a.Command(t.Context(), "tc", "qdisc", "show", "dev", "eth0").CombinedOutput()
	if strings.Contains(string(out), "tbf") {
		t.Fatalf("tbf still set after LimitRate(0): %s", out)
	}
}

// TestLabStaysOutOfRootNamespace checks the network rule: the root
// namespace has no lab address, route or link, lab hosts have no default
// route, and every lab namespace is gone after cleanup.
func TestLabStaysOutOfRootNamespace(t *testing.T) {
	var prefix string
	var ips []string
	t.Run("lab", func(t *testing.T) {
		lab := New(t, "root-check")
		needPing(t)
		prefix = lab.Prefix()
		a := lab.AddHost("a")
		b := lab.AddHost("b")
		ips = []string{a.IP(), b.IP()}
		// Lab devices live in lab namespaces only; the root namespace's
		// own eth0 is not one of them.
		devs := map[string]bool{}
		for _, h := range lab.Hosts() {
			devs["v-"+h.Name()] = true
		}

		for _, ip := range ips {
			// ip route get sends nothing; it only asks the root routing table.
			out, err := exec.Command("ip", "-o", "route", "get", ip).CombinedOutput()
			t.Logf("root: ip route get %s: %s", ip, strings.TrimSpace(string(out)))
			if err == nil {
				for _, dev := range fieldAfter(string(out), "dev") {
					if devs[dev] || strings.HasPrefix(dev, prefix) {
						t.Errorf("root namespace routes lab address %s via lab device %s", ip, dev)
					}
				}
			}
		}
		if out, err := exec.Command("ip", "-o", "route", "show", "match", ips[0]).Output(); err != nil {
			t.Fatal(err)
		} else {
			for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				if strings.HasPrefix(line, "default") || line == "" {
					continue
				}
				t.Errorf("root namespace has a route covering lab address %s: %s", ips[0], line)
			}
		}
		if out, err := exec.Command("ip", "-o", "addr", "show", "to", lab.Subnet()).Output(); err != nil {
			t.Fatal(err)
		} else if s := strings.TrimSpace(string(out)); s != "" {
			t.Errorf("root namespace has a lab address: %s", s)
		}
		if out, err := exec.Command("ip", "-o", "link", "show").Output(); err != nil {
			t.Fatal(err)
		} else if strings.Contains(string(out), prefix) {
			t.Errorf("root namespace has a link named after lab %s:\n%s", prefix, out)
		}
		for _, h := range lab.Hosts() {
			out, err := exec.Command("ip", "-n", h.Namespace(), "route", "show", "default").Output()
			if err != nil {
				t.Fatal(err)
			}
			if s := strings.TrimSpace(string(out)); s != "" {
				t.Errorf("%s has a default route: %s", h, s)
			}
		}
		mustReach(t, a, b)
	})
	if prefix == "" {
		return // skipped
	}
	nss, err := listNamespaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range nss {
		if strings.HasPrefix(ns, prefix+"-") {
			t.Errorf("namespace %s outlived its lab", ns)
		}
	}
}

// fieldAfter returns every word that follows key in s.
func fieldAfter(s, key string) []string {
	var vals []string
	f := strings.Fields(s)
	for i := 0; i+1 < len(f); i++ {
		if f[i] == key {
			vals = append(vals, f[i+1])
		}
	}
	return vals
}

func TestProc(t *testing.T) {
	lab := New(t, "proc")
	h := lab.AddHost("p")

	p := h.Start("sh", "-c", "echo started; ip -o -4 addr show dev eth0; exec sleep 600")
	waitFor(t, func() bool { return strings.Contains(p.Log(), h.IP()+"/24") }, "the process to see eth0's address")
	out, err := exec.Command("ip", "netns", "identify", strconv.Itoa(p.PID())).Output()
	if err != nil || strings.TrimSpace(string(out)) != h.Namespace() {
		t.Fatalf("ip netns identify %d = %q, %v; want %s", p.PID(), out, err, h.Namespace())
	}

	if err := p.Stop(); err == nil || !strings.Contains(err.Error(), "terminated") {
		t.Fatalf("Stop of sleep = %v, want it ended by SIGTERM", err)
	}
	if p.Running() {
		t.Fatal("Running after Stop")
	}

	first := p.PID()
	p.Restart()
	if !p.Running() || p.PID() == first {
		t.Fatalf("Restart: running %v, pid %d (was %d)", p.Running(), p.PID(), first)
	}
	waitFor(t, func() bool { return strings.Count(p.Log(), "\nstarted\n") == 2 }, "the second run's output")

	p.Kill()
	if err := p.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("Wait after Kill = %v, want killed", err)
	}
	if got := p.Tail(1); !strings.Contains(got, "exited") {
		t.Fatalf("Tail(1) = %q, want the exit line", got)
	}

	// A process left running is killed by the lab's cleanup.
	h.Start("sleep", "600")
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestSweepRemovesStaleLab plays a crashed run: namespaces and a lock file
// of a lab whose owner is gone. The next New deletes them.
func TestSweepRemovesStaleLab(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	const stale = "opfff0" // in the lab family; no live lab can hold it during this test
	if f, err := tryLock(lockPath(stale)); err != nil || f == nil {
		t.Skipf("prefix %s is held by a live lab (%v)", stale, err)
	} else {
		f.Close() // the lock dies with the "crashed" owner; the file stays
	}
	for _, ns := range []string{stale + "-sw", stale + "-h1"} {
		if err := run("ip", "netns", "add", ns); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _ = removeLab(stale); os.Remove(lockPath(stale)) })

	New(t, "sweep")

	nss, err := listNamespaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range nss {
		if strings.HasPrefix(ns, stale+"-") {
			t.Errorf("stale namespace %s survived the sweep", ns)
		}
	}
	if _, err := os.Stat(lockPath(stale)); !os.IsNotExist(err) {
		t.Errorf("stale lock file %s survived the sweep (%v)", lockPath(stale), err)
	}
}
