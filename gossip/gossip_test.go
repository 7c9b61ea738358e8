package gossip

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"golang.org/x/sync/errgroup"
)

func TestPoolFormsAndCarriesMeta(t *testing.T) {
	t.Parallel()
	nodes, _ := newPool(t, "form", 3, func(c *Config) {
		c.Meta.RaftVoter = strings.HasSuffix(c.Meta.Name, "-0")
		c.Meta.APIAddr = "127.0.0.1:7080"
	})
	want := map[string]Member{}
	for _, n := range nodes {
		l := n.Local()
		if l.State != Alive || l.Addr != n.Addr() {
			t.Fatalf("%s: Local() = %+v, Addr() = %q", l.Name, l, n.Addr())
		}
		if host, port, err := net.SplitHostPort(l.Addr); err != nil || host != "127.0.0.1" || port == "0" {
			t.Fatalf("%s: Addr() = %q, want 127.0.0.1 and the picked port", l.Name, l.Addr)
		}
		want[l.Name] = l
	}
	for _, n := range nodes {
		got := n.Members()
		if !slices.IsSortedFunc(got, func(a, b Member) int { return strings.Compare(a.Name, b.Name) }) {
			t.Errorf("%s: Members() not sorted: %s", n.Local().Name, names(got))
		}
		if len(got) != len(want) {
			t.Fatalf("%s: Members() = %s, want %d", n.Local().Name, names(got), len(want))
		}
		for _, m := range got {
			w := want[m.Name]
			if m.State != Alive || m.Addr != w.Addr || !m.Meta.equal(w.Meta) {
				t.Errorf("%s sees %+v, want %+v", n.Local().Name, m, w)
			}
			if m.RaftVoter != (m.Name == "form-0") || m.APIAddr != "127.0.0.1:7080" || m.Labels["node"] != m.Name {
				t.Errorf("%s sees meta %+v", n.Local().Name, m.Meta)
			}
			// Member looks one up as Members lists it.
			if one, ok := n.Member(m.Name); !ok || one.State != m.State || one.Addr != m.Addr || !one.Meta.equal(m.Meta) {
				t.Errorf("%s: Member(%s) = %+v, %v; Members has %+v", n.Local().Name, m.Name, one, ok, m)
			}
		}
		if m, ok := n.Member("form-9"); ok {
			t.Errorf("%s: Member(form-9) = %+v, want none", n.Local().Name, m)
		}
		// Every member arrives as a join, this node included.
		for name := range want {
			eventually(t, waitLong, func() error {
				if evs := n.events(name); len(evs) == 0 || evs[0].Type != EventJoin {
					return fmt.Errorf("%s: events about %s = %v, want a join first", n.Local().Name, name, evs)
				}
				return nil
			})
		}
	}
	// Members hands out copies.
	ms := nodes[0].Members()
	ms[0].Labels["zone"] = "mutated"
	if nodes[0].Members()[0].Labels["zone"] != "z1" {
		t.Error("Members() shares its label maps with the table")
	}
}

func TestUpdateMetaPropagates(t *testing.T) {
	t.Parallel()
	nodes, _ := newPool(t, "upd", 3, nil)
	m := nodes[0].Local().Meta
	m.Version = "v0.2.0"
	m.Labels = map[string]string{"zone": "z2", "gpu": "yes"}
	m.RaftVoter = true
	if err := nodes[0].UpdateMeta(m); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		eventually(t, waitLong, func() error {
			got, _ := n.member(m.Name)
			if !got.Meta.equal(m) {
				return fmt.Errorf("%s sees %+v, want %+v", n.Local().Name, got.Meta, m)
			}
			for _, ev := range n.events(m.Name) {
				if ev.Type == EventUpdate && ev.Member.Meta.equal(m) {
					return nil
				}
			}
			return fmt.Errorf("%s: no update event: %v", n.Local().Name, n.events(m.Name))
		})
	}

	bad := m
	bad.Name = "renamed"
	if err := nodes[0].UpdateMeta(bad); err == nil {
		t.Error("UpdateMeta renamed the node")
	}
}

