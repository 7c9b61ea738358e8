package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"reflect"
	"slices"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/outpost-mesh/outpost/transport"
)

// ErrRefused is Agent.Run's error when the hub refuses the agent (a wrong
// or revoked token, an unknown cluster): retrying with the same token would
// not help.
var ErrRefused = errors.New("the hub refused the agent")

// AgentConfig configures an Agent. Start from DefaultAgentConfig.
type AgentConfig struct {
	// Cluster is the Cluster's name at the hub (--cluster).
	Cluster string
	// Token is the cluster token (--token).
	Token string
	// HubAddrs are hub members' QUIC addresses (--hub); the first is tried
	// first, and the hub adds its members' as it answers.
	HubAddrs []string
	// CAFingerprint pins the mesh CA the hub's certificate must chain to.
	CAFingerprint string
	// KubeAPIAddr is the edge API server's host:port, dialed for each
	// tunnelled Kubernetes API connection.
	KubeAPIAddr string
	// PlatformAddr is the platform API's host:port; "" refuses platform
	// connections.
	PlatformAddr string
	// Report is what the agent tells the hub about the API server.
	Report Report
	// Refresh, when set, is called before each heartbeat; a Report that
	// differs from the last one sent is sent along (a rotated token).
	// Errors are logged and the last Report kept.
	Refresh func() (Report, error)
	// Heartbeat is how often the agent proves it is alive; the hub drops
	// it after HubConfig.HeartbeatTimeout without one.
	Heartbeat time.Duration
	// HeartbeatTimeout is how long the agent waits for the hub to echo a
	// heartbeat before it drops the connection and redials.
	HeartbeatTimeout time.Duration
	// DialTimeout bounds dialing the edge service for one connection.
	DialTimeout time.Duration
	// Transport tunes the QUIC connection (stream limit, windows, idle
	// timeout); its Addr and CAFingerprint are set per dial.
	Transport transport.ReverseConfig
	// MaxBackoff caps the wait between reconnection attempts.
	MaxBackoff time.Duration
	// Logger receives the agent's logs. Nil discards.
	Logger *slog.Logger
}

// DefaultAgentConfig returns the production settings.
func DefaultAgentConfig() AgentConfig {
	return AgentConfig{
		Heartbeat: 5 * time.Second, HeartbeatTimeout: 15 * time.Second, DialTimeout: 10 * time.Second,
		Transport: transport.DefaultReverseConfig(), MaxBackoff: 10 * time.Second,
	}
}

// Validate reports the first invalid field, named as its flag is.
func (c AgentConfig) Validate() error {
	switch {
	case c.Cluster == "":
		return errors.New("--cluster is required")
	case c.Token == "":
		return errors.New("--token is required")
	case len(c.HubAddrs) == 0:
		return errors.New("--hub is required (a hub member's QUIC address, host:port)")
	case c.CAFingerprint == "":
		return errors.New("--ca-fingerprint is required: the mesh CA's SHA-256 (hex), which pins the hub; a --token ending in .<fingerprint> carries it too")
	case c.KubeAPIAddr == "":
		return errors.New("the edge API server's address is required (from --kubeconfig or in-cluster)")
	case c.Heartbeat <= 0 || c.HeartbeatTimeout <= 0 || c.DialTimeout <= 0 || c.MaxBackoff <= 0:
		return errors.New("tunnel agent: Heartbeat, HeartbeatTimeout, DialTimeout and MaxBackoff must be positive")
	}
	for _, a := range append(slices.Clone(c.HubAddrs), c.KubeAPIAddr) {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("address %q must be host:port", a)
		}
	}
	return nil
}

// Agent is the edge side of a proxy cluster's tunnel: it keeps a QUIC
// connection to the hub leader and serves the streams the hub opens on it
// by dialing the edge service each names.
type Agent struct {
	cfg       AgentConfig
	log       *slog.Logger
	connected atomic.Bool
	sessions  atomic.Int64
}

// NewAgent validates cfg. It starts nothing: Run does.
func NewAgent(cfg AgentConfig) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Agent{cfg: cfg, log: log.With("component", "tunnel-agent", "cluster", cfg.Cluster)}, nil
}

// Connected reports whether the agent is connected and accepted now.
func (a *Agent) Connected() bool { return a.connected.Load() }

// Sessions counts the sessions the hub has accepted since the start.
func (a *Agent) Sessions() int64 { return a.sessions.Load() }

// maxRedirects bounds how many redirects are followed without a pause.
const maxRedirects = 3

