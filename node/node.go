package node

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/outpost-mesh/outpost/clusters"
	"github.com/outpost-mesh/outpost/clusters/components"
	"github.com/outpost-mesh/outpost/clusters/tunnel"
	"github.com/outpost-mesh/outpost/consensus"
	"github.com/outpost-mesh/outpost/gossip"
	"github.com/outpost-mesh/outpost/internal/logbridge"
	"github.com/outpost-mesh/outpost/internal/pki"
	"github.com/outpost-mesh/outpost/ota/control"
	"github.com/outpost-mesh/outpost/transport"
)

// Node is the daemon of one host.
type Node struct {
	cfg     Config
	log     *slog.Logger
	rootLog *slog.Logger // without the node's attributes, for subsystems that add their own
	lock    *os.File
	id      *identity
	ca      *pki.CA // hub members only
	ep      *transport.Endpoint
	layer   *transport.StreamLayer
	raftNet *raft.NetworkTransport
	group   *consensus.Group
	gossip  *gossip.Gossip
	api     *apiServer // hub members only
	apiLn   net.Listener
	ctlLn   net.Listener
	fwd     *connListener // hub members: forwarded API calls
	agent   *agentService
	logs    *logBroker
	// outLogs are task outputs this site leader owes the hub.
	outLogsMu sync.Mutex
	outLogs   []logReply
	otaSite   *control.Site
	otaHub    *control.Hub // hub members only
	seeds     seedCache    // hub members: gossip seeds for joining nodes
	// siteRoster and hubRoster skip unchanged Nodes: the site's own
	// roster, and (hub members) the rosters sites report.
	siteRoster, hubRoster rosterCache
	siteClock             siteClock     // hub leader: when each site last reported
	hubSiteCount          hubSiteCount  // hub leader: refreshHubSite's last count
	revocations           revocationSet // revoked names as of the store's applied index (revoke.go)
	revokedConns          atomic.Uint64 // connections closed for a revocation (revoke.go)
	// firstMu guards firstSent: the tasks whose assignment assignFirst
	// sent to a site ahead of its report's writes, by site and task UID,
	// until the site holds them.
	firstMu    sync.Mutex
	firstSent  map[string]map[string]bool
	reg        *prometheus.Registry
	started    time.Time
	images     *imageCache           // nil: no image cache (an edge node with the mirror off)
	tunnels    *tunnel.Hub           // hub members: proxy clusters' reverse tunnels (tunnel.go)
	clusterCtl *clusters.Controller  // hub members: the cluster controller (clusters.go)
	components *components.Installer // hub members: clusters' components and virtual clusters' forwards (clusters.go)
	edgeAgent  *edgeAgent            // site nodes with --cluster: the cluster's tunnel agent (tunnel.go)
	access     accessState           // hub members: audit log, task signing key (audit.go, otagrant.go)

	warm memberWarmer // site leader: connections to its members (otawarm.go)
}