func TestUpdateMetaBeforeAndAfterRun(t *testing.T) {
	t.Parallel()
	key := newKey(t)
	first := start(t, testConfig("ba-0", "ba", key))
	cfg := testConfig("ba-1", "ba", key, first.Addr())
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m := cfg.Meta
	m.Version = "v9"
	if err := g.UpdateMeta(m); err != nil {
		t.Fatalf("UpdateMeta before Run: %v", err)
	}
	if got := g.Local(); got.Version != "v9" || got.State != "" || got.Addr != "" {
		t.Fatalf("Local() before Run = %+v", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var eg errgroup.Group
	eg.Go(func() error { return g.Run(ctx) })
	t.Cleanup(func() { cancel(); _ = eg.Wait() }) // if the test fails early
	<-g.Ready()
	eventually(t, waitLong, func() error {
		if got, _ := first.member("ba-1"); got.Version != "v9" {
			return fmt.Errorf("ba-0 sees ba-1 as %+v", got)
		}
		return nil
	})
	cancel()
	if err := eg.Wait(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if err := g.UpdateMeta(m); !errors.Is(err, ErrNotRunning) {
		t.Errorf("UpdateMeta after Run = %v, want ErrNotRunning", err)
	}
	if err := g.Run(context.Background()); !errors.Is(err, ErrAlreadyRun) {
		t.Errorf("second Run = %v, want ErrAlreadyRun", err)
	}
	for range g.Events() { // holds the run's events, then is closed
	}
}

func TestGracefulLeaveIsLeft(t *testing.T) {
	t.Parallel()
	nodes, _ := newPool(t, "leave", 3, nil)
	leaver := nodes[2]
	name := leaver.Local().Name
	if err := leaver.stop(); err != nil {
		t.Fatal(err)
	}
	if got := leaver.Local().State; got != Left {
		t.Errorf("the leaver's Local().State = %q, want %q", got, Left)
	}
	for _, n := range nodes[:2] {
		eventually(t, waitLong, func() error {
			if s := n.stateOf(name); s != Left {
				return fmt.Errorf("%s sees %s as %q", n.Local().Name, name, s)
			}
			return nil
		})
		var evs []Event
		eventually(t, waitLong, func() error {
			evs = n.events(name)
			if len(evs) == 0 {
				return fmt.Errorf("%s: no events about %s", n.Local().Name, name)
			}
			if last := evs[len(evs)-1]; last.Type != EventLeave || last.Member.State != Left {
				return fmt.Errorf("%s: last event about %s = %+v, want a leave in state left", n.Local().Name, name, last)
			}
			return nil
		})
		for _, ev := range evs {
			if ev.Type == EventSuspect {
				t.Errorf("%s suspected %s, which left gracefully", n.Local().Name, name)
			}
		}
		if got := n.NumAlive(); got != 2 {
			t.Errorf("%s: NumAlive() = %d, want 2", n.Local().Name, got)
		}
	}
}

func TestCrashIsSuspectThenDead(t *testing.T) {
	t.Parallel()
	// A suspicion lasts at least SuspicionMult probe intervals here (2.5 s),
	// long enough for both survivors to probe the dead member themselves,
	// each probe visiting it at least every other interval, and longer
	// than a suspicion stands before it is checked (refuteGrace): a crashed
	// member must stay suspect until it is dead.
	nodes, _ := newPool(t, "crash", 3, func(c *Config) { c.SuspicionMult = 25 })
	victim := nodes[2]
	name := victim.Local().Name
	if err := victim.kill(); err != nil {
		t.Fatal(err)
	}
	var eg errgroup.Group
	for _, n := range nodes[:2] {
		eg.Go(func() error {
			var seen []State
			deadline := time.Now().Add(waitLong)
			for time.Now().Before(deadline) {
				s := n.stateOf(name)
				if len(seen) == 0 || seen[len(seen)-1] != s {
					seen = append(seen, s)
				}
				if s == Dead {
					break
				}
				time.Sleep(2 * time.Millisecond)
			}
			if !slices.Equal(seen, []State{Alive, Suspect, Dead}) {
				return fmt.Errorf("%s saw %s go through %v, want alive, suspect, dead", n.Local().Name, name, seen)
			}
			return nil
		})
	}
	if err := eg.Wait(); err != nil {
		t.Error(err)
	}
	for _, n := range nodes[:2] {
		waitEvents(t, n, name, "join/alive", "suspect/suspect", "leave/dead")
		m, _ := n.member(name)
		if m.Since.IsZero() || time.Since(m.Since) > waitLong {
			t.Errorf("%s: dead member's Since = %v", n.Local().Name, m.Since)
		}
	}
}

// TestDeafMemberSuspectedThenAlive cuts a member off (it drops every packet
// and stream it receives) until both others suspect it, then lets it hear
// again: it is alive again at both, never dead.
func TestDeafMemberSuspectedThenAlive(t *testing.T) {
	t.Parallel()
	nodes, _ := newPool(t, "deaf", 3, func(c *Config) { c.SuspicionMult = 50 }) // 5 s at least
	victim := nodes[2]
	name := victim.Local().Name
	victim.deaf.Store(true)
	for _, n := range nodes[:2] {
		eventually(t, waitLong, func() error {
			if s := n.stateOf(name); s != Suspect {
				return fmt.Errorf("%s holds %s %s", n.Local().Name, name, s)
			}
			return nil
		})
	}
	victim.deaf.Store(false)
	for _, n := range nodes[:2] {
		waitEvents(t, n, name, "join/alive", "suspect/suspect", "alive/alive")
	}
}

// waitEvents waits until n's events about member name are want, each as
// type/state.
func waitEvents(t *testing.T, n *node, name string, want ...string) {
	t.Helper()
	eventually(t, waitLong, func() error {
		var types []string
		for _, ev := range n.events(name) {
			types = append(types, ev.Type.String()+"/"+string(ev.Member.State))
		}
		if !slices.Equal(types, want) {
			return fmt.Errorf("%s: events about %s = %v, want %v", n.Local().Name, name, types, want)
		}
		return nil
	})
}

// recorder is a slog handler that keeps the messages it is given.
type recorder struct {
	mu   sync.Mutex
	msgs []string
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, rec.Message)
	return nil
}
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *recorder) WithGroup(string) slog.Handler      { return r }

func (r *recorder) count(prefix string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, m := range r.msgs {
		if strings.HasPrefix(m, prefix) {
			n++
		}
	}
	return n
}

// joinNow has g's memberlist join addrs once, as Run's retries do.
func joinNow(g *Gossip, addrs ...string) error {
	g.mlMu.RLock()
	defer g.mlMu.RUnlock()
	if g.ml == nil {
		return ErrNotRunning
	}
	_, err := g.ml.Join(addrs)
	return err
}

// assertNeverSeen checks that none of nodes has a member or an event named
// name.
func assertNeverSeen(t *testing.T, name string, nodes ...*node) {
	t.Helper()
	for _, n := range nodes {
		if m, ok := n.member(name); ok {
			t.Errorf("%s lists %+v", n.Local().Name, m)
		}
		if evs := n.events(name); len(evs) > 0 {
			t.Errorf("%s has events about %s: %v", n.Local().Name, name, evs)
		}
	}
}

func TestWrongKeyCannotJoin(t *testing.T) {
	t.Parallel()
	nodes, _ := newPool(t, "wk", 2, nil)
	rec := &recorder{}
	cfg := testConfig("wk-intruder", "wk", newKey(t), nodes[0].Addr(), nodes[1].Addr())
	cfg.Logger = slog.New(rec)
	intruder := start(t, cfg)
	// Run keeps retrying the seeds...
	eventually(t, waitLong, func() error {
		if n := rec.count("join gossip pool failed"); n < 3 {
			return fmt.Errorf("%d failed join rounds so far", n)
		}
		return nil
	})
	// ...and a direct attempt, either way round, fails too.
	if err := joinNow(intruder.Gossip, nodes[0].Addr()); err == nil {
		t.Error("a member with another key joined")
	}
	if err := joinNow(nodes[0].Gossip, intruder.Addr()); err == nil {
		t.Error("a member joined one with another key")
	}
	// Once gossip has flowed through the pool, still no trace of it.
	barrier(t, "after-intruder", nodes[0], nodes[1])
	assertNeverSeen(t, "wk-intruder", nodes...)
	if got := intruder.Members(); len(got) != 1 {
		t.Errorf("the intruder sees %s", names(got))
	}
}

func TestPlaintextCannotJoin(t *testing.T) {
	t.Parallel()
	nodes, _ := newPool(t, "pt", 2, nil)
	// A bare memberlist with no key, but with the pool's label and
	// metadata that NotifyAlive would admit: only the encryption stands in
	// its way.
	meta, err := Meta{Name: "pt-plain", Site: "pt"}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	mc := memberlist.DefaultLocalConfig()
	mc.Name = "pt-plain"
	mc.BindAddr = "127.0.0.1"
	mc.BindPort = 0
	mc.Label = poolLabel("pt")
	mc.Delegate = &staticMeta{meta: meta}
	mc.Logger = newMemberlistLogger(&logWriter{log: testLogger()})
	plain, err := memberlist.Create(mc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = plain.Shutdown() })

	if n, err := plain.Join([]string{nodes[0].Addr()}); err == nil {
		t.Errorf("a plaintext member joined (%d reached)", n)
	}
	plainAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(mc.BindPort))
	if err := joinNow(nodes[0].Gossip, plainAddr); err == nil {
		t.Error("a member joined a plaintext one")
	}
	barrier(t, "after-plain", nodes[1], nodes[0])
	assertNeverSeen(t, "pt-plain", nodes...)
	if got := plain.NumMembers(); got != 1 {
		t.Errorf("the plaintext member sees %d members", got)
	}
}

