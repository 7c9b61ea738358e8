package tunnel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/outpost-mesh/outpost/clusters"
	"github.com/outpost-mesh/outpost/transport"
)

// Sentinel errors of the hub side.
var (
	// ErrNotRunning: Ensure was called after Run returned.
	ErrNotRunning = errors.New("tunnel hub is not running")
	// ErrInvalidPorts: a Binding's ports are missing, out of range or
	// equal.
	ErrInvalidPorts = errors.New("invalid tunnel ports")
)

// HubConnectionWindow is the QUIC connection receive window hub members
// start with and keep (transport.Config.InitialConnectionReceiveWindow and
// MaxConnectionReceiveWindow). Data a client has not read yet stays in its
// stream's receive window (up to 6 MiB) and counts against the
// connection's window, which only grows while the application reads: with
// quic-go's defaults (512 KiB, auto-tuned up to 15 MiB) two or three
// stalled streams stop every stream of the agent's connection, heartbeats
// included. 64 MiB absorbs ten stalled streams at full window and bounds
// what one connection can make the hub buffer. DESIGN.md has the
// measurements.
const HubConnectionWindow = 64 << 20

// HubConfig configures a Hub. Start from DefaultHubConfig.
type HubConfig struct {
	// PublicHost is the address ports are bound on for clusters with
	// External set (spec.externalKubeAPIEnabled), e.g. "0.0.0.0"; other
	// clusters' ports are bound on 127.0.0.1.
	PublicHost string
	// Verify checks an agent's cluster token (clusters.VerifyToken): an
	// error wrapping clusters.ErrBadToken refuses the agent, and is shown
	// to it; any other error asks it to retry. It runs again on each
	// heartbeat, so a revoked token or a deleted Cluster drops the agent.
	// Required.
	Verify func(ctx context.Context, cluster, token string) error
	// Leader reports whether this hub member serves tunnels now (it leads
	// the hub) and, when not, the leader's QUIC address for the agent to
	// go to ("" when unknown). Nil: always the leader.
	Leader func() (leading bool, leaderAddr string)
	// HubAddrs lists the hub members' QUIC addresses, handed to agents so
	// they find the next leader after a failover. Nil: none.
	HubAddrs func() []string
	// OnChange is called (without locks held) when a cluster's agent
	// connects or goes away, so the controller can reconcile it at once.
	// Nil: not called.
	OnChange func(cluster string)
	// HeartbeatTimeout drops an agent that has sent nothing for this long.
	HeartbeatTimeout time.Duration
	// AgentWait is how long a connection accepted on a cluster's port
	// waits for the agent (while it reconnects) before it is closed.
	AgentWait time.Duration
	// OpenTimeout bounds opening a stream to the agent (it waits while the
	// agent's stream limit is reached).
	OpenTimeout time.Duration
	// Logger receives the hub's logs. Nil discards.
	Logger *slog.Logger
}

// DefaultHubConfig returns the production settings.
func DefaultHubConfig() HubConfig {
	return HubConfig{PublicHost: "0.0.0.0", HeartbeatTimeout: 20 * time.Second, AgentWait: 5 * time.Second, OpenTimeout: 10 * time.Second}
}

// Hub is the hub leader's side of the tunnels: it binds each proxy
// cluster's ports, authenticates agents on their control streams, and
// carries every accepted TCP connection to the cluster's agent.
type Hub struct {
	cfg HubConfig
	log *slog.Logger

	running atomic.Bool
	ready   chan struct{} // closed once Run has started
	stopped chan struct{} // closed when Run returns

	mu       sync.Mutex
	g        *errgroup.Group // Run's; nil before Run and once it stops
	ctx      context.Context
	bindings map[string]*binding
	agents   map[string]*agent
	seen     map[string]seen // last heard of each cluster's agent, kept after it leaves
	wake     chan struct{}   // closed and replaced when an agent arrives

	n hubCounters // metrics.go
}

// seen is what the hub last heard from a cluster's agent.
type seen struct {
	at     time.Time
	report Report
}

var _ clusters.Tunnels = (*Hub)(nil)

