package consensus

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The in-process cluster: n Groups in one test process, wired with Raft's
// in-memory transport, with Leader, Kill and Restart, in the manner of
// rqlite's system tests and etcd's integration.NewCluster.

// Test timings. The election and heartbeat timeouts are at the top of the
// 50-100 ms range: the race detector on a two-core runner stretches a
// fsynced log append enough that 50 ms causes needless elections.
const (
	testHeartbeat   = 100 * time.Millisecond
	testElection    = 100 * time.Millisecond
	testLeaderLease = 50 * time.Millisecond
	testCommit      = 5 * time.Millisecond
	// waitLong bounds a wait for an election, a catch-up or a run of writes;
	// it only turns a hang into a failure and is never a performance claim.
	waitLong = 20 * time.Second
)

// eventually polls cond every 5 ms until it holds, and fails the test when
// timeout passes first.
func eventually(t testing.TB, timeout time.Duration, cond func() bool, msgAndArgs ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			msg := "condition not met"
			if len(msgAndArgs) > 0 {
				msg = fmt.Sprintf(fmt.Sprint(msgAndArgs[0]), msgAndArgs[1:]...)
			}
			t.Fatalf("after %v: %s", timeout, msg)
		}
		<-tick.C
	}
}

// Widget is the test kind: namespaced, with a typed spec and status so
// unknown fields are rejected.
type widgetSpec struct {
	Size  int    `json:"size"`
	Color string `json:"color,omitempty"`
}

type widgetStatus struct {
	Phase string `json:"phase,omitempty"`
	Ready bool   `json:"ready,omitempty"`
}

func widgetKindDef() Kind {
	return Kind{
		Group: "test.outpost.dev", Version: "v1", Kind: "Widget", Plural: "widgets",
		Namespaced: true,
		NewSpec:    func() any { return &widgetSpec{} },
		NewStatus:  func() any { return &widgetStatus{} },
	}
}

// newTestRegistry returns a registry holding Widget, and Widget's kind.
func newTestRegistry(t testing.TB) (*Registry, *Kind) {
	t.Helper()
	reg := NewRegistry()
	for _, k := range []Kind{widgetKindDef(), safeKindDef()} {
		if err := reg.Register(k); err != nil {
			t.Fatal(err)
		}
	}
	k, ok := reg.ForKind("test.outpost.dev/v1", "Widget")
	if !ok {
		t.Fatal("Widget not registered")
	}
	return reg, k
}

// newWidget returns an unsaved Widget.
func newWidget(ns, name string, labels map[string]string, spec widgetSpec) *Object {
	obj := &Object{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels}}
	if err := obj.SetSpec(spec); err != nil {
		panic(err) // a widgetSpec always marshals
	}
	return obj
}

// clusterOption adjusts every member's Config.
type clusterOption func(*Config)

type member struct {
	id     string
	addr   raft.ServerAddress
	dir    string
	logs   *logRecorder
	trans  *raft.InmemTransport
	group  *Group
	cancel context.CancelFunc
	done   chan error // receives Run's result
	alive  bool
}

// testCluster is n Groups of one Raft group in this process.
type testCluster struct {
	t    testing.TB
	reg  *Registry
	kind *Kind
	opts []clusterOption

	mu      sync.Mutex
	members []*member
	// retries counts write attempts that failed in a way worth retrying
	// (no leader, leadership lost, member stopping).
	retries atomic.Int64
}

// newCluster starts n members; the first bootstraps the group with all n as
// voters. Every member is stopped on cleanup.
func newCluster(t testing.TB, n int, opts ...clusterOption) *testCluster {
	t.Helper()
	reg, kind := newTestRegistry(t)
	c := &testCluster{t: t, reg: reg, kind: kind, opts: opts}
	peers := make([]raft.Server, n)
	for i := range n {
		m := &member{
			id:   fmt.Sprintf("m%d", i),
			addr: raft.ServerAddress(fmt.Sprintf("m%d-addr", i)),
			dir:  filepath.Join(t.TempDir(), fmt.Sprintf("m%d", i)),
			logs: newLogRecorder(),
		}
		c.members = append(c.members, m)
		peers[i] = raft.Server{ID: raft.ServerID(m.id), Address: m.addr, Suffrage: raft.Voter}
	}
	// Registered after TempDir, so it runs first: the stores close before
	// their directories go.
	t.Cleanup(c.stopAll)
	for i, m := range c.members {
		_, m.trans = raft.NewInmemTransport(m.addr)
		cfg := c.config(m)
		cfg.Bootstrap = i == 0
		cfg.Peers = peers
		c.start(m, cfg)
	}
	c.connectAll()
	return c
}