// staticMeta is a memberlist.Delegate with fixed metadata.
type staticMeta struct{ meta []byte }

func (s *staticMeta) NodeMeta(int) []byte                 { return s.meta }
func (s *staticMeta) NotifyMsg([]byte)                    {}
func (s *staticMeta) GetBroadcasts(int, int) [][]byte     { return nil }
func (s *staticMeta) LocalState(bool) []byte              { return nil }
func (s *staticMeta) MergeRemoteState(buf []byte, _ bool) {}

func TestOtherSiteRefused(t *testing.T) {
	t.Parallel()
	// Same key, other site: the label (authenticated with the key) keeps
	// the pools apart.
	nodes, key := newPool(t, "sa", 2, nil)
	other := start(t, testConfig("sb-0", "sb", key))
	if err := joinNow(other.Gossip, nodes[0].Addr()); err == nil {
		t.Error("a member of another site joined")
	}
	barrier(t, "after-other-site", nodes[0], nodes[1])
	assertNeverSeen(t, "sb-0", nodes...)
}

func TestMetaTooLarge(t *testing.T) {
	t.Parallel()
	big := Meta{Name: "big", Site: "s", Labels: map[string]string{}}
	for i := range 40 {
		big.Labels[fmt.Sprintf("example.com/label-%02d", i)] = "value"
	}
	_, err := big.Encode()
	if !errors.Is(err, ErrMetaTooLarge) {
		t.Fatalf("Encode() = %v, want ErrMetaTooLarge", err)
	}
	for _, want := range []string{`"big"`, "over memberlist's 512-byte limit", "40 labels"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Encode() error %q does not say %s", err, want)
		}
	}

	cfg := testConfig("big", "s", newKey(t))
	cfg.Meta.Labels = big.Labels
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "--labels") || !errors.Is(err, ErrMetaTooLarge) {
		t.Errorf("New() = %v, want a --labels error wrapping ErrMetaTooLarge", err)
	}

	n := start(t, testConfig("big", "s", newKey(t)))
	m := n.Local().Meta
	before := maps.Clone(m.Labels)
	m.Labels = big.Labels
	if err := n.UpdateMeta(m); !errors.Is(err, ErrMetaTooLarge) {
		t.Errorf("UpdateMeta() = %v, want ErrMetaTooLarge", err)
	}
	if got := n.Local().Labels; !maps.Equal(got, before) {
		t.Errorf("a refused UpdateMeta changed the labels to %v", got)
	}
}

