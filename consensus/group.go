package consensus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"golang.org/x/sync/errgroup"

	"github.com/outpost-mesh/outpost/internal/logbridge"
)

// Config configures a member of a Raft group.
type Config struct {
	// ID is this server's Raft ID, the node name.
	ID string
	// Dir holds the log store (raft/), the state store (state/) and the
	// snapshots (snapshots/).
	Dir string
	// Transport carries Raft RPCs; its LocalAddr is this server's address.
	Transport raft.Transport
	// Bootstrap forms a new group when Dir holds no Raft state: with Peers
	// as its voters, or this server alone when Peers is empty.
	Bootstrap bool
	Peers     []raft.Server
	// HistoryLimit is how many Raft indexes of watch history are kept; a
	// watch from further back gets 410 Gone and relists.
	HistoryLimit uint64
	// SnapshotThreshold, SnapshotInterval and TrailingLogs control log
	// compaction, as in raft.Config.
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	TrailingLogs      uint64
	// Raft timing; tests shorten these.
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
	// ApplyTimeout bounds how long a write waits to be enqueued.
	ApplyTimeout time.Duration
	// Logger receives the group's logs, Raft's and Badger's included. Nil
	// discards.
	Logger *slog.Logger
	// Sealer encrypts the secret fields of kinds that have them (see
	// Kind.Secrets). A store without one refuses to write them.
	Sealer Sealer
	// Footprint sizes the log and state stores.
	Footprint Footprint
}

// Footprint sizes a group's Badger stores: memtables, caches and who
// compacts them.
type Footprint int

const (
	// FootprintHub is for stores that grow with the fleet (the hub's):
	// 16 MiB memtables, caches of tens of MiB, Badger's own compactors.
	FootprintHub Footprint = iota
	// FootprintEdge is for a site node's small stores: 4 MiB memtables
	// (Badger allocates each in full; at the hub's sizes they were most
	// of a site node's heap), caches of a few MiB, and compaction from
	// one check a second (internal/compaction) instead of Badger's
	// compactors, which wake twenty times a second each and were most of
	// an idle node's wake-ups.
	FootprintEdge
)

// edgeMemTable is a FootprintEdge store's memtable size.
const edgeMemTable = 4 << 20

// DefaultConfig returns the production settings.
func DefaultConfig() Config {
	rc := raft.DefaultConfig()
	return Config{
		HistoryLimit:       50_000,
		SnapshotThreshold:  rc.SnapshotThreshold,
		SnapshotInterval:   rc.SnapshotInterval,
		TrailingLogs:       rc.TrailingLogs,
		HeartbeatTimeout:   rc.HeartbeatTimeout,
		ElectionTimeout:    rc.ElectionTimeout,
		LeaderLeaseTimeout: rc.LeaderLeaseTimeout,
		CommitTimeout:      rc.CommitTimeout,
		ApplyTimeout:       10 * time.Second,
	}
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	switch {
	case c.ID == "":
		return errors.New("consensus: ID is required")
	case c.Dir == "":
		return errors.New("consensus: Dir is required")
	case c.Transport == nil:
		return errors.New("consensus: Transport is required")
	case c.HeartbeatTimeout <= 0 || c.ElectionTimeout <= 0 || c.LeaderLeaseTimeout <= 0 || c.CommitTimeout <= 0:
		return errors.New("consensus: Raft timeouts must be positive (start from DefaultConfig)")
	case c.LeaderLeaseTimeout > c.HeartbeatTimeout:
		return errors.New("consensus: LeaderLeaseTimeout must not exceed HeartbeatTimeout")
	case c.ApplyTimeout <= 0:
		return errors.New("consensus: ApplyTimeout must be positive")
	}
	return nil
}

// Group is one member of a Raft group with its replicated object store.
type Group struct {
	cfg   Config
	log   *slog.Logger
	logs  *LogStore
	st    *state
	snaps *raft.FileSnapshotStore
	fsm   *fsm
	hub   *hub
	raft  atomic.Pointer[raft.Raft]
	ready chan struct{} // closed once Run has started Raft
	store *Store

	closeOnce sync.Once
	closeErr  error
}

