package node

import (
	"context"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/outpost-mesh/outpost/clusters"
	"github.com/outpost-mesh/outpost/clusters/tunnel"
	"github.com/outpost-mesh/outpost/transport"
)

// anonymousKinds are the streams a hub member accepts from connections
// without a mesh certificate: joining nodes, and edge cluster agents'
// tunnel control streams (authenticated by their cluster token).
var anonymousKinds = []transport.Kind{transport.KindJoin, transport.KindTunnel}

// newTunnels sets up a hub member's side of proxy clusters' reverse
// tunnels: the Hub the cluster controller drives (clusters.Tunnels) and the
// KindTunnel handler that agents' control streams reach. Only the hub
// leader serves tunnels; other members send agents to it.
func (n *Node) newTunnels() error {
	if n.id.Role != RoleHub {
		return nil
	}
	hc := tunnel.DefaultHubConfig()
	hc.PublicHost = n.cfg.BindAddr
	hc.Verify = func(ctx context.Context, cluster, token string) error {
		return clusters.VerifyToken(ctx, n.group.Store(), cluster, token)
	}
	hc.Leader = n.tunnelLeader
	hc.HubAddrs = n.hubAddrs
	hc.Logger = n.log
	h, err := tunnel.NewHub(hc)
	if err != nil {
		return err
	}
	n.tunnels = h
	n.ep.Handle(transport.KindTunnel, h.ServeAgent)
	return nil
}

// tunnelLeader says whether this member serves tunnels (it leads the hub)
// and, when not, the leader's QUIC address.
func (n *Node) tunnelLeader() (bool, string) {
	if n.group.IsLeader() {
		return true, ""
	}
	r := n.group.Raft()
	if r == nil {
		return false, ""
	}
	addr, _ := r.LeaderWithID()
	return false, string(addr)
}

// tunnelLeaderPoll is how often a hub member checks that it still leads.
const tunnelLeaderPoll = time.Second

// runTunnels runs the tunnels' hub side until ctx is done and, whenever
// this member stops leading, releases every tunnel, so its ports are free
// and its agents go to the new leader, whose controller binds the same
// ports.
func (n *Node) runTunnels(ctx context.Context) error {
	eg, ctx := errgroup.WithContext(ctx)
	eg.Go(func() error { return n.tunnels.Run(ctx) })
	eg.Go(func() error {
		t := time.NewTicker(tunnelLeaderPoll)
		defer t.Stop()
		leading := false
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
			}
			now := n.group.IsLeader()
			if leading && !now {
				n.log.Info("no longer the hub leader: releasing tunnels")
				n.tunnels.Reset()
			}
			leading = now
		}
	})
	return eg.Wait()
}
