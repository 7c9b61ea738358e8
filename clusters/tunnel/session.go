package tunnel

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/outpost-mesh/outpost/clusters"
	"github.com/outpost-mesh/outpost/transport"
)

// helloTimeout bounds how long an agent may take to say who it is.
const helloTimeout = 15 * time.Second

// agent is one connected, authenticated agent: its control stream, on
// whose connection the hub opens the tunnelled streams.
type agent struct {
	ctl     *transport.Stream
	cluster string
	token   string       // re-checked on every heartbeat
	seen    atomic.Int64 // unix nanoseconds of the last message
}

func (a *agent) lastSeen() time.Time { return time.Unix(0, a.seen.Load()) }

// drop ends the agent's control stream; its ServeAgent returns and the
// agent redials.
func (a *agent) drop() { _ = a.ctl.Close() }

// ServeAgent serves an agent's control stream (a transport.KindTunnel
// stream from a connection without a certificate): it reads the hello,
// sends a non-leader to the leader, checks the cluster token, registers the
// agent and echoes its heartbeats until the stream or the connection ends.
// Register it with the endpoint's Handle for transport.KindTunnel.
func (h *Hub) ServeAgent(ctx context.Context, s *transport.Stream) {
	log := h.log.With("remote", s.RemoteAddr().String())
	_ = s.SetDeadline(time.Now().Add(helloTimeout))
	var hi hello
	if err := readMsg(s, &hi); err != nil {
		log.Debug("agent hello unreadable", "err", err)
		_ = writeMsg(s, welcome{Error: "malformed hello: " + err.Error()})
		return
	}
	log = log.With("cluster", hi.Cluster)
	var hubAddrs []string
	if h.cfg.HubAddrs != nil {
		hubAddrs = h.cfg.HubAddrs()
	}
	if h.cfg.Leader != nil {
		if leading, leader := h.cfg.Leader(); !leading {
			if leader == "" {
				_ = writeMsg(s, welcome{Retry: "the hub has no leader right now", HubAddrs: hubAddrs})
			} else {
				_ = writeMsg(s, welcome{Redirect: leader, HubAddrs: hubAddrs})
			}
			return
		}
	}
	if hi.Cluster == "" {
		_ = writeMsg(s, welcome{Error: "the hello names no cluster (--cluster)"})
		return
	}
	if err := h.cfg.Verify(ctx, hi.Cluster, hi.Token); err != nil {
		if !errors.Is(err, clusters.ErrBadToken) {
			log.Warn("cannot check an agent's token now", "err", err)
			_ = writeMsg(s, welcome{Retry: "the hub cannot check the token now: " + err.Error(), HubAddrs: hubAddrs})
			return
		}
		log.Warn("agent refused", "reason", err)
		_ = writeMsg(s, welcome{Error: fmt.Sprintf("cluster %s: %v (check --cluster and --token)", hi.Cluster, err)})
		return
	}
	a := &agent{ctl: s, cluster: hi.Cluster, token: hi.Token}
	a.seen.Store(time.Now().UnixNano())
	h.register(a, hi.Report)
	defer h.unregister(a)
	if err := writeMsg(s, welcome{HubAddrs: hubAddrs}); err != nil {
		return
	}
	log.Info("agent connected", "version", hi.Version)
	err := h.heartbeats(ctx, a)
	log.Info("agent disconnected", "reason", err)
}

// heartbeats echoes the agent's heartbeats, and re-checks its token on
// each, until one fails to arrive in time or the token is no longer valid
// (revoked, or the Cluster deleted).
func (h *Hub) heartbeats(ctx context.Context, a *agent) error {
	for {
		_ = a.ctl.SetReadDeadline(time.Now().Add(h.cfg.HeartbeatTimeout))
		var b beat
		if err := readMsg(a.ctl, &b); err != nil {
			return err
		}
		a.seen.Store(time.Now().UnixNano())
		if b.Report != nil {
			h.updateReport(a, *b.Report)
		}
		_ = a.ctl.SetWriteDeadline(time.Now().Add(h.cfg.HeartbeatTimeout))
		if err := writeMsg(a.ctl, beat{Seq: b.Seq}); err != nil {
			return err
		}
		if err := h.cfg.Verify(ctx, a.cluster, a.token); errors.Is(err, clusters.ErrBadToken) {
			return fmt.Errorf("%w: %v", errRevoked, err)
		}
	}
}

// register makes a the cluster's agent, dropping an earlier one, and wakes
// connections waiting for it.
func (h *Hub) register(a *agent, r Report) {
	h.n.agentsIn.Add(1)
	h.mu.Lock()
	old := h.agents[a.cluster]
	h.agents[a.cluster] = a
	h.seen[a.cluster] = seen{at: time.Now(), report: r}
	close(h.wake)
	h.wake = make(chan struct{})
	h.mu.Unlock()
	if old != nil {
		old.drop()
	}
	h.changed(a.cluster)
}

// updateReport replaces what a, if still the cluster's agent, reported.
func (h *Hub) updateReport(a *agent, r Report) {
	h.mu.Lock()
	if h.agents[a.cluster] == a {
		h.seen[a.cluster] = seen{at: time.Now(), report: r}
	}
	h.mu.Unlock()
}

// unregister forgets a unless a newer agent has replaced it.
func (h *Hub) unregister(a *agent) {
	h.mu.Lock()
	current := h.agents[a.cluster] == a
	if current {
		delete(h.agents, a.cluster)
		if s, ok := h.seen[a.cluster]; ok {
			s.at = a.lastSeen()
			h.seen[a.cluster] = s
		}
	}
	h.mu.Unlock()
	if current {
		h.changed(a.cluster)
	}
}

func (h *Hub) changed(cluster string) {
	if h.cfg.OnChange != nil {
		h.cfg.OnChange(cluster)
	}
}

// errRevoked ends a connected agent's session when its token stops
// verifying (revoked, or the Cluster deleted).
var errRevoked = errors.New("the cluster token is no longer valid")
