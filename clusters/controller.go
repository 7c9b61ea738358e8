package clusters

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/util/workqueue"

	"github.com/outpost-mesh/outpost/consensus"
)

// Config configures the hub's cluster controller.
type Config struct {
	// Store is the hub group's object store.
	Store *consensus.Store
	// IsLeader reports whether this hub member leads; only the leader runs
	// the controller.
	IsLeader func() bool
	// Workers is how many clusters are reconciled at once
	// (--cluster-workers).
	Workers int
	// Resync is how often each cluster is probed when nothing changes.
	Resync time.Duration
	// ProbeTimeout bounds each request to a cluster's API server, so a
	// cluster that accepts connections and never answers holds one worker
	// for at most a few of these.
	ProbeTimeout time.Duration
	// GracePeriod is how long a cluster that stops answering keeps its
	// conditions before they go Unknown.
	GracePeriod time.Duration
	// TunnelPorts is where proxy clusters' ports are allocated from
	// (--tunnel-ports).
	TunnelPorts PortRange
	// Tunnels carries proxy clusters' connections; nil leaves proxy
	// clusters not Initialized.
	Tunnels Tunnels
	// Installer installs components; nil installs none.
	Installer Installer
	// SharedAPIServer turns the duplicate rule off, so that many Clusters
	// may name one API server: for benchmarks that register 1,000
	// Clusters against one real kube-apiserver. Never set in a hub.
	SharedAPIServer bool
	// Logger receives the controller's logs; nil discards.
	Logger *slog.Logger
}

// DefaultConfig returns the production settings; Store and IsLeader must
// be set.
func DefaultConfig() Config {
	return Config{
		Workers:      3,
		Resync:       30 * time.Second,
		ProbeTimeout: 10 * time.Second,
		GracePeriod:  90 * time.Second,
		TunnelPorts:  PortRange{First: 17000, Last: 17999},
	}
}

// Validate reports every invalid field.
func (c Config) Validate() error {
	var errs []error
	if c.Store == nil {
		errs = append(errs, errors.New("clusters: Store is required"))
	}
	if c.IsLeader == nil {
		errs = append(errs, errors.New("clusters: IsLeader is required"))
	}
	if c.Workers < 1 || c.Workers > 256 {
		errs = append(errs, fmt.Errorf("--cluster-workers %d must be 1-256", c.Workers))
	}
	if c.Resync <= 0 || c.ProbeTimeout <= 0 || c.GracePeriod <= 0 {
		errs = append(errs, errors.New("clusters: Resync, ProbeTimeout and GracePeriod must be positive"))
	}
	if c.TunnelPorts.First < 1 || c.TunnelPorts.Last > 65535 || c.TunnelPorts.Last <= c.TunnelPorts.First {
		errs = append(errs, fmt.Errorf("--tunnel-ports %s must hold at least 2 ports within 1-65535", c.TunnelPorts))
	}
	return errors.Join(errs...)
}

// leaderPoll is how often a hub member checks whether it leads.
const leaderPoll = time.Second

// Controller is the hub's cluster controller: a work queue of Cluster
// names fed by a watch and a per-cluster resync, drained by Workers
// workers. The queue never hands one name to two workers at once.
type Controller struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	clients  map[string]*clusterClient // by Cluster name: reused connections
	tunnels  map[string]TunnelState    // by Cluster name: last Ensure's answer
	reserved map[string]Ports          // ports handed out, by Cluster name
	// seen is each Cluster's spec and deletion state as last enqueued, so
	// that the controller's own status writes do not enqueue it again.
	seen map[string]string
	// queue is the current term's work queue; nil while not leading.
	queue workqueue.TypedRateLimitingInterface[string]

	// claims maps a physical cluster (kube-system UID) to the Cluster that
	// holds it in this term; claimOf is the reverse.
	claimMu sync.Mutex
	claims  map[string]string
	claimOf map[string]string

	// trace, when set (tests), wraps each reconcile.
	trace func(name string) func()
}

// New validates cfg. It starts no goroutines; Run does.
func New(cfg Config) (*Controller, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Controller{
		cfg: cfg, log: logger.With("component", "clusters"),
		clients: map[string]*clusterClient{}, tunnels: map[string]TunnelState{},
		reserved: map[string]Ports{}, seen: map[string]string{},
		claims: map[string]string{}, claimOf: map[string]string{},
	}, nil
}