func TestJoinRetriesUntilReached(t *testing.T) {
	t.Parallel()
	key := newKey(t)
	// Nothing listens on the seed: the first member retries until the
	// second one, which joins it, reaches it.
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	seed := dead.Addr().String()
	_ = dead.Close()
	rec := &recorder{}
	cfg := testConfig("retry-0", "retry", key, seed)
	cfg.Logger = slog.New(rec)
	a := start(t, cfg)
	eventually(t, waitLong, func() error {
		if n := rec.count("join gossip pool failed"); n < 2 {
			return fmt.Errorf("%d failed join rounds so far", n)
		}
		return nil
	})
	b := start(t, testConfig("retry-1", "retry", key, a.Addr()))
	for _, n := range []*node{a, b} {
		eventually(t, waitLong, func() error {
			if n.NumAlive() != 2 {
				return fmt.Errorf("%s sees %s", n.Local().Name, names(n.Members()))
			}
			return nil
		})
	}
	eventually(t, waitLong, func() error {
		if rec.count("joined by another member") != 1 {
			return errors.New("retry-0 has not stopped retrying")
		}
		return nil
	})
}

func TestPortInUse(t *testing.T) {
	t.Parallel()
	key := newKey(t)
	a := start(t, testConfig("port-0", "port", key))
	_, port, _ := net.SplitHostPort(a.Addr())
	cfg := testConfig("port-1", "port", key)
	cfg.BindPort, _ = strconv.Atoi(port)
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = b.Run(t.Context())
	if err == nil || !strings.Contains(err.Error(), "start gossip on 127.0.0.1:"+port) {
		t.Fatalf("Run on a taken port = %v", err)
	}
	select {
	case <-b.Ready():
		t.Error("Ready closed although Run failed")
	default:
	}
}