// Run keeps the agent connected until ctx is done: it dials the hub, follows
// redirects to the leader, serves the hub's streams, and reconnects with
// jittered backoff when the connection ends, trying each known hub member
// in turn. It returns nil when ctx ends, or an error wrapping ErrRefused
// when the hub refuses the token.
func (a *Agent) Run(ctx context.Context) error {
	addrs := slices.Clone(a.cfg.HubAddrs)
	next, redirects := 0, 0
	addr := addrs[0]
	backoff := 250 * time.Millisecond
	for ctx.Err() == nil {
		started := time.Now()
		res, err := a.session(ctx, addr)
		for _, h := range res.HubAddrs {
			if !slices.Contains(addrs, h) {
				addrs = append(addrs, h)
			}
		}
		switch {
		case ctx.Err() != nil:
			return nil
		case res.Error != "":
			return fmt.Errorf("%w: %s", ErrRefused, res.Error)
		case res.Redirect != "" && redirects < maxRedirects:
			a.log.Info("hub member is not the leader; going to the leader", "hub", addr, "leader", res.Redirect)
			addr = res.Redirect
			redirects++
			continue
		}
		redirects = 0
		if time.Since(started) > time.Minute {
			backoff = 250 * time.Millisecond // it was up for a while: reconnect quickly
		}
		next = (next + 1) % len(addrs)
		reason := err
		if reason == nil && res.Retry != "" {
			reason = errors.New(res.Retry)
		}
		wait := backoff/2 + mrand.N(backoff)
		a.log.Info("tunnel down; reconnecting", "hub", addr, "next", addrs[next], "in", wait.Round(time.Millisecond), "reason", reason)
		addr = addrs[next]
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		backoff = min(2*backoff, a.cfg.MaxBackoff)
	}
	return nil
}

// session runs one connection to addr: hello, welcome, then serving
// streams and sending heartbeats until either fails. It returns the hub's
// welcome (for redirects, refusals and hub addresses) and why it ended.
func (a *Agent) session(ctx context.Context, addr string) (welcome, error) {
	rcfg := a.cfg.Transport
	rcfg.Addr, rcfg.CAFingerprint, rcfg.Logger = addr, a.cfg.CAFingerprint, a.cfg.Logger
	dctx, cancel := context.WithTimeout(ctx, helloTimeout)
	rc, ctl, err := transport.DialReverse(dctx, rcfg, transport.KindTunnel)
	cancel() // it bounds the handshake only
	if err != nil {
		return welcome{}, err
	}
	defer rc.Close()
	report := a.cfg.Report
	if a.cfg.Refresh != nil {
		if r, err := a.cfg.Refresh(); err == nil {
			report = r
		}
	}
	_ = ctl.SetDeadline(time.Now().Add(helloTimeout))
	if err := writeMsg(ctl, hello{Cluster: a.cfg.Cluster, Token: a.cfg.Token, Report: report}); err != nil {
		return welcome{}, fmt.Errorf("send hello: %w", err)
	}
	var w welcome
	if err := readMsg(ctl, &w); err != nil {
		return welcome{}, fmt.Errorf("read the hub's answer: %w", err)
	}
	if w.Error != "" || w.Redirect != "" || w.Retry != "" {
		return w, nil
	}
	_ = ctl.SetDeadline(time.Time{})
	a.sessions.Add(1)
	a.connected.Store(true)
	defer a.connected.Store(false)
	a.log.Info("tunnel up", "hub", addr, "hub_node", rc.Peer().Name)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer rc.Close()
		return a.heartbeats(gctx, ctl, report)
	})
	g.Go(func() error { return rc.Serve(gctx, a.serveStream) })
	return w, g.Wait()
}

// heartbeats sends a heartbeat every interval, with the report when
// Refresh changed it, and waits for its echo.
func (a *Agent) heartbeats(ctx context.Context, ctl *transport.Stream, sent Report) error {
	t := time.NewTicker(a.cfg.Heartbeat)
	defer t.Stop()
	for seq := uint64(1); ; seq++ {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		b := beat{Seq: seq}
		if a.cfg.Refresh != nil {
			if r, err := a.cfg.Refresh(); err != nil {
				a.log.Warn("cannot refresh the API server's credentials; keeping the last ones", "err", err)
			} else if !reflect.DeepEqual(r, sent) {
				b.Report, sent = &r, r
			}
		}
		_ = ctl.SetDeadline(time.Now().Add(a.cfg.HeartbeatTimeout))
		if err := writeMsg(ctl, b); err != nil {
			return fmt.Errorf("send heartbeat: %w", err)
		}
		if err := readMsg(ctl, &b); err != nil {
			return fmt.Errorf("hub stopped answering heartbeats: %w", err)
		}
	}
}

// serveStream serves one stream the hub opened: it reads the target,
// dials the edge service and copies both ways.
func (a *Agent) serveStream(ctx context.Context, s *transport.Stream) {
	_ = s.SetReadDeadline(time.Now().Add(helloTimeout))
	var t [1]byte
	if _, err := io.ReadFull(s, t[:]); err != nil {
		return
	}
	_ = s.SetReadDeadline(time.Time{})
	target := Target(t[0])
	var addr string
	switch target {
	case TargetKubeAPI:
		addr = a.cfg.KubeAPIAddr
	case TargetPlatformAPI:
		addr = a.cfg.PlatformAddr
	}
	if addr == "" {
		a.log.Debug("tunnelled connection refused: no service for its target", "target", target.String())
		return
	}
	d := net.Dialer{Timeout: a.cfg.DialTimeout}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		a.log.Warn("cannot reach the edge service", "target", target.String(), "addr", addr, "err", err)
		return
	}
	tc := c.(*net.TCPConn)
	_ = tc.SetNoDelay(true)
	up, down, err := pipe(ctx, s, tc)
	a.log.Debug("tunnelled connection ended", "target", target.String(), "bytes_in", up, "bytes_out", down, "err", err)
}