// Run reconciles Clusters while this member leads, until ctx is done.
func (c *Controller) Run(ctx context.Context) error {
	t := time.NewTicker(leaderPoll)
	defer t.Stop()
	defer c.closeClients()
	for {
		if c.cfg.IsLeader() {
			c.log.Debug("leading: reconciling clusters", "workers", c.cfg.Workers)
			if err := c.lead(ctx); err != nil && ctx.Err() == nil {
				c.log.Warn("cluster controller stopped; restarting", "err", err)
			}
			// A new term starts from the store again.
			c.mu.Lock()
			c.tunnels, c.reserved, c.seen = map[string]TunnelState{}, map[string]Ports{}, map[string]string{}
			c.mu.Unlock()
			c.claimMu.Lock()
			c.claims, c.claimOf = map[string]string{}, map[string]string{}
			c.claimMu.Unlock()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// lead runs the queue, its feeders and the workers until leadership or ctx
// is lost.
func (c *Controller) lead(ctx context.Context) error {
	q := c.newQueue()
	c.mu.Lock()
	c.queue = q
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.queue = nil
		c.mu.Unlock()
	}()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	eg, ctx := errgroup.WithContext(ctx)
	eg.Go(func() error {
		// Ends the term: the queue shuts down, the workers return.
		defer q.ShutDown()
		t := time.NewTicker(leaderPoll)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
				if !c.cfg.IsLeader() {
					cancel()
					return nil
				}
			}
		}
	})
	eg.Go(func() error { return c.feed(ctx, q) })
	for range c.cfg.Workers {
		eg.Go(func() error {
			for c.next(ctx, q) {
			}
			return nil
		})
	}
	return eg.Wait()
}

// retryFirst is the wait before a failed reconcile's first retry; each
// further failure doubles it, up to Resync.
const retryFirst = 500 * time.Millisecond

// newQueue is a term's work queue: per-cluster exponential backoff on
// failures (retryFirst doubling up to Resync) under client-go's overall
// 10 qps bucket.
func (c *Controller) newQueue() workqueue.TypedRateLimitingInterface[string] {
	limiter := workqueue.NewTypedMaxOfRateLimiter(
		workqueue.NewTypedItemExponentialFailureRateLimiter[string](retryFirst, c.cfg.Resync),
		workqueue.DefaultTypedControllerRateLimiter[string](),
	)
	return workqueue.NewTypedRateLimitingQueueWithConfig(limiter, workqueue.TypedRateLimitingQueueConfig[string]{Name: "clusters"})
}

// Enqueue asks for a reconcile of Cluster name now, as when its agent
// connects or goes away (the tunnel's OnChange). It does nothing while this
// member does not lead; the queue merges it with a pending reconcile and
// never runs two for one name at once.
func (c *Controller) Enqueue(name string) {
	c.mu.Lock()
	q := c.queue
	c.mu.Unlock()
	if q != nil {
		q.Add(name) // a no-op once the term's queue is shut down
	}
}

// feed enqueues every Cluster, then each one whose spec or deletion state
// changes, relisting when the watch breaks.
func (c *Controller) feed(ctx context.Context, q workqueue.TypedRateLimitingInterface[string]) error {
	for ctx.Err() == nil {
		list, err := c.cfg.Store.List(ctx, &ClusterKind, "", nil, consensus.ReadOptions{})
		if err != nil {
			c.log.Debug("list clusters", "err", err)
			sleep(ctx, leaderPoll)
			continue
		}
		for _, obj := range list.Items {
			c.noteSeen(obj)
			q.Add(obj.Name)
		}
		w, err := c.cfg.Store.Watch(ctx, &ClusterKind, "", nil, list.ResourceVersion)
		if err != nil {
			sleep(ctx, leaderPoll)
			continue
		}
		for {
			ev, err := w.Next(ctx)
			if err != nil {
				c.log.Debug("cluster watch ended; relisting", "err", err)
				break
			}
			if c.noteSeen(ev.Object) {
				q.Add(ev.Object.Name)
			}
		}
		w.Stop()
	}
	return nil
}

// noteSeen records obj's spec and deletion state and reports whether
// they changed since the last time.
func (c *Controller) noteSeen(obj *consensus.Object) bool {
	key := fmt.Sprintf("%s|%v|%d|%s", obj.UID, obj.DeletionTimestamp != nil, len(obj.Finalizers), obj.Spec)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen[obj.Name] == key {
		return false
	}
	c.seen[obj.Name] = key
	return true
}

// next reconciles one Cluster from q; false when q is shut down.
func (c *Controller) next(ctx context.Context, q workqueue.TypedRateLimitingInterface[string]) bool {
	name, quit := q.Get()
	if quit {
		return false
	}
	defer q.Done(name)
	if c.trace != nil {
		defer c.trace(name)()
	}
	requeue, err := c.reconcile(ctx, name)
	switch {
	case ctx.Err() != nil:
	case err != nil:
		c.log.Debug("cluster not reconciled; retrying", "cluster", name, "err", err)
		q.AddRateLimited(name)
	case requeue:
		q.Forget(name)
		// Jitter spreads the resyncs of clusters created together.
		q.AddAfter(name, c.cfg.Resync+rand.N(c.cfg.Resync/10+1))
	default:
		q.Forget(name)
	}
	return true
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// closeClients drops every cached connection.
func (c *Controller) closeClients() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, cc := range c.clients {
		cc.close()
		delete(c.clients, name)
	}
}