// newTestGroup is a single-member group.
func newTestGroup(t testing.TB, opts ...clusterOption) *testCluster {
	t.Helper()
	c := newCluster(t, 1, opts...)
	c.Leader()
	return c
}

func (c *testCluster) config(m *member) Config {
	cfg := DefaultConfig()
	cfg.ID = m.id
	cfg.Dir = m.dir
	cfg.Transport = m.trans
	cfg.HeartbeatTimeout = testHeartbeat
	cfg.ElectionTimeout = testElection
	cfg.LeaderLeaseTimeout = testLeaderLease
	cfg.CommitTimeout = testCommit
	cfg.ApplyTimeout = 5 * time.Second
	cfg.Logger = slog.New(m.logs)
	for _, o := range c.opts {
		o(&cfg)
	}
	return cfg
}

// start opens m's Group and runs it in its own goroutine.
func (c *testCluster) start(m *member, cfg Config) {
	c.t.Helper()
	g, err := New(cfg, c.reg)
	if err != nil {
		c.t.Fatalf("new %s: %v", m.id, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	c.mu.Lock()
	m.group, m.cancel, m.done, m.alive = g, cancel, done, true
	c.mu.Unlock()
}

// connectAll connects every live member's transport to every other's.
func (c *testCluster) connectAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, a := range c.members {
		for _, b := range c.members {
			if a != b && a.alive && b.alive {
				a.trans.Connect(b.addr, b.trans)
			}
		}
	}
}

// N returns the number of members, live or not.
func (c *testCluster) N() int { return len(c.members) }

// Alive reports whether member i runs.
func (c *testCluster) Alive(i int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.members[i].alive
}

// Group returns member i's current Group.
func (c *testCluster) Group(i int) *Group {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.members[i].group
}

// Store returns member i's object store.
func (c *testCluster) Store(i int) *Store { return c.Group(i).Store() }

// Kind returns the Widget kind.
func (c *testCluster) Kind() *Kind { return c.kind }

// Logs returns member i's log recorder (it survives restarts).
func (c *testCluster) Logs(i int) *logRecorder { return c.members[i].logs }

// leaderNow returns a live member that believes it leads, or -1.
func (c *testCluster) leaderNow() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, m := range c.members {
		if m.alive && m.group.IsLeader() {
			return i
		}
	}
	return -1
}