// NewHub validates cfg. It starts nothing: Run does.
func NewHub(cfg HubConfig) (*Hub, error) {
	switch {
	case cfg.Verify == nil:
		return nil, errors.New("tunnel: HubConfig.Verify is required")
	case cfg.HeartbeatTimeout <= 0 || cfg.AgentWait < 0 || cfg.OpenTimeout <= 0:
		return nil, errors.New("tunnel: HeartbeatTimeout and OpenTimeout must be positive, AgentWait not negative")
	case net.ParseIP(cfg.PublicHost) == nil:
		return nil, fmt.Errorf("tunnel: PublicHost %q must be an IP address", cfg.PublicHost)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Hub{
		cfg: cfg, log: log.With("component", "tunnel"),
		bindings: map[string]*binding{}, agents: map[string]*agent{}, seen: map[string]seen{},
		wake: make(chan struct{}), ready: make(chan struct{}), stopped: make(chan struct{}),
	}, nil
}

// Run serves until ctx is done: accept loops and tunnelled connections run
// in goroutines it owns. On return every port is unbound and every agent
// dropped.
func (h *Hub) Run(ctx context.Context) error {
	if !h.running.CompareAndSwap(false, true) {
		return errors.New("tunnel: Run called twice")
	}
	defer close(h.stopped)
	g, gctx := errgroup.WithContext(ctx)
	// This goroutine is in g before anyone else can add to it, so g's
	// counter never goes from zero to one while Wait runs.
	g.Go(func() error {
		<-gctx.Done()
		<-h.ready // h.g is set: clear it after, never before
		h.mu.Lock()
		h.g = nil // Ensure refuses from now on, so g gains no goroutines once this one returns
		h.mu.Unlock()
		h.Reset()
		return nil
	})
	h.mu.Lock()
	h.g, h.ctx = g, gctx
	h.mu.Unlock()
	close(h.ready)
	return g.Wait()
}

// spawn runs fn in Run's errgroup, or reports that Run is not running.
// Callers hold h.mu.
func (h *Hub) spawn(fn func(ctx context.Context)) error {
	if h.g == nil {
		return ErrNotRunning
	}
	ctx := h.ctx
	h.g.Go(func() error { fn(ctx); return nil })
	return nil
}

// Ensure binds the cluster's ports (again, after a failover) unless they
// are bound already as asked, and reports its agent's state. It waits for
// Run to start.
func (h *Hub) Ensure(ctx context.Context, cluster string, want clusters.Binding) (clusters.TunnelState, error) {
	select {
	case <-h.ready:
	case <-h.stopped:
		return clusters.TunnelState{}, ErrNotRunning
	case <-ctx.Done():
		return clusters.TunnelState{}, ctx.Err()
	}
	p := want.Ports
	for _, port := range []int{p.KubernetesAPI, p.PlatformAPI} {
		if port <= 0 || port > 65535 {
			return clusters.TunnelState{}, fmt.Errorf("cluster %s: %w: port %d must be 1-65535", cluster, ErrInvalidPorts, port)
		}
	}
	if p.KubernetesAPI == p.PlatformAPI {
		return clusters.TunnelState{}, fmt.Errorf("cluster %s: %w: the API and platform ports are both %d", cluster, ErrInvalidPorts, p.KubernetesAPI)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if b := h.bindings[cluster]; b == nil || b.want != want {
		if b != nil {
			b.close()
			delete(h.bindings, cluster)
		}
		if h.g == nil {
			return clusters.TunnelState{}, ErrNotRunning
		}
		b, err := h.bind(cluster, want)
		if err != nil {
			return clusters.TunnelState{}, err
		}
		h.bindings[cluster] = b
		h.log.Info("tunnel ports bound", "cluster", cluster, "kube_api", b.lns[0].Addr().String(), "platform_api", b.lns[1].Addr().String(), "external", want.External)
	}
	return h.stateLocked(cluster, want.Ports), nil
}

// State reports a cluster's agent without binding anything.
func (h *Hub) State(cluster string) clusters.TunnelState {
	h.mu.Lock()
	defer h.mu.Unlock()
	var p clusters.Ports
	if b := h.bindings[cluster]; b != nil {
		p = b.want.Ports
	}
	return h.stateLocked(cluster, p)
}

func (h *Hub) stateLocked(cluster string, p clusters.Ports) clusters.TunnelState {
	st := clusters.TunnelState{Ports: p}
	if s, ok := h.seen[cluster]; ok {
		st.LastSeen = s.at
		st.ServerCA, st.ServerName = s.report.ServerCA, s.report.ServerName
		st.BearerToken, st.ClientCert, st.ClientKey = s.report.BearerToken, s.report.ClientCert, s.report.ClientKey
	}
	if a := h.agents[cluster]; a != nil {
		st.Connected = true
		st.LastSeen = a.lastSeen()
	}
	return st
}

// Release unbinds the cluster's ports, closes its tunnelled connections and
// drops its agent.
func (h *Hub) Release(_ context.Context, cluster string) error {
	h.mu.Lock()
	b, a := h.bindings[cluster], h.agents[cluster]
	delete(h.bindings, cluster)
	delete(h.agents, cluster)
	delete(h.seen, cluster)
	h.mu.Unlock()
	if b != nil {
		b.close()
		h.log.Info("tunnel ports released", "cluster", cluster)
	}
	if a != nil {
		a.drop()
	}
	return nil
}

// Reset releases every cluster: for a hub member that stopped leading, so
// agents move to the new leader, which binds the same ports.
func (h *Hub) Reset() {
	h.mu.Lock()
	names := make([]string, 0, len(h.bindings)+len(h.agents))
	for c := range h.bindings {
		names = append(names, c)
	}
	for c := range h.agents {
		names = append(names, c)
	}
	h.mu.Unlock()
	for _, c := range names {
		_ = h.Release(context.Background(), c)
	}
}

// bind listens on both ports of want and starts their accept loops:
// on 127.0.0.1, where the controller dials them, and for an External
// binding on PublicHost too (once, when PublicHost is a wildcard that
// covers loopback). Callers hold h.mu.
func (h *Hub) bind(cluster string, want clusters.Binding) (*binding, error) {
	hosts := []string{"127.0.0.1"}
	if want.External {
		if ip := net.ParseIP(h.cfg.PublicHost); ip.IsUnspecified() {
			hosts = []string{h.cfg.PublicHost}
		} else if !ip.Equal(net.IPv4(127, 0, 0, 1)) {
			hosts = append(hosts, h.cfg.PublicHost)
		}
	}
	b := &binding{want: want, conns: map[net.Conn]struct{}{}}
	for _, host := range hosts {
		for _, t := range []struct {
			port   int
			target Target
		}{{want.Ports.KubernetesAPI, TargetKubeAPI}, {want.Ports.PlatformAPI, TargetPlatformAPI}} {
			addr := net.JoinHostPort(host, strconv.Itoa(t.port))
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				b.close()
				if errors.Is(err, syscall.EADDRINUSE) {
					return nil, fmt.Errorf("cluster %s: bind %s: %w", cluster, addr, clusters.ErrPortInUse)
				}
				return nil, fmt.Errorf("cluster %s: bind %s: %w", cluster, addr, err)
			}
			b.lns = append(b.lns, ln)
			b.targets = append(b.targets, t.target)
		}
	}
	for i, ln := range b.lns {
		target := b.targets[i]
		if err := h.spawn(func(ctx context.Context) { h.acceptLoop(ctx, cluster, target, b, ln) }); err != nil {
			b.close()
			return nil, err
		}
	}
	return b, nil
}

// binding is one cluster's bound ports and the connections accepted on
// them.
type binding struct {
	want    clusters.Binding
	lns     []net.Listener
	targets []Target // what each listener's connections are for
	mu      sync.Mutex
	closed  bool
	conns   map[net.Conn]struct{}
}

// track records an accepted connection, or reports false once the binding
// is closed.
func (b *binding) track(c net.Conn) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false
	}
	b.conns[c] = struct{}{}
	return true
}

