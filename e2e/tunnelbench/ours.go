package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/outpost-mesh/outpost/clusters"
	"github.com/outpost-mesh/outpost/clusters/tunnel"
	"github.com/outpost-mesh/outpost/internal/pki"
	"github.com/outpost-mesh/outpost/transport"
)

// benchToken is the cluster token of the bench's one cluster.
const benchToken = "bench-token"

// hubMain runs Outpost's hub side: a QUIC endpoint as a hub member has it
// and the tunnel Hub, with the cluster's ports bound on 127.0.0.1. It
// writes the mesh CA's fingerprint to DIR/fingerprint for the agent.
func hubMain(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("hub", flag.ExitOnError)
	quic := fs.String("quic", "127.0.0.1:7443", "UDP address of the QUIC endpoint")
	port := fs.Int("port", 17000, "the cluster's API port (the platform port is the next)")
	dir := fs.String("dir", "", "directory for the CA")
	_ = fs.Parse(args)
	ca, err := pki.LoadOrCreate(filepath.Join(*dir, "pki"), "tunnelbench CA")
	if err != nil {
		return err
	}
	host, _, err := net.SplitHostPort(*quic)
	if err != nil {
		return err
	}
	cert, err := transport.IssueNodeCert(ca, "hub-1", "hub", transport.RoleHub, []net.IP{net.ParseIP(host)}, 24*time.Hour)
	if err != nil {
		return err
	}
	tc := transport.DefaultConfig()
	tc.BindAddr = *quic
	tc.CAs = ca.Pool()
	tc.GetCertificate = func() (*tls.Certificate, error) { return &cert, nil }
	tc.AnonymousKinds = []transport.Kind{transport.KindJoin, transport.KindTunnel}
	tc.MaxConnectionReceiveWindow = tunnel.HubConnectionWindow // as node sets it on hub members
	tc.InitialConnectionReceiveWindow = tunnel.HubConnectionWindow
	ep, err := transport.New(tc)
	if err != nil {
		return err
	}
	hc := tunnel.DefaultHubConfig()
	hc.PublicHost = "127.0.0.1"
	hc.Verify = func(_ context.Context, _, token string) error {
		if token != benchToken {
			return clusters.ErrBadToken
		}
		return nil
	}
	hub, err := tunnel.NewHub(hc)
	if err != nil {
		return err
	}
	ep.Handle(transport.KindTunnel, hub.ServeAgent)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return ep.Run(gctx) })
	g.Go(func() error { return hub.Run(gctx) })
	g.Go(func() error {
		if _, err := hub.Ensure(gctx, "bench", clusters.Binding{Ports: clusters.Ports{KubernetesAPI: *port, PlatformAPI: *port + 1}}); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(*dir, "fingerprint"), []byte(ca.Fingerprint()), 0o600)
	})
	if err := g.Wait(); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// agentMain runs Outpost's agent: the cluster's API port leads to -target
// (the backend), its platform port to -platform (the kube-apiserver).
func agentMain(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("agent", flag.ExitOnError)
	hub := fs.String("hub", "127.0.0.1:7443", "the hub's QUIC address")
	fp := fs.String("fingerprint", "", "the mesh CA's fingerprint")
	target := fs.String("target", "127.0.0.1:9000", "the backend")
	platform := fs.String("platform", "", "the kube-apiserver, when measured")
	_ = fs.Parse(args)
	cfg := tunnel.DefaultAgentConfig()
	cfg.Cluster, cfg.Token, cfg.HubAddrs, cfg.CAFingerprint, cfg.KubeAPIAddr = "bench", benchToken, []string{*hub}, *fp, *target
	cfg.PlatformAddr = *platform
	a, err := tunnel.NewAgent(cfg)
	if err != nil {
		return err
	}
	if err := a.Run(ctx); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	return nil
}