// New validates cfg, takes the data dir, loads (or, for a new hub, creates)
// the node's identity, opens the stores and binds every socket. It starts
// no goroutines; Run does. A node that must join runs Join first.
func New(cfg Config, logger *slog.Logger) (n *Node, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	n = &Node{cfg: cfg, started: time.Now(), logs: newLogBroker()}
	defer func() {
		if err != nil {
			err = errors.Join(err, n.close())
		}
	}()
	if err = os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return n, fmt.Errorf("--data-dir %s: %w", cfg.DataDir, err)
	}
	if err = os.Chmod(cfg.DataDir, 0o700); err != nil {
		return n, fmt.Errorf("--data-dir %s: %w", cfg.DataDir, err)
	}
	if n.lock, err = lockDir(cfg.DataDir); err != nil {
		return n, err
	}
	if n.id, err = n.loadOrBootstrap(); err != nil {
		return n, err
	}
	n.rootLog = logger
	n.log = logger.With("node", n.id.Name, "site", n.id.Site)
	if n.id.Role == RoleHub {
		if n.ca, err = pki.LoadOrCreate(caDir(cfg.DataDir), "Outpost mesh CA"); err != nil {
			return n, err
		}
	}
	if err = n.newTransport(); err != nil {
		return n, err
	}
	if err = n.newGroup(logger); err != nil {
		return n, err
	}
	if err = n.newGossip(); err != nil {
		return n, err
	}
	if err = n.newTunnels(); err != nil {
		return n, err
	}
	if err = n.newOTA(); err != nil {
		return n, err
	}
	if err = n.newImages(); err != nil {
		return n, err
	}
	if n.images != nil {
		n.agent.blobs = n.images.openContent
	} else {
		n.agent.blobs = siteContent{self: n.id.Name, ep: n.ep, gossip: n.gossip}.open
	}
	n.reg = prometheus.NewRegistry()
	n.reg.MustRegister(n.group.Collector())
	n.reg.MustRegister(n.transportCollectors()...)
	if n.tunnels != nil {
		n.reg.MustRegister(n.tunnels.Collector())
	}
	if n.images != nil {
		n.images.register(n.reg)
	}
	if n.id.Role == RoleHub {
		n.api = newAPIServer(n.group, &authenticator{store: n.group.Store(), now: time.Now}, n.log.With("component", "api"))
		n.api.forward = n.forwardToLeader
		n.api.onDelete = n.onDelete
		n.fwd = newConnListener(n.ep.Addr())
		n.api.subresources = map[string]func(http.ResponseWriter, *http.Request, string){"tasks/logs": n.serveTaskLogs}
		n.newAccess() // audit.go: audit log, backup
		if err = n.newClusters(); err != nil {
			return n, err
		}
		if n.apiLn, err = net.Listen("tcp", cfg.APIAddr); err != nil {
			return n, fmt.Errorf("--api-addr %s: %w", cfg.APIAddr, err)
		}
	}
	if n.ctlLn, err = listenControl(filepath.Join(cfg.DataDir, SocketName)); err != nil {
		return n, err
	}
	return n, nil
}

func caDir(dataDir string) string { return filepath.Join(dataDir, "pki") }

// loadOrBootstrap returns the stored identity or, for a node that starts a
// new hub, creates the mesh CA and the hub's first identity.
func (n *Node) loadOrBootstrap() (*identity, error) {
	id, err := loadIdentity(n.cfg.DataDir)
	if err != nil {
		return nil, err
	}
	if id != nil {
		if id.Name != n.cfg.Name && n.cfg.NameSet {
			return nil, fmt.Errorf("--name %s: this data dir belongs to node %s; use another --data-dir for another node", n.cfg.Name, id.Name)
		}
		return id, nil
	}
	if n.cfg.JoinAddr != "" {
		return nil, errors.New("this node has not joined yet: call Join before New")
	}
	if n.cfg.Site != HubSite {
		return nil, fmt.Errorf("--site %s: only a hub starts without joining; add --join HUB:7443 --token TOKEN (from `outpost token create --site %s`)", n.cfg.Site, n.cfg.Site)
	}
	ca, err := pki.LoadOrCreate(caDir(n.cfg.DataDir), "Outpost mesh CA")
	if err != nil {
		return nil, err
	}
	cert, err := transport.IssueNodeCert(ca, n.cfg.Name, HubSite, RoleHub, advertiseIPs(n.cfg), n.cfg.CertValidity)
	if err != nil {
		return nil, err
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	id = &identity{Name: n.cfg.Name, Site: HubSite, Role: RoleHub, BootstrapSite: true, GossipKey: key, dir: identityDir(n.cfg.DataDir)}
	if err := id.setCerts(&cert, ca.CertPEM); err != nil {
		return nil, err
	}
	return id, id.save()
}

// advertiseIPs are the IPs a node certificate names.
func advertiseIPs(cfg Config) []net.IP {
	ips := []net.IP{net.IPv4(127, 0, 0, 1)}
	if ip := net.ParseIP(cfg.advertiseHost()); ip != nil {
		ips = append(ips, ip)
	}
	return ips
}

func (n *Node) newTransport() error {
	tc, err := n.cfg.transportConfig(n.id, n.log)
	if err != nil {
		return err
	}
	tc.Authorize = func(p transport.Peer, k transport.Kind) error {
		if k == transport.KindBlob {
			return n.authorizeBlobStream(p)
		}
		return n.authorizeStream(p, k)
	}
	tc.Revoked = n.isRevoked
	if n.id.Role == RoleHub {
		tc.AnonymousKinds = anonymousKinds // tunnel.go
		tc.MaxConnectionReceiveWindow = tunnel.HubConnectionWindow
		tc.InitialConnectionReceiveWindow = tunnel.HubConnectionWindow
	}
	ep, err := transport.New(tc)
	if err != nil {
		return err
	}
	n.ep = ep
	n.layer = transport.NewStreamLayer(ep, ep.AdvertiseAddr())
	n.raftNet = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: n.layer, MaxPool: 4, Timeout: 10 * time.Second,
		Logger: logbridge.HCLog(n.log.With("component", "raft-net")),
	})
	ep.Handle(transport.KindRPC, n.serveRPC)
	if n.id.Role == RoleHub {
		ep.Handle(transport.KindJoin, n.serveJoin)
	}
	return nil
}

