package node

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

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
// leader serves tunnels; other members send agents to it. A site node
// started with --cluster gets its edge agent here instead.
func (n *Node) newTunnels() error {
	if err := n.newEdgeAgent(); err != nil {
		return err
	}
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
	// An agent that connects or goes away is reconciled at once, not at
	// the next resync: the Cluster goes Ready as the agent arrives.
	// newClusters runs after this, before anything calls OnChange.
	hc.OnChange = func(cluster string) {
		if n.clusterCtl != nil {
			n.clusterCtl.Enqueue(cluster)
		}
	}
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

// validateEdgeCluster checks the edge-node agent's flags: --cluster,
// --kubeconfig and --cluster-token go together.
func (c Config) validateEdgeCluster() []error {
	if c.EdgeCluster == "" {
		if c.EdgeKubeconfig != "" || c.EdgeClusterToken != "" {
			return []error{errors.New("--kubeconfig and --cluster-token serve an edge cluster's tunnel: give --cluster NAME with them")}
		}
		return nil
	}
	var errs []error
	if msgs := validation.IsDNS1123Label(c.EdgeCluster); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("--cluster %q: %s", c.EdgeCluster, strings.Join(msgs, "; ")))
	}
	if c.EdgeKubeconfig == "" {
		errs = append(errs, errors.New("--cluster needs --kubeconfig PATH: the edge cluster's API server, which the tunnel reaches"))
	}
	if c.EdgeClusterToken == "" {
		errs = append(errs, errors.New("--cluster needs --cluster-token (or OUTPOST_CLUSTER_TOKEN): the token `outpost cluster create --proxy` printed"))
	} else if _, _, err := splitEdgeToken(c.EdgeClusterToken); err != nil {
		errs = append(errs, err)
	}
	return errs
}

// splitEdgeToken takes TOKEN or TOKEN.FINGERPRINT apart.
func splitEdgeToken(s string) (token, fingerprint string, err error) {
	if !strings.Contains(s, ".") {
		return s, "", nil
	}
	if token, fingerprint, err = clusters.ParseAgentToken(s); err != nil {
		return "", "", fmt.Errorf("--cluster-token: %w", err)
	}
	return token, fingerprint, nil
}

// edgeAgent is a site node's stand-in for `outpost agent`: the reverse
// tunnel of one proxy cluster at the node's site, run while the node leads
// its site, so one node of the site serves it at a time and another takes
// over when the leader goes.
type edgeAgent struct {
	rest  *rest.Config
	token string
	fp    string // the mesh CA's fingerprint, which pins the hub
}

// newEdgeAgent checks the edge-node agent's settings once, so that a bad
// --kubeconfig or a token for another mesh fails the start.
func (n *Node) newEdgeAgent() error {
	if n.cfg.EdgeCluster == "" {
		return nil
	}
	if n.id.Role == RoleHub {
		return fmt.Errorf("--cluster %s: this node is a hub member; the tunnel's agent runs on a node of the edge site (or as `outpost agent`)", n.cfg.EdgeCluster)
	}
	rc, err := clientcmd.BuildConfigFromFlags("", n.cfg.EdgeKubeconfig)
	if err != nil {
		return fmt.Errorf("--kubeconfig %s: %w", n.cfg.EdgeKubeconfig, err)
	}
	if _, _, err := tunnel.EdgeAPI(rc); err != nil {
		return fmt.Errorf("--kubeconfig %s: %w", n.cfg.EdgeKubeconfig, err)
	}
	token, fp, err := splitEdgeToken(n.cfg.EdgeClusterToken)
	if err != nil {
		return err
	}
	n.id.mu.RLock()
	sum := sha256.Sum256(n.id.ca.Raw)
	n.id.mu.RUnlock()
	mesh := hex.EncodeToString(sum[:])
	if fp != "" && !strings.EqualFold(fp, mesh) {
		return fmt.Errorf("--cluster-token: its CA fingerprint %s is not this mesh's (%s): the token is for another hub", fp, mesh)
	}
	n.edgeAgent = &edgeAgent{rest: rc, token: token, fp: mesh}
	return nil
}

const (
	// edgeAgentPoll is how often a site node checks whether it leads, and
	// so serves its cluster's tunnel.
	edgeAgentPoll = time.Second
	// edgeAgentRefusedWait is the pause after the hub refused the token
	// (a Cluster not created yet, a rotated token) before trying again.
	edgeAgentRefusedWait = 30 * time.Second
	// edgeAgentRetryWait is the pause after the agent failed otherwise (the
	// kubeconfig's files unreadable, no hub address known yet).
	edgeAgentRetryWait = 5 * time.Second
)

// runEdgeAgent serves the cluster's tunnel while this node leads its site,
// until ctx is done.
func (n *Node) runEdgeAgent(ctx context.Context) error {
	t := time.NewTicker(edgeAgentPoll)
	defer t.Stop()
	for {
		if n.group.IsLeader() {
			err := n.serveEdgeCluster(ctx)
			wait := time.Duration(0)
			switch {
			case errors.Is(err, tunnel.ErrRefused):
				wait = edgeAgentRefusedWait
				n.log.Error("the hub refused this node as the cluster's agent; check --cluster and --cluster-token", "cluster", n.cfg.EdgeCluster, "err", err, "retry_in", wait)
			case err != nil:
				wait = edgeAgentRetryWait
				n.log.Warn("cluster tunnel agent stopped", "cluster", n.cfg.EdgeCluster, "err", err, "retry_in", wait)
			}
			if wait > 0 {
				select {
				case <-ctx.Done():
				case <-time.After(wait):
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// serveEdgeCluster runs the tunnel's agent until this node stops leading
// its site, the hub refuses it, or ctx is done.
func (n *Node) serveEdgeCluster(ctx context.Context) error {
	eg, ctx := errgroup.WithContext(ctx)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	eg.Go(func() error {
		defer cancel()
		t := time.NewTicker(edgeAgentPoll)
		defer t.Stop()
		for n.group.IsLeader() {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
			}
		}
		n.log.Info("no longer the site leader: the cluster's tunnel goes to the next one", "cluster", n.cfg.EdgeCluster)
		return nil
	})
	eg.Go(func() error {
		defer cancel()
		return n.edgeAgent.run(ctx, n.cfg.EdgeCluster, n.hubAddrList(), n.log)
	})
	return eg.Wait()
}

// run is one term of the agent: it reads the API server's credentials (a
// rotated token is picked up on each heartbeat) and keeps the tunnel.
func (a *edgeAgent) run(ctx context.Context, cluster string, hubs []string, log *slog.Logger) error {
	if len(hubs) == 0 {
		return errors.New("this node knows no hub member's address yet")
	}
	cfg := tunnel.DefaultAgentConfig()
	cfg.Cluster, cfg.Token, cfg.CAFingerprint, cfg.HubAddrs, cfg.Logger = cluster, a.token, a.fp, hubs, log
	var err error
	if cfg.KubeAPIAddr, cfg.Report, err = tunnel.EdgeAPI(a.rest); err != nil {
		return fmt.Errorf("edge API server: %w", err)
	}
	cfg.Report.Version = BuildVersion()
	cfg.Refresh = func() (tunnel.Report, error) {
		_, r, err := tunnel.EdgeAPI(a.rest)
		r.Version = BuildVersion()
		return r, err
	}
	agent, err := tunnel.NewAgent(cfg)
	if err != nil {
		return err
	}
	return agent.Run(ctx)
}
