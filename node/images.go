package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/outpost-mesh/outpost/images/fetch"
	"github.com/outpost-mesh/outpost/images/registry"
	"github.com/outpost-mesh/outpost/images/store"
	"github.com/outpost-mesh/outpost/internal/compaction"
	"github.com/outpost-mesh/outpost/transport"
)

// imageCache is the node's share of the layered image cache: its content
// store, the mirror on --registry-addr, the blob streams that site peers
// (and, on hub members, sites) read over QUIC, and its part of the site's
// blob index. See DESIGN.md, "Image cache".
type imageCache struct {
	n   *Node
	log *slog.Logger
	hub bool // a hub member: serves the hub tier to sites

	db    *badger.DB
	pacer *compaction.Pacer // compacts db
	store *store.Store
	index *blobIndex
	agree *siteAgreement // who fetches a blob for the site; tags agreed on
	auth  *authenticator // hub members: API tokens for pushes

	// chain is the node's full fetch chain: store, site peers, then the
	// hub tier (edge nodes) and the origin. local is the store only: what
	// peers read, so a peer request never makes this node fetch.
	chain, local *fetch.Source

	mirror   *registry.Handler // nil with the mirror off
	mirrorLn net.Listener
	peerAPI  *registry.Handler // over local: for peers of the site
	tierAPI  *registry.Handler // hub members: over chain, for sites
	blobLn   *connListener     // accepted KindBlob streams

	peers *peerTiers
	hubT  *fetch.HTTPTier // edge nodes: the hub's tier
	res   *imageResources // figures, pins and syncs (images_sync.go)

	servedPeers, servedSites atomic.Uint64 // blob bytes sent on blob streams
	verifyMu                 sync.Mutex    // one re-verification reads the disk at a time
	closeOnce                sync.Once
	closeErr                 error
}

// newImages opens the node's image cache: always on hub members (they are
// the tier above every site), on other nodes only with the mirror on. It
// binds the mirror's port and registers the KindBlob handler; Run starts
// the rest.
func (n *Node) newImages() error {
	hub := n.id.Role == RoleHub
	if n.cfg.RegistryPush && !hub {
		return fmt.Errorf("--registry-push: only hub members accept pushes, and %s is a node of site %s", n.id.Name, n.id.Site)
	}
	ln, err := n.listenMirror()
	if err != nil {
		return err
	}
	if ln == nil && n.cfg.RegistryPush {
		return fmt.Errorf("--registry-push needs the mirror, whose address %s is in use: set --registry-addr", n.cfg.RegistryAddr)
	}
	if ln == nil && !hub {
		return nil
	}
	c := &imageCache{n: n, log: n.log.With("component", "images"), hub: hub, mirrorLn: ln}
	n.images = c
	c.index = newBlobIndex(c)
	c.agree = newSiteAgreement(c)
	c.peers = newPeerTiers(c)
	c.res = newImageResources(c)
	dir := filepath.Join(n.cfg.DataDir, "images")
	if c.db, err = openImageDB(filepath.Join(dir, "meta"), c.log); err != nil {
		return err
	}
	c.pacer = compaction.Start(c.db, compaction.Interval, c.log)
	scfg := store.DefaultConfig()
	scfg.Dir = dir
	if !filepath.IsAbs(dir) {
		if scfg.Dir, err = filepath.Abs(dir); err != nil {
			return fmt.Errorf("--data-dir %s: %w", n.cfg.DataDir, err)
		}
	}
	scfg.Quota = n.cfg.CacheSize
	scfg.RetainOwnRegistry = hub // pushed images have no other copy
	scfg.OnChange = c.index.changed
	scfg.Logger = n.log
	if c.store, err = store.New(scfg, c.db); err != nil {
		return err
	}
	ocfg := fetch.OriginConfig{Logger: n.log}
	if hub {
		// Hub members reach origins with the credentials of the matching
		// Registry/ClusterRegistry (images_resources.go); edge nodes,
		// which hold none, go anonymously when the hub is unreachable.
		if err := n.registerImageKinds(); err != nil {
			return err
		}
		ocfg.Auth, ocfg.Insecure = c.originAuth, c.originInsecure
	}
	origin, err := fetch.NewOrigin(ocfg)
	if err != nil {
		return err
	}
	fcfg := fetch.DefaultConfig()
	fcfg.Store, fcfg.Self, fcfg.Logger = c.store, n.id.Name, n.log
	fcfg.Peers = c.index
	fcfg.OnCorrupt = c.peers.corrupt
	fcfg.SiteFetch = c.agree
	fcfg.OnTagResolved, fcfg.LookupTag = c.agree.tagResolved, c.agree.lookupTag
	fcfg.Upstream = []fetch.Tier{origin}
	if !hub {
		if c.hubT, err = c.peers.hubTier(); err != nil {
			return err
		}
		fcfg.Upstream = []fetch.Tier{c.hubT, origin}
	}
	if c.chain, err = fetch.New(fcfg); err != nil {
		return err
	}
	lcfg := fetch.DefaultConfig()
	lcfg.Store, lcfg.Logger = c.store, n.log
	if c.local, err = fetch.New(lcfg); err != nil {
		return err
	}
	rcfg := registry.DefaultConfig()
	rcfg.Logger = n.log
	if c.peerAPI, err = registry.New(rcfg, c.local); err != nil {
		return err
	}
	var src registry.Source = c.chain
	if hub {
		c.auth = &authenticator{store: n.group.Store(), now: time.Now}
		src = hubSource{own: registry.NewStoreSource(c.store), chain: c.chain}
		if c.tierAPI, err = registry.New(rcfg, src); err != nil {
			return err
		}
	}
	if ln != nil {
		mcfg := registry.DefaultConfig()
		mcfg.DefaultNamespace = n.cfg.RegistryDefaultNS
		mcfg.Push = hub && n.cfg.RegistryPush
		mcfg.Store = c.store
		mcfg.Authorize = c.authorizePush
		if hub && !isLoopback(ln.Addr()) {
			// A hub's mirror beyond loopback (where headquarters pushes)
			// is neither an open proxy nor an open copy of the hub's own
			// registry: pulls take a token too. A site node's mirror on
			// its LAN serves the site's hosts anonymously.
			mcfg.AuthorizePull = c.authorizePull
		}
		mcfg.OnPull = func(ns, repo string) {
			if err := c.store.RecordPull(ns, repo); err != nil {
				c.log.Debug("record pull", "ns", ns, "repo", repo, "err", err)
			}
		}
		mcfg.Logger = n.log
		if c.mirror, err = registry.New(mcfg, src); err != nil {
			return err
		}
	}
	c.blobLn = newConnListener(n.ep.Addr())
	n.ep.Handle(transport.KindBlob, c.serveBlobStream)
	return nil
}