// hubSnapshotThreshold is the hub's Raft snapshot threshold (Raft's
// default, 8,192, for a site's group). A snapshot writes the whole state,
// and the hub's holds every node and the results of the tasks it keeps:
// at the default, every 10,000-node task (20,000 writes) was followed by
// one at Raft's next check (every 2 to 4 minutes), seconds of the hub's
// CPU and a trim of its log; one that fell in a 10,000-node read
// tripled the hub's last phase (3 s instead of 1). The log keeps up to
// this many entries more on disk (about 80 MB at 10,000 nodes).
const hubSnapshotThreshold = 65536

func (n *Node) newGroup(logger *slog.Logger) (err error) {
	gcfg := consensus.DefaultConfig()
	if n.id.Role == RoleHub {
		gcfg.SnapshotThreshold = hubSnapshotThreshold
	}
	if n.cfg.TuneRaft != nil {
		n.cfg.TuneRaft(&gcfg)
	}
	gcfg.ID = n.id.Name
	gcfg.Dir = filepath.Join(n.cfg.DataDir, "consensus")
	gcfg.Bootstrap = n.id.BootstrapSite
	gcfg.Transport = n.raftNet
	gcfg.Logger = logger.With("node", n.id.Name, "site", n.id.Site)
	if n.id.Role != RoleHub {
		gcfg.Footprint = consensus.FootprintEdge
	}
	if n.ca != nil {
		// Hub members hold the mesh CA's key; the key that seals secrets
		// at rest is derived from it, so each of them has it already.
		if gcfg.Sealer, err = n.stateSealer(); err != nil {
			return err
		}
	}
	kinds := CoreKinds()
	kinds.MustRegister(BlobHoldersKind, BlobFetchKind, SiteTagKind) // the site's image index and agreement
	g, err := consensus.New(gcfg, kinds)
	if err != nil {
		return err
	}
	n.group = g
	return nil
}

func (n *Node) newGossip() error {
	gc := n.cfg.gossipConfig()
	gc.Meta = n.meta()
	gc.BindAddr = n.cfg.BindAddr
	gc.BindPort = n.cfg.GossipPort
	gc.AdvertiseAddr = n.cfg.advertiseHost()
	gc.Key = n.id.GossipKey
	gc.Join = n.id.GossipSeeds
	gc.Logger = n.rootLog
	g, err := gossip.New(gc)
	if err != nil {
		return err
	}
	n.gossip = g
	return nil
}

// meta is what this node gossips about itself.
func (n *Node) meta() gossip.Meta {
	labels := map[string]string{}
	for k, v := range n.cfg.Labels {
		labels[k] = v
	}
	return gossip.Meta{
		Name: n.id.Name, Site: n.id.Site, Role: n.id.Role, Version: BuildVersion(),
		OS: goos, Arch: goarch, Labels: labels,
		QUICAddr: n.ep.AdvertiseAddr(), APIAddr: n.apiURLIfAny(),
	}
}

func (n *Node) apiURLIfAny() string {
	if n.id.Role != RoleHub {
		return ""
	}
	return "https://" + n.cfg.APIAddr
}

// lockDir takes an exclusive lock on the data dir, so two daemons never
// share one.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("--data-dir %s: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("--data-dir %s is in use by another outpost node; stop it or choose another --data-dir", dir)
	}
	return f, nil
}

func (n *Node) apiAddr() string {
	if n.apiLn == nil {
		return ""
	}
	return n.apiLn.Addr().String()
}

// APIURL returns the admin API's base URL, or "" on a node that serves none.
func (n *Node) APIURL() string {
	if n.apiLn == nil {
		return ""
	}
	return "https://" + n.apiAddr()
}

