package gossip

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"
)

// The in-process pool: Gossips on 127.0.0.1 with port 0 and the tight
// timings of STYLE.md (probe every 100 ms).

// waitLong bounds every wait; it only turns a hang into a failure and is
// never a performance claim.
const waitLong = 20 * time.Second

// eventually polls f every 5 ms until it returns nil, and fails the test
// with f's last error when timeout passes first.
func eventually(t testing.TB, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %v", timeout, err)
		}
		<-tick.C
	}
}

// newKey returns a random site key.
func newKey(t testing.TB) []byte {
	t.Helper()
	k := make([]byte, KeySize)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

// testLogger discards, unless GOSSIP_TEST_LOG is set: then it writes to
// stderr (t.Log would panic on memberlist's last lines after the test).
func testLogger() *slog.Logger {
	if os.Getenv("GOSSIP_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// testConfig is a member of site with tight timings, on 127.0.0.1:0.
func testConfig(name, site string, key []byte, join ...string) Config {
	c := DefaultConfig()
	c.Meta.Name = name
	c.Meta.Site = site
	c.Meta.Role = "edge"
	c.Meta.Version = "v0.1.0"
	c.Meta.QUICAddr = "127.0.0.1:7443"
	c.Meta.Labels = map[string]string{"zone": "z1", "node": name}
	c.BindAddr = "127.0.0.1"
	c.BindPort = 0
	c.Key = key
	c.Join = join
	c.ProbeInterval = 100 * time.Millisecond
	c.ProbeTimeout = 50 * time.Millisecond
	c.GossipInterval = 20 * time.Millisecond
	c.PushPullInterval = 500 * time.Millisecond
	c.TCPTimeout = time.Second
	c.JoinBackoff = 20 * time.Millisecond
	c.JoinBackoffMax = 200 * time.Millisecond
	c.BroadcastTimeout = 2 * time.Second
	c.Logger = testLogger()
	return c
}

// node is a running Gossip with the events it has delivered.
type node struct {
	*Gossip
	cancel context.CancelFunc
	eg     *errgroup.Group
	done   chan struct{} // closed when Run has returned

	stopOnce sync.Once
	runErr   error

	evMu sync.Mutex
	evs  []Event
}

// start runs a Gossip for cfg until the test ends, and waits for Ready.
func start(t *testing.T, cfg Config) *node {
	t.Helper()
	n := startNoWait(t, cfg)
	select {
	case <-n.Ready():
	case <-n.done:
		t.Fatalf("%s: Run returned before Ready: %v", cfg.Meta.Name, n.stop())
	case <-time.After(waitLong):
		t.Fatalf("%s: not ready after %v", cfg.Meta.Name, waitLong)
	}
	return n
}

// startNoWait runs a Gossip for cfg until the test ends.
func startNoWait(t *testing.T, cfg Config) *node {
	t.Helper()
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &node{Gossip: g, cancel: cancel, eg: &errgroup.Group{}, done: make(chan struct{})}
	n.eg.Go(func() error {
		defer close(n.done)
		return g.Run(ctx)
	})
	n.eg.Go(func() error {
		for ev := range g.Events() { // closed when Run returns
			n.evMu.Lock()
			n.evs = append(n.evs, ev)
			n.evMu.Unlock()
		}
		return nil
	})
	t.Cleanup(func() {
		if err := n.stop(); err != nil {
			t.Errorf("%s: Run: %v", cfg.Meta.Name, err)
		}
	})
	return n
}

// stop cancels Run and waits for it; it may be called more than once.
func (n *node) stop() error {
	n.stopOnce.Do(func() {
		n.cancel()
		n.runErr = n.eg.Wait()
	})
	return n.runErr
}

// kill stops n without leaving, as a crash would.
func (n *node) kill() error {
	n.crash.Store(true)
	return n.stop()
}

// events returns the events n has delivered so far about member name.
func (n *node) events(name string) []Event {
	n.evMu.Lock()
	defer n.evMu.Unlock()
	var out []Event
	for _, ev := range n.evs {
		if ev.Member.Name == name {
			out = append(out, ev)
		}
	}
	return out
}

// member returns n's view of the member called name.
func (n *node) member(name string) (Member, bool) {
	for _, m := range n.Members() {
		if m.Name == name {
			return m, true
		}
	}
	return Member{}, false
}

// stateOf returns n's view of name's state, or "" if n does not know it.
func (n *node) stateOf(name string) State {
	m, _ := n.member(name)
	return m.State
}

// newPool starts size members of a site, the first alone and the others
// joining it, and waits until every member sees all of them alive.
func newPool(t *testing.T, site string, size int, tweak func(*Config)) ([]*node, []byte) {
	t.Helper()
	key := newKey(t)
	var nodes []*node
	for i := range size {
		var seeds []string
		if i > 0 {
			seeds = []string{nodes[0].Addr()}
		}
		cfg := testConfig(fmt.Sprintf("%s-%d", site, i), site, key, seeds...)
		if tweak != nil {
			tweak(&cfg)
		}
		nodes = append(nodes, start(t, cfg))
	}
	for _, n := range nodes {
		eventually(t, waitLong, func() error {
			if n.NumAlive() != size {
				return fmt.Errorf("%s sees %s, want %d alive", n.Local().Name, names(n.Members()), size)
			}
			return nil
		})
	}
	return nodes, key
}

// names lists members as name=state.
func names(ms []Member) string {
	var parts []string
	for _, m := range ms {
		parts = append(parts, m.Name+"="+string(m.State))
	}
	return strings.Join(parts, ",")
}

// barrier updates from's Version to tag and waits until every node in to
// sees it: gossip has flowed from from to each of them since the call.
func barrier(t *testing.T, tag string, from *node, to ...*node) {
	t.Helper()
	m := from.Local().Meta
	m.Version = tag
	if err := from.UpdateMeta(m); err != nil {
		t.Fatal(err)
	}
	for _, n := range to {
		eventually(t, waitLong, func() error {
			if got, _ := n.member(m.Name); got.Version != tag {
				return fmt.Errorf("%s sees %s at version %q, want %q", n.Local().Name, m.Name, got.Version, tag)
			}
			return nil
		})
	}
}