// hubSource is what a hub member serves: the hub's own registry
// (namespace "") from its store, repository by repository, as pushed (the
// registry the OCI conformance suite checks); every other registry
// through its fetch chain.
type hubSource struct {
	own   *registry.StoreSource
	chain *fetch.Source
}

var _ registry.Source = hubSource{}

func (h hubSource) pick(ns string) registry.Source {
	if ns == "" {
		return h.own
	}
	return h.chain
}

func (h hubSource) Manifest(ctx context.Context, ns, repo, ref string) (registry.Manifest, error) {
	return h.pick(ns).Manifest(ctx, ns, repo, ref)
}

func (h hubSource) Blob(ctx context.Context, ns, repo string, d digest.Digest) (registry.Blob, error) {
	return h.pick(ns).Blob(ctx, ns, repo, d)
}

func (h hubSource) StatBlob(ctx context.Context, ns, repo string, d digest.Digest) (int64, error) {
	return h.pick(ns).StatBlob(ctx, ns, repo, d)
}

func (h hubSource) Tags(ctx context.Context, ns, repo string) ([]string, error) {
	return h.pick(ns).Tags(ctx, ns, repo)
}

func (h hubSource) Referrers(ctx context.Context, ns, repo string, subject digest.Digest) ([]ocispec.Descriptor, error) {
	return h.pick(ns).Referrers(ctx, ns, repo, subject)
}

// listenMirror binds --registry-addr; nil when the mirror is off, or when
// the default address is in use (then with a warning).
func (n *Node) listenMirror() (net.Listener, error) {
	if n.cfg.RegistryAddr == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", n.cfg.RegistryAddr)
	switch {
	case err == nil:
		return ln, nil
	case errors.Is(err, syscall.EADDRINUSE) && !n.cfg.RegistryAddrSet:
		n.log.Warn("the image mirror is off: its default address is in use (a local registry?); set --registry-addr to another address, or to \"\" to turn the mirror off", "addr", n.cfg.RegistryAddr)
		return nil, nil
	default:
		return nil, fmt.Errorf("--registry-addr %s: %w", n.cfg.RegistryAddr, err)
	}
}