// QUICAddr returns the address other nodes dial this one at.
func (n *Node) QUICAddr() string { return n.ep.AdvertiseAddr() }

// GossipAddr returns this node's gossip address.
func (n *Node) GossipAddr() string { return n.gossip.Addr() }

// Group returns the node's Raft group member.
func (n *Node) Group() *consensus.Group { return n.group }

// Name returns the node's name.
func (n *Node) Name() string { return n.id.Name }

// Run serves until ctx is done, then stops the servers, hands off Raft
// leadership when it can, leaves the gossip pool and closes everything.
func (n *Node) Run(ctx context.Context) (err error) {
	defer func() { err = errors.Join(err, n.close()) }()
	// Servers and loops stop first, then gossip and Raft, then the
	// transport they ride on.
	loopCtx, stopLoops := context.WithCancel(context.WithoutCancel(ctx))
	defer stopLoops()
	coreCtx, stopCore := context.WithCancel(context.WithoutCancel(ctx))
	defer stopCore()
	netCtx, stopNet := context.WithCancel(context.WithoutCancel(ctx))
	defer stopNet()

	var servers []*http.Server
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", n.serveReady)
	mux.Handle("GET /metrics", n.metricsHandler())

	netEG, _ := errgroup.WithContext(netCtx)
	netEG.Go(func() error { return n.ep.Run(netCtx) })
	coreEG, _ := errgroup.WithContext(coreCtx)
	coreEG.Go(func() error { return n.group.Run(coreCtx) })
	coreEG.Go(func() error { return n.gossip.Run(coreCtx) })

	eg, egCtx := errgroup.WithContext(ctx)
	if n.api != nil {
		cert, err := n.servingCert()
		if err != nil {
			return err
		}
		n.api.register(mux)
		apiSrv := &http.Server{
			Handler:           mux,
			TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
			ReadHeaderTimeout: 10 * time.Second,
			MaxHeaderBytes:    64 << 10,
			BaseContext:       func(net.Listener) context.Context { return loopCtx },
			ErrorLog:          slog.NewLogLogger(n.log.Handler(), slog.LevelDebug),
		}
		servers = append(servers, apiSrv)
		eg.Go(func() error { return serve(apiSrv.ServeTLS(n.apiLn, "", "")) })
		// Calls forwarded by hub followers arrive over QUIC, already
		// authenticated as mesh peers; the token is checked again here.
		fwdSrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, BaseContext: func(net.Listener) context.Context { return loopCtx }}
		servers = append(servers, fwdSrv)
		eg.Go(func() error { return serveForwardedAPI(fwdSrv, n.fwd) })
	}
	ctlSrv := &http.Server{Handler: n.controlHandler(), ReadHeaderTimeout: 10 * time.Second, BaseContext: func(net.Listener) context.Context { return loopCtx }}
	servers = append(servers, ctlSrv)
	eg.Go(func() error { return serve(ctlSrv.Serve(n.ctlLn)) })
	if n.images != nil {
		servers = append(servers, n.images.serve(loopCtx, eg)...)
	}
	eg.Go(func() error { return n.runMember(loopCtx) })
	eg.Go(func() error { return n.runRoster(loopCtx) })
	eg.Go(func() error { return n.runRenewal(loopCtx) })
	eg.Go(func() error { return n.runRevocations(loopCtx) })
	eg.Go(func() error { return n.agent.Run(loopCtx) })
	eg.Go(func() error { return n.otaSite.Run(loopCtx) })
	if n.otaHub != nil {
		eg.Go(func() error { return n.otaHub.Run(loopCtx) })
		eg.Go(func() error { return n.runHubSiteOTA(loopCtx) })
	}
	if n.id.Role != RoleHub {
		eg.Go(func() error { return n.runHubLink(loopCtx) })
	} else {
		eg.Go(func() error { return n.runSiteMonitor(loopCtx) })
	}
	if n.tunnels != nil {
		eg.Go(func() error { return n.runTunnels(loopCtx) })
	}
	if n.clusterCtl != nil {
		eg.Go(func() error { return n.clusterCtl.Run(loopCtx) })
	}
	if n.components != nil {
		eg.Go(func() error { return n.components.Run(loopCtx) })
	}
	if n.edgeAgent != nil {
		eg.Go(func() error { return n.runEdgeAgent(loopCtx) })
	}
	if n.api != nil {
		eg.Go(func() error { return n.runAccess(loopCtx) }) // audit.go: restore, audit writes and pruning
	}
	n.log.Info("node started", "role", n.id.Role, "quic", n.ep.AdvertiseAddr(), "api", n.APIURL(), "data_dir", n.cfg.DataDir, "version", BuildVersion())

	<-egCtx.Done()
	n.log.Info("shutting down")
	stopLoops()
	shutCtx, cancel := context.WithTimeout(context.Background(), n.cfg.ShutdownTimeout)
	defer cancel()
	for _, s := range servers {
		err = errors.Join(err, s.Shutdown(shutCtx))
	}
	if werr := eg.Wait(); werr != nil && !errors.Is(werr, context.Canceled) {
		err = errors.Join(err, werr)
	}
	rememberSeeds(n.id, n.gossip, n.log)
	stopCore()
	err = errors.Join(err, coreEG.Wait(), n.raftNet.Close())
	stopNet()
	return errors.Join(err, netEG.Wait())
}

