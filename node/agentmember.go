package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"golang.org/x/sync/errgroup"

	"github.com/outpost-mesh/outpost/gossip"
	"github.com/outpost-mesh/outpost/transport"
)

// Agent is a stateless member of a site: it has its own identity, QUIC
// endpoint and gossip membership, and runs the tasks its site leader
// dispatches, but it holds no site state. It never joins the site's Raft
// group (its gossip metadata says so), serves no admin API or control
// socket, keeps no hub link and does not renew its certificate. The scale
// benchmark hosts thousands of agents in one process, their journals in
// one shared RunStore.
type Agent struct {
	cfg    Config
	id     *identity
	log    *slog.Logger
	lock   *os.File
	ep     *transport.Endpoint
	gossip *gossip.Gossip
	agent  *agentService
}

// NewAgent loads the identity that Join stored in cfg.DataDir and binds
// the agent's sockets; it starts no goroutines. A nil store keeps the
// journal and results as files in the data dir, which the agent then
// locks, as a node does. A store given is shared by the agents of one
// process, whose owner keeps a second process out of their data dirs
// (the benchmark's simulator: its store's Badger, opened first in the
// same directory, refuses a second simulator), and the agent takes no
// lock: every exec's fork copies the process's open files and the exec
// closes each copy, and a thousand locked files made each exec of the
// simulator about 0.2 ms dearer (BenchmarkExecOpenFiles in e2e/otascale).
func NewAgent(cfg Config, store RunStore, logger *slog.Logger) (a *Agent, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	a = &Agent{cfg: cfg}
	defer func() {
		if err != nil {
			err = errors.Join(err, a.close())
		}
	}()
	if store == nil {
		if a.lock, err = lockDir(cfg.DataDir); err != nil {
			return a, err
		}
	}
	if a.id, err = loadIdentity(cfg.DataDir); err != nil {
		return a, err
	}
	if a.id == nil {
		return a, fmt.Errorf("--data-dir %s holds no identity: join first (--join HUB:7443 --token TOKEN)", cfg.DataDir)
	}
	a.log = logger.With("node", a.id.Name, "site", a.id.Site)
	if a.agent, err = newAgentService(cfg.DataDir, cfg.OTAPolicy, cfg.OTARetention, a.id, store, a.log); err != nil {
		return a, err
	}
	a.agent.report = a.deliverRefusals // otarefusal_site.go
	tc, err := cfg.transportConfig(a.id, a.log)
	if err != nil {
		return a, err
	}
	tc.Authorize = a.authorizeStream
	if a.ep, err = transport.New(tc); err != nil {
		return a, err
	}
	a.ep.Handle(transport.KindRPC, a.serveRPC)
	gc := cfg.gossipConfig()
	gc.Meta = gossip.Meta{
		Name: a.id.Name, Site: a.id.Site, Role: a.id.Role, Version: BuildVersion(),
		OS: goos, Arch: goarch, Labels: cfg.Labels, QUICAddr: a.ep.AdvertiseAddr(), Stateless: true,
	}
	gc.BindAddr = cfg.BindAddr
	gc.BindPort = cfg.GossipPort
	gc.AdvertiseAddr = cfg.advertiseHost()
	gc.Key = a.id.GossipKey
	gc.Join = a.id.GossipSeeds
	gc.Logger = logger
	gc.EventBuffer = 1 // nothing reads an agent's membership events
	if a.gossip, err = gossip.New(gc); err != nil {
		return a, err
	}
	a.agent.blobs = siteContent{self: a.id.Name, ep: a.ep, gossip: a.gossip}.open
	return a, nil
}

// authorizeStream admits only calls from the agent's own site: it holds
// no state to replicate and serves only its site leader's task calls.
func (a *Agent) authorizeStream(p transport.Peer, k transport.Kind) error {
	if k != transport.KindRPC || p.Site != a.id.Site {
		return fmt.Errorf("agent %s of site %s serves only rpc streams of its site, not %v from %s/%s", a.id.Name, a.id.Site, k, p.Site, p.Name)
	}
	return nil
}

func (a *Agent) serveRPC(ctx context.Context, s *transport.Stream) {
	h, ok := readRPCHeader(s)
	if !ok {
		return
	}
	if !a.agent.serve(ctx, h.Method, s) {
		refuseMethod(s, h.Method)
	}
}

// Name returns the agent's node name.
func (a *Agent) Name() string { return a.id.Name }

// Run serves until ctx is done, then ends the runs in progress, leaves
// the gossip pool and closes the endpoint.
func (a *Agent) Run(ctx context.Context) (err error) {
	defer func() { err = errors.Join(err, a.close()) }()
	netCtx, stopNet := context.WithCancel(context.WithoutCancel(ctx))
	defer stopNet()
	gossipCtx, stopGossip := context.WithCancel(context.WithoutCancel(ctx))
	defer stopGossip()
	netEG, _ := errgroup.WithContext(netCtx)
	netEG.Go(func() error { return a.ep.Run(netCtx) })
	gossipEG, _ := errgroup.WithContext(gossipCtx)
	gossipEG.Go(func() error { return a.gossip.Run(gossipCtx) })
	err = a.agent.Run(ctx)
	rememberSeeds(a.id, a.gossip, a.log)
	stopGossip()
	err = errors.Join(err, gossipEG.Wait())
	stopNet()
	return errors.Join(err, netEG.Wait())
}

func (a *Agent) close() error {
	var errs []error
	if a.ep != nil {
		errs = append(errs, a.ep.Close())
	}
	if a.lock != nil {
		errs = append(errs, a.lock.Close())
		a.lock = nil
	}
	return errors.Join(errs...)
}