// openImageDB opens the image store's Badger: its own, synchronous (an
// acknowledged blob survives a crash), and small, so compacted by a Pacer.
func openImageDB(dir string, log *slog.Logger) (*badger.DB, error) {
	opts := compaction.Paced(badger.DefaultOptions(dir)).
		WithLogger(badgerLog{log}).
		WithSyncWrites(true).
		WithMemTableSize(4 << 20).
		WithNumMemtables(2).
		WithValueThreshold(64 << 10). // under a transaction's 15% of a memtable
		WithBlockCacheSize(4 << 20).
		WithValueLogFileSize(64 << 20).
		WithNumVersionsToKeep(1).
		WithMetricsEnabled(false)
	db, err := badger.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("open image store %s: %w", dir, err)
	}
	return db, nil
}

// badgerLog bridges Badger's logger into slog; its Info is chatty.
type badgerLog struct{ l *slog.Logger }

func (b badgerLog) Errorf(f string, a ...any)   { b.l.Error(fmt.Sprintf(f, a...)) }
func (b badgerLog) Warningf(f string, a ...any) { b.l.Warn(fmt.Sprintf(f, a...)) }
func (b badgerLog) Infof(f string, a ...any)    { b.l.Debug(fmt.Sprintf(f, a...)) }
func (b badgerLog) Debugf(f string, a ...any)   { b.l.Debug(fmt.Sprintf(f, a...)) }

// register adds the cache's metrics to reg.
func (c *imageCache) register(reg *prometheus.Registry) {
	reg.MustRegister(c.store.Collector(), c.chain.Collector(),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "outpost_images_blob_stream_bytes_total", Help: "Blob bytes this node sent on blob streams.",
			ConstLabels: prometheus.Labels{"to": "peer"},
		}, func() float64 { return float64(c.servedPeers.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "outpost_images_blob_stream_bytes_total", Help: "Blob bytes this node sent on blob streams.",
			ConstLabels: prometheus.Labels{"to": "site"},
		}, func() float64 { return float64(c.servedSites.Load()) }),
	)
}

// serve starts the cache's loops and servers in eg, bounded by ctx (the
// node's loop context), and returns the servers for Run to shut down.
func (c *imageCache) serve(ctx context.Context, eg *errgroup.Group) []*http.Server {
	base := func(net.Listener) context.Context { return ctx }
	eg.Go(func() error { return c.chain.Run(ctx) })
	eg.Go(func() error { return c.local.Run(ctx) })
	eg.Go(func() error { return c.index.run(ctx) })
	eg.Go(func() error { return c.agree.run(ctx) })
	eg.Go(func() error { return c.peers.runVerify(ctx) })
	c.res.serve(ctx, eg) // figures, pins, syncs (images_sync.go)
	blobSrv := &http.Server{
		Handler:           c.blobHandler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Minute,
		BaseContext:       base,
		ConnContext:       withStreamPeer,
		ErrorLog:          slog.NewLogLogger(c.log.Handler(), slog.LevelDebug),
	}
	eg.Go(func() error { return serveForwardedAPI(blobSrv, c.blobLn) })
	servers := []*http.Server{blobSrv}
	if c.mirrorLn != nil {
		mirrorSrv := &http.Server{
			Handler:           c.mirrorHandler(),
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       time.Minute,
			BaseContext:       base,
			ErrorLog:          slog.NewLogLogger(c.log.Handler(), slog.LevelDebug),
		}
		servers = append(servers, mirrorSrv)
		eg.Go(func() error { return serve(mirrorSrv.Serve(c.mirrorLn)) })
		c.log.Info("image mirror listening", "addr", c.mirrorLn.Addr().String(), "default_ns", c.n.cfg.RegistryDefaultNS, "push", c.n.cfg.RegistryPush)
	}
	return servers
}

// close releases what newImages opened; call it after the servers have
// stopped. Later calls return the first's result.
func (c *imageCache) close() error {
	c.closeOnce.Do(func() { c.closeErr = c.closeAll() })
	return c.closeErr
}

func (c *imageCache) closeAll() error {
	var errs []error
	for _, h := range []*registry.Handler{c.mirror, c.tierAPI, c.peerAPI} {
		if h != nil {
			errs = append(errs, h.Close())
		}
	}
	if c.blobLn != nil {
		c.blobLn.Close()
	}
	if c.mirrorLn != nil {
		if err := c.mirrorLn.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	if c.store != nil {
		errs = append(errs, c.store.Close())
	}
	c.pacer.Stop()
	if c.db != nil {
		errs = append(errs, c.db.Close())
	}
	return errors.Join(errs...)
}

// mirrorHandler is the mirror's API. A request whose ns names the mirror
// itself (containerd's _default applied to a reference of this address) is
// for the hub's own registry: taken as an upstream, it would fetch from
// itself.
func (c *imageCache) mirrorHandler() http.Handler {
	var h http.Handler = c.mirror
	if c.hub && c.n.cfg.RegistryPush {
		h = c.auditedPushes(h) // images_audit.go
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if q := r.URL.Query(); q.Has("ns") && c.isSelf(q.Get("ns")) {
			q.Set("ns", "")
			r.URL.RawQuery = q.Encode()
		}
		h.ServeHTTP(w, r)
	})
}