// New opens the stores in cfg.Dir and recovers the state. It starts no
// goroutines; Run starts Raft.
func New(cfg Config, reg *Registry) (g *Group, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("component", "consensus")
	for _, d := range []string{"raft", "state", "snapshots"} {
		if err := os.MkdirAll(filepath.Join(cfg.Dir, d), 0o700); err != nil {
			return nil, fmt.Errorf("create %s: %w", d, err)
		}
	}
	g = &Group{cfg: cfg, log: logger, hub: newHub(), ready: make(chan struct{})}
	defer func() {
		if err != nil {
			err = errors.Join(err, g.closeStores())
		}
	}()
	if g.logs, err = OpenLogStore(filepath.Join(cfg.Dir, "raft"), logger, cfg.Footprint); err != nil {
		return g, err
	}
	if g.st, err = openState(filepath.Join(cfg.Dir, "state"), logger, cfg.Footprint); err != nil {
		return g, err
	}
	if g.snaps, err = raft.NewFileSnapshotStoreWithLogger(filepath.Join(cfg.Dir, "snapshots"), 2, logbridge.HCLog(logger)); err != nil {
		return g, fmt.Errorf("open snapshot store: %w", err)
	}
	if g.fsm, err = newFSM(g.st, g.hub, cfg.HistoryLimit, logger); err != nil {
		return g, err
	}
	if err = g.recover(); err != nil {
		return g, err
	}
	g.store = &Store{g: g, reg: reg}
	return g, nil
}

// recover restores the newest snapshot when the state store is behind it,
// which happens when the host lost unsynced state writes. Raft itself is
// told not to restore on start: the state store is persistent and usually
// ahead of any snapshot.
func (g *Group) recover() error {
	metas, err := g.snaps.List()
	if err != nil || len(metas) == 0 {
		return err
	}
	if metas[0].Index <= g.fsm.appliedIndex() {
		return nil
	}
	_, rc, err := g.snaps.Open(metas[0].ID)
	if err != nil {
		return fmt.Errorf("open snapshot %s: %w", metas[0].ID, err)
	}
	g.log.Warn("state store is behind the newest snapshot; restoring it", "index", metas[0].Index, "applied", g.fsm.appliedIndex())
	return g.fsm.Restore(rc)
}

// Store returns the replicated object store. Its calls wait for Run to start.
func (g *Group) Store() *Store { return g.store }

// Run starts Raft, bootstrapping the group if configured and new, and blocks
// until ctx is done. On return it has handed leadership to another voter
// when there is one, shut Raft down and closed the stores.
// maxAppendEntries is how many log entries Raft writes (and sends to a
// follower) at once.
const maxAppendEntries = 256

