package components

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/url"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/outpost-mesh/outpost/clusters"
	"github.com/outpost-mesh/outpost/clusters/tunnel"
	"github.com/outpost-mesh/outpost/internal/kubetest"
	"github.com/outpost-mesh/outpost/internal/pki"
	"github.com/outpost-mesh/outpost/transport"
)

// tunnelLab is a hub member's side of proxy clusters' tunnels, as node
// runs it: a QUIC endpoint on 127.0.0.1 and a tunnel Hub whose agents'
// tokens are checked against their Clusters.
type tunnelLab struct {
	ca   *pki.CA
	addr string
}

// startTunnelledHub is startHub with tunnels for proxy clusters: the
// controller binds their ports from a free range of 127.0.0.1.
func startTunnelledHub(tb testing.TB) (*hub, *tunnelLab) {
	tb.Helper()
	ca, err := pki.LoadOrCreate(tb.TempDir(), "components test mesh CA")
	if err != nil {
		tb.Fatal(err)
	}
	cert, err := transport.IssueNodeCert(ca, "hub-1", "hub", transport.RoleHub, []net.IP{net.IPv4(127, 0, 0, 1)}, time.Hour)
	if err != nil {
		tb.Fatal(err)
	}
	tc := transport.DefaultConfig()
	tc.BindAddr = "127.0.0.1:0"
	tc.CAs = ca.Pool()
	tc.GetCertificate = func() (*tls.Certificate, error) { return &cert, nil }
	tc.AnonymousKinds = []transport.Kind{transport.KindTunnel}
	tc.MaxConnectionReceiveWindow, tc.InitialConnectionReceiveWindow = tunnel.HubConnectionWindow, tunnel.HubConnectionWindow
	ep, err := transport.New(tc)
	if err != nil {
		tb.Fatal(err)
	}
	lab := &tunnelLab{ca: ca, addr: ep.Addr().String()}
	h := startHubWith(tb, nil, func(h *hub, cfg *clusters.Config) {
		hc := tunnel.DefaultHubConfig()
		hc.PublicHost = "127.0.0.1"
		hc.Verify = func(ctx context.Context, cluster, token string) error {
			return clusters.VerifyToken(ctx, h.store, cluster, token)
		}
		th, err := tunnel.NewHub(hc)
		if err != nil {
			tb.Fatal(err)
		}
		ep.Handle(transport.KindTunnel, th.ServeAgent)
		runUntilCleanup(tb, ep.Run)
		runUntilCleanup(tb, th.Run)
		cfg.Tunnels, cfg.TunnelPorts = th, freePortRange(tb)
	})
	return h, lab
}

// proxy is a proxy connection whose agent authenticates with token.
func proxy(tb testing.TB, comps ...clusters.Component) (spec clusters.ClusterSpec, token string) {
	tb.Helper()
	token, hash, err := clusters.NewToken()
	if err != nil {
		tb.Fatal(err)
	}
	return clusters.ClusterSpec{Connection: clusters.Connection{Type: clusters.ConnectionProxy, TokenHash: hash}, Components: comps}, token
}

// startAgent runs cluster's tunnel agent in front of the shared API
// server until the test ends or its Cluster is deleted, as `outpost
// agent` runs in the cluster.
func (l *tunnelLab) startAgent(tb testing.TB, cluster, token string) {
	tb.Helper()
	u, err := url.Parse(kube.URL)
	if err != nil {
		tb.Fatal(err)
	}
	cfg := tunnel.DefaultAgentConfig()
	cfg.Cluster, cfg.Token, cfg.HubAddrs, cfg.CAFingerprint = cluster, token, []string{l.addr}, l.ca.Fingerprint()
	cfg.KubeAPIAddr = u.Host
	cfg.Report = tunnel.Report{ServerCA: kube.CAPEM, ServerName: kubetest.ServerName, BearerToken: kubetest.AdminToken}
	cfg.Heartbeat, cfg.MaxBackoff = 500*time.Millisecond, 500*time.Millisecond
	a, err := tunnel.NewAgent(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	runUntilCleanup(tb, func(ctx context.Context) error {
		// Once its Cluster is deleted the hub refuses the agent: it
		// exits, as it would in the cluster.
		if err := a.Run(ctx); !errors.Is(err, tunnel.ErrRefused) {
			return err
		}
		return nil
	})
}

// runUntilCleanup runs fn until the test ends; its error fails the test.
func runUntilCleanup(tb testing.TB, fn func(ctx context.Context) error) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var g errgroup.Group
	g.Go(func() error { return fn(ctx) })
	tb.Cleanup(func() {
		cancel()
		if err := g.Wait(); err != nil {
			tb.Errorf("run: %v", err)
		}
	})
}

// freePortRange is a range of two adjacent loopback ports free a moment
// ago: one proxy cluster's tunnel ports.
func freePortRange(tb testing.TB) clusters.PortRange {
	tb.Helper()
	first, last := kubetest.PortPair(tb)
	return clusters.PortRange{First: first, Last: last}
}