func (b *binding) untrack(c net.Conn) {
	b.mu.Lock()
	delete(b.conns, c)
	b.mu.Unlock()
}

// close stops the listeners and closes every connection accepted on them.
func (b *binding) close() {
	b.mu.Lock()
	b.closed = true
	conns := b.conns
	b.conns = map[net.Conn]struct{}{}
	b.mu.Unlock()
	for _, ln := range b.lns {
		_ = ln.Close()
	}
	for c := range conns {
		_ = c.Close()
	}
}

// acceptLoop accepts connections on one of a cluster's ports until the
// listener closes, carrying each to the agent.
func (h *Hub) acceptLoop(ctx context.Context, cluster string, target Target, b *binding, ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				h.log.Warn("tunnel port stopped accepting", "cluster", cluster, "target", target.String(), "err", err)
			}
			return
		}
		if !b.track(c) {
			_ = c.Close()
			return
		}
		h.mu.Lock()
		err = h.spawn(func(ctx context.Context) {
			defer b.untrack(c)
			h.carry(ctx, cluster, target, c.(*net.TCPConn))
		})
		h.mu.Unlock()
		if err != nil {
			_ = c.Close()
			b.untrack(c)
			return
		}
	}
}

// carry sends one accepted connection through the cluster's agent.
func (h *Hub) carry(ctx context.Context, cluster string, target Target, c *net.TCPConn) {
	defer c.Close()
	_ = c.SetNoDelay(true)
	log := h.log.With("cluster", cluster, "target", target.String(), "client", c.RemoteAddr().String())
	i := of(target)
	a := h.waitAgent(ctx, cluster)
	if a == nil {
		h.n.refused[i].Add(1)
		log.Debug("tunnelled connection refused: no agent connected")
		reset(c) // an error for the client, not an empty answer
		return
	}
	octx, cancel := context.WithTimeout(ctx, h.cfg.OpenTimeout)
	s, err := a.ctl.OpenReverse(octx, transport.KindTunnel)
	cancel()
	if err == nil {
		if _, err = s.Write([]byte{byte(target)}); err != nil {
			_ = s.Close()
		}
	}
	if err != nil {
		h.n.refused[i].Add(1)
		log.Debug("open stream to the agent", "err", err)
		return
	}
	h.n.carried[i].Add(1)
	h.n.active[i].Add(1)
	up, down, err := pipe(ctx, c, s)
	h.n.active[i].Add(-1)
	h.n.up[i].Add(uint64(up))
	h.n.down[i].Add(uint64(down))
	log.Debug("tunnelled connection ended", "bytes_up", up, "bytes_down", down, "err", err)
}

// waitAgent returns the cluster's agent, waiting up to AgentWait for one
// (an agent reconnecting), or nil.
func (h *Hub) waitAgent(ctx context.Context, cluster string) *agent {
	timer := time.NewTimer(h.cfg.AgentWait)
	defer timer.Stop()
	for {
		h.mu.Lock()
		a, wake := h.agents[cluster], h.wake
		h.mu.Unlock()
		if a != nil {
			return a
		}
		select {
		case <-wake:
		case <-timer.C:
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}