// Leader waits until a live member leads and every other live member
// follows it, and returns the leader's index.
func (c *testCluster) Leader() int {
	c.t.Helper()
	leader := -1
	eventually(c.t, waitLong, func() bool {
		leader = c.leaderNow()
		if leader < 0 {
			return false
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		want := raft.ServerID(c.members[leader].id)
		for i, m := range c.members {
			if i == leader || !m.alive {
				continue
			}
			// A member whose Run has not started Raft yet does not follow.
			r := m.group.Raft()
			if r == nil {
				return false
			}
			if _, id := r.LeaderWithID(); id != want {
				return false
			}
		}
		return true
	}, "no leader elected")
	return leader
}

// Follower returns a live member other than the leader and except.
func (c *testCluster) Follower(leader int, except ...int) int {
	c.t.Helper()
	for i := range c.members {
		if i != leader && c.Alive(i) && !slices.Contains(except, i) {
			return i
		}
	}
	c.t.Fatal("no live follower")
	return -1
}

// Kill stops member i's Run, waits for it to return and cuts it off from the
// others. Run hands leadership off first when i leads, as on a real stop.
func (c *testCluster) Kill(i int) {
	c.t.Helper()
	if !c.Alive(i) {
		c.t.Fatalf("kill %s: not running", c.members[i].id)
	}
	c.stop(c.members[i])
}

// Crash cuts member i off from the others, waits until it no longer leads,
// and then stops it, as a crash or a partition would: writes in flight on it
// fail with leadership lost, applied or not, instead of completing through
// a hand-off.
func (c *testCluster) Crash(i int) {
	c.t.Helper()
	m := c.members[i]
	if !c.Alive(i) {
		c.t.Fatalf("crash %s: not running", m.id)
	}
	c.mu.Lock()
	for _, o := range c.members {
		if o != m && o.alive {
			o.trans.Disconnect(m.addr)
		}
	}
	m.trans.DisconnectAll()
	c.mu.Unlock()
	eventually(c.t, waitLong, func() bool { return !m.group.IsLeader() }, "%s still leads, cut off", m.id)
	c.stop(m)
}

func (c *testCluster) stop(m *member) {
	c.mu.Lock()
	m.alive = false
	c.mu.Unlock()
	m.cancel()
	if err := c.wait(m); err != nil {
		c.t.Errorf("run %s: %v", m.id, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, o := range c.members {
		if o != m && o.alive {
			o.trans.Disconnect(m.addr)
		}
	}
	m.trans.DisconnectAll()
}

// wait waits for m's Run to return. The bound only turns a hung shutdown
// into a failure.
func (c *testCluster) wait(m *member) error {
	select {
	case err := <-m.done:
		return err
	case <-time.After(waitLong):
		return fmt.Errorf("%s: Run did not return %v after cancel", m.id, waitLong)
	}
}

// Restart starts member i again on its directory and address, with a new
// transport connected both ways.
func (c *testCluster) Restart(i int) {
	c.t.Helper()
	m := c.members[i]
	if c.Alive(i) {
		c.t.Fatalf("restart %s: still running", m.id)
	}
	_, m.trans = raft.NewInmemTransport(m.addr)
	c.start(m, c.config(m))
	c.connectAll()
}

// stopAll stops every live member; it is the cluster's cleanup. Members
// stop one at a time, each cut off before the next stops: a leader's
// hand-off on stop then reaches a member that answers or fails at once,
// instead of one that is shutting down, which would leave Raft's
// leadership-transfer goroutine waiting on an unanswered TimeoutNow RPC
// (10 × the transport timeout) after Shutdown returned.
func (c *testCluster) stopAll() {
	for i, m := range c.members {
		if c.Alive(i) {
			c.stop(m)
		}
	}
	if c.t.Failed() {
		for _, m := range c.members {
			c.t.Logf("--- %s log tail ---\n%s", m.id, m.logs.tail())
		}
	}
}

// logRecorder is a slog.Handler that keeps the last lines of a member's log
// for failure output and counts messages, which makes Raft's and the FSM's
// internal events (a snapshot install) observable.
type logRecorder struct {
	mu     sync.Mutex
	lines  []string
	counts map[string]int
}

const logTailLines = 60

func newLogRecorder() *logRecorder { return &logRecorder{counts: map[string]int{}} }

// Count returns how often msg was logged.
func (r *logRecorder) Count(msg string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.counts[msg]
}

func (r *logRecorder) tail() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.lines, "\n")
}

func (r *logRecorder) handler() slog.Handler { return &recordHandler{r: r} }

// Enabled, Handle, WithAttrs and WithGroup make *logRecorder a handler
// without attributes; recordHandler carries them.
func (r *logRecorder) Enabled(ctx context.Context, l slog.Level) bool {
	return r.handler().Enabled(ctx, l)
}
func (r *logRecorder) Handle(ctx context.Context, rec slog.Record) error {
	return r.handler().Handle(ctx, rec)
}
func (r *logRecorder) WithAttrs(as []slog.Attr) slog.Handler { return r.handler().WithAttrs(as) }
func (r *logRecorder) WithGroup(name string) slog.Handler    { return r.handler().WithGroup(name) }

type recordHandler struct {
	r     *logRecorder
	attrs string
}

func (h *recordHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }

func (h *recordHandler) Handle(_ context.Context, rec slog.Record) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %s%s", rec.Time.Format("15:04:05.000"), rec.Level, rec.Message, h.attrs)
	rec.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	h.r.mu.Lock()
	defer h.r.mu.Unlock()
	h.r.counts[rec.Message]++
	h.r.lines = append(h.r.lines, b.String())
	if len(h.r.lines) > logTailLines {
		h.r.lines = h.r.lines[len(h.r.lines)-logTailLines:]
	}
	return nil
}

func (h *recordHandler) WithAttrs(as []slog.Attr) slog.Handler {
	var b strings.Builder
	b.WriteString(h.attrs)
	for _, a := range as {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
	}
	return &recordHandler{r: h.r, attrs: b.String()}
}

func (h *recordHandler) WithGroup(string) slog.Handler { return h }