// isSelf reports whether ns (host:port) is this node's mirror address.
func (c *imageCache) isSelf(ns string) bool {
	host, port, err := net.SplitHostPort(ns)
	if err != nil {
		return false
	}
	bound, ok := c.mirrorLn.Addr().(*net.TCPAddr)
	if !ok || port != strconv.Itoa(bound.Port) {
		return false
	}
	ip := net.ParseIP(host)
	if host == "localhost" {
		ip = net.IPv4(127, 0, 0, 1)
	}
	if ip == nil {
		return false
	}
	if bound.IP.IsUnspecified() {
		return ip.IsLoopback() || host == c.n.cfg.advertiseHost()
	}
	return ip.Equal(bound.IP)
}

// isLoopback reports whether a listener's address is a loopback one.
func isLoopback(a net.Addr) bool {
	t, ok := a.(*net.TCPAddr)
	return ok && t.IP.IsLoopback()
}

// principal authenticates a registry request by the API token it carries
// as its Basic password (any user name) or Bearer token.
func (c *imageCache) principal(r *http.Request) (Principal, error) {
	if c.auth == nil {
		return Principal{}, fmt.Errorf("%w: this node holds no API tokens: push to a hub member", registry.ErrDenied)
	}
	tok, ok := registry.Token(r)
	if !ok {
		return Principal{}, fmt.Errorf("%w: send an API token as the password, with any user name (e.g. skopeo copy --dest-creds outpost:$TOKEN)", registry.ErrUnauthorized)
	}
	p, err := c.auth.authenticate(r.Context(), "Bearer "+tok)
	if err != nil {
		return Principal{}, fmt.Errorf("%w: %v", registry.ErrUnauthorized, err)
	}
	return p, nil
}

// authorizePush admits a push: an API token whose role may write (admin
// or operator); a viewer's token is refused with 403.
func (c *imageCache) authorizePush(r *http.Request) error {
	p, err := c.principal(r)
	if err != nil {
		return err
	}
	// A push creates repositories of images.outpost.dev (rbac.go's policy).
	ok, need := permits(p.Role, verbCreate, "images.outpost.dev", "repositories")
	if ok {
		return nil
	}
	return fmt.Errorf("%w: token %s has role %s; pushing takes %s", registry.ErrDenied, p.Name, p.Role, need)
}

// authorizePull admits a pull on a mirror bound beyond loopback: any
// valid API token.
func (c *imageCache) authorizePull(r *http.Request) error {
	_, err := c.principal(r)
	return err
}

// ImageStats is a snapshot of a node's image cache counters.
type ImageStats struct {
	// Fetch counts what the node's fetch chain served and from which
	// tier; Store is its content store.
	Fetch fetch.Stats
	Store store.Stats
	// ServedToPeers and ServedToSites count the blob bytes this node sent
	// on blob streams: to peers of its site, and (hub members) to sites
	// through the hub tier.
	ServedToPeers, ServedToSites uint64
}

// ImageStats returns the image cache's counters; ok is false on a node
// without an image cache.
func (n *Node) ImageStats() (st ImageStats, ok bool) {
	c := n.images
	if c == nil {
		return ImageStats{}, false
	}
	return ImageStats{
		Fetch: c.chain.Stats(), Store: c.store.Stats(),
		ServedToPeers: c.servedPeers.Load(), ServedToSites: c.servedSites.Load(),
	}, true
}

// MirrorAddr returns the address the image mirror listens on, or "" when
// it is off.
func (n *Node) MirrorAddr() string {
	if n.images == nil || n.images.mirrorLn == nil {
		return ""
	}
	return n.images.mirrorLn.Addr().String()
}

// openContent opens a blob of the hub's own registry for an OTA step's
// contentFrom: from the store on hub members, else through the fetch
// chain (peers, the site's one fetch, the hub tier), so the site's nodes
// share one WAN transfer.
func (c *imageCache) openContent(ctx context.Context, repo, d string) (io.ReadCloser, int64, error) {
	dg, err := store.ParseDigest(d)
	if err != nil {
		return nil, 0, err
	}
	var src registry.Source = c.chain
	if c.hub {
		src = registry.NewStoreSource(c.store)
	}
	b, err := src.Blob(ctx, "", repo, dg)
	if err != nil {
		return nil, 0, err
	}
	return b.Content, b.Size, nil
}