// rememberSeeds stores the site's live gossip members, so the next start
// finds its site without asking the hub.
func rememberSeeds(id *identity, g *gossip.Gossip, log *slog.Logger) {
	var seeds []string
	for _, m := range g.Members() {
		if m.Name != id.Name && m.State == gossip.Alive {
			seeds = append(seeds, m.Addr)
		}
	}
	if len(seeds) == 0 {
		return
	}
	id.GossipSeeds = seeds
	if err := id.save(); err != nil {
		log.Warn("could not remember gossip peers", "err", err)
	}
}

// serve treats a server's normal close as success.
func serve(err error) error {
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// servingCert issues the admin API's certificate from the mesh CA, for
// localhost, the host name and the bound address.
func (n *Node) servingCert() (tls.Certificate, error) {
	host, _, _ := net.SplitHostPort(n.cfg.APIAddr)
	names := []string{"localhost", n.id.Name}
	if h, err := os.Hostname(); err == nil {
		names = append(names, strings.ToLower(h))
	}
	ips := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	for _, extra := range n.cfg.APINames {
		if ip := net.ParseIP(extra); ip != nil {
			ips = append(ips, ip)
		} else {
			names = append(names, extra)
		}
	}
	switch ip := net.ParseIP(host); {
	case ip == nil && host != "":
		names = append(names, host)
	case ip != nil && !ip.IsUnspecified():
		ips = append(ips, ip)
	case ip != nil:
		if addrs, err := net.InterfaceAddrs(); err == nil {
			for _, a := range addrs {
				if ipn, ok := a.(*net.IPNet); ok {
					ips = append(ips, ipn.IP)
				}
			}
		}
	}
	return n.ca.Issue(pki.Request{CommonName: n.id.Name, DNSNames: names, IPs: ips, Server: true, Validity: 365 * 24 * time.Hour})
}

// serveReady is 200 once this member has a leader and a healthy store.
func (n *Node) serveReady(w http.ResponseWriter, _ *http.Request) {
	st := n.group.Status()
	switch {
	case n.group.Healthy() != nil:
		http.Error(w, "state store failed: "+n.group.Healthy().Error(), http.StatusServiceUnavailable)
	case st.LeaderID == "":
		http.Error(w, "no raft leader", http.StatusServiceUnavailable)
	default:
		_, _ = w.Write([]byte("ok\n"))
	}
}

func (n *Node) close() error {
	var errs []error
	if n.fwd != nil {
		n.fwd.Close()
	}
	if n.images != nil {
		errs = append(errs, n.images.close())
	}
	if n.raftNet != nil {
		// Run closes it too; a New that failed after newTransport has
		// only this to stop its accept goroutine. Close is idempotent.
		errs = append(errs, n.raftNet.Close())
	}
	if n.group != nil {
		errs = append(errs, n.group.Close())
	}
	if n.ep != nil {
		errs = append(errs, n.ep.Close())
	}
	for _, ln := range []net.Listener{n.apiLn, n.ctlLn} {
		if ln != nil {
			if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
				errs = append(errs, err)
			}
		}
	}
	if n.lock != nil {
		errs = append(errs, n.lock.Close())
		n.lock = nil
	}
	return errors.Join(errs...)
}