func (g *Group) Run(ctx context.Context) (err error) {
	defer func() {
		// Live watchers wait on the hub, which nothing feeds once Raft is
		// down: end them so their clients resume on another member.
		g.hub.closeAll(errStopped)
		err = errors.Join(err, g.closeStores())
	}()
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(g.cfg.ID)
	rc.Logger = logbridge.HCLog(g.log)
	rc.HeartbeatTimeout = g.cfg.HeartbeatTimeout
	rc.ElectionTimeout = g.cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = g.cfg.LeaderLeaseTimeout
	rc.CommitTimeout = g.cfg.CommitTimeout
	rc.SnapshotThreshold = g.cfg.SnapshotThreshold
	rc.SnapshotInterval = g.cfg.SnapshotInterval
	rc.TrailingLogs = g.cfg.TrailingLogs
	rc.NoSnapshotRestoreOnStart = true
	rc.BatchApplyCh = true
	// One fsync of the log covers up to this many proposals: a controller
	// that writes thousands of objects at once (a task's results) waits
	// on a quarter of the fsyncs of Raft's default of 64.
	rc.MaxAppendEntries = maxAppendEntries
	if err := raft.ValidateConfig(rc); err != nil {
		return fmt.Errorf("raft config: %w", err)
	}
	cached, err := raft.NewLogCache(512, g.logs)
	if err != nil {
		return err
	}
	if g.cfg.Bootstrap {
		existing, err := raft.HasExistingState(cached, g.logs, g.snaps)
		if err != nil {
			return fmt.Errorf("check raft state: %w", err)
		}
		if !existing {
			servers := g.cfg.Peers
			if len(servers) == 0 {
				servers = []raft.Server{{ID: rc.LocalID, Address: g.cfg.Transport.LocalAddr(), Suffrage: raft.Voter}}
			}
			if err := raft.BootstrapCluster(rc, cached, g.logs, g.snaps, g.cfg.Transport, raft.Configuration{Servers: servers}); err != nil {
				return fmt.Errorf("bootstrap raft group: %w", err)
			}
			g.log.Info("bootstrapped raft group", "voters", len(servers))
		}
	}
	r, err := raft.NewRaft(rc, g.fsm, cached, g.logs, g.snaps, g.cfg.Transport)
	if err != nil {
		return fmt.Errorf("start raft: %w", err)
	}
	g.raft.Store(r)
	close(g.ready)

	eg, ctx := errgroup.WithContext(ctx)
	eg.Go(func() error { return g.logs.RunGC(ctx) })
	<-ctx.Done()
	g.handOff(r)
	err = r.Shutdown().Error()
	return errors.Join(err, eg.Wait())
}

// errStopped ends the watchers of a member whose Run returned.
var errStopped = fmt.Errorf("member stopped: %w", ErrWatchDropped)

// handOff transfers leadership when this server leads and another voter
// exists, so a graceful stop costs the group no election timeout.
func (g *Group) handOff(r *raft.Raft) {
	if r.State() != raft.Leader {
		return
	}
	cf := r.GetConfiguration()
	if cf.Error() != nil {
		return
	}
	others := 0
	for _, s := range cf.Configuration().Servers {
		if s.Suffrage == raft.Voter && s.ID != raft.ServerID(g.cfg.ID) {
			others++
		}
	}
	if others == 0 {
		return
	}
	if err := r.LeadershipTransfer().Error(); err != nil {
		g.log.Warn("leadership transfer on shutdown failed", "err", err)
		return
	}
	g.log.Info("transferred leadership before shutdown")
}

// Close releases the stores of a Group whose Run was never called (Run
// closes them itself on return). It is safe to call more than once.
func (g *Group) Close() error { return g.closeStores() }

// closeStores closes the stores once; Run calls it on return, and New on
// failure.
func (g *Group) closeStores() error {
	g.closeOnce.Do(func() {
		var errs []error
		if g.st != nil {
			errs = append(errs, g.st.close())
		}
		if g.logs != nil {
			errs = append(errs, g.logs.Close())
		}
		g.closeErr = errors.Join(errs...)
	})
	return g.closeErr
}

// Raft returns the running Raft instance, or nil before Run started it.
func (g *Group) Raft() *raft.Raft { return g.raft.Load() }

// waitRaft returns Raft once Run has started it.
func (g *Group) waitRaft(ctx context.Context) (*raft.Raft, error) {
	select {
	case <-g.ready:
		return g.raft.Load(), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Healthy returns nil while the state store accepts writes.
func (g *Group) Healthy() error { return g.fsm.healthy() }

// AppliedIndex returns the index of the last command applied locally.
func (g *Group) AppliedIndex() uint64 { return g.fsm.appliedIndex() }

// Snapshot takes a Raft snapshot now and compacts the log behind it.
func (g *Group) Snapshot(ctx context.Context) error {
	r, err := g.waitRaft(ctx)
	if err != nil {
		return err
	}
	return r.Snapshot().Error()
}
