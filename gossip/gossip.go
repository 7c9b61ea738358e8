package gossip

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// Gossip is this node's membership in its site's memberlist pool.
//
// memberlist starts its goroutines as soon as it binds its sockets, so the
// pool is created by Run, not New: New starts nothing and binds nothing,
// and Addr is known once Ready is closed.
type Gossip struct {
	cfg   Config
	log   *slog.Logger
	ready chan struct{} // closed once Run has created the pool

	started atomic.Bool
	// crash makes Run stop without leaving, as a crashed node would. Tests
	// use it to get a member declared dead.
	crash atomic.Bool
	// deaf makes the transport drop every packet and stream it receives,
	// as a node cut off from its site would. Tests use it to get a live
	// member suspected.
	deaf atomic.Bool

	// mlMu guards the pool's life: phase and ml. UpdateMeta holds it for
	// reading while it broadcasts, so Run does not shut the pool down under
	// it.
	mlMu  sync.RWMutex
	phase phase
	ml    *memberlist.Memberlist
	// lw is memberlist's log output, closed when the pool stops (set by
	// create, before Run goes on).
	lw *logWriter

	// metaMu guards the local metadata. It is taken inside memberlist's
	// calls (NodeMeta) and never held while calling memberlist.
	metaMu  sync.Mutex
	meta    Meta
	leaving bool
	metaRaw []byte // meta encoded with the leaving flag

	// mu guards the member table and the events channel. It is taken
	// inside memberlist's callbacks and never held while calling
	// memberlist.
	mu      sync.Mutex
	members *table
	events  chan Event
	closed  bool // events is closed
	dropped atomic.Uint64
	// suspected is signalled (one pending signal) when this node comes to
	// suspect a member: Run looks at suspects only while there are any.
	suspected chan struct{}
}

// phase is where a Gossip is in its life.
type phase int

const (
	phaseNew     phase = iota // Run has not created the pool
	phaseRunning              // the pool is up
	phaseStopped              // Run is leaving or has returned
)

// New validates cfg and returns a Gossip ready to Run. It binds no socket
// and starts no goroutine: memberlist does both when Run creates the pool.
func New(cfg Config) (*Gossip, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("gossip config: %w", err)
	}
	cfg.Meta = cfg.Meta.clone()
	cfg.Key = slices.Clone(cfg.Key)
	cfg.Join = slices.Clone(cfg.Join)
	raw, err := cfg.Meta.encode(false)
	if err != nil {
		return nil, err // Validate has checked it
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Gossip{
		cfg:     cfg,
		log:     logger.With("component", "gossip", "node", cfg.Meta.Name, "site", cfg.Meta.Site),
		ready:   make(chan struct{}),
		meta:    cfg.Meta.clone(),
		metaRaw: raw,
		members: newTable(cfg.Meta.Name, cfg.DeadRetention),
		events:  make(chan Event, cfg.EventBuffer),

		suspected: make(chan struct{}, 1),
	}, nil
}

// Run creates the pool (binding the gossip port), closes Ready, joins the
// seeds, retrying with jittered backoff until one answers, and delivers
// events until ctx is done. Then it announces its leave, waiting at most
// BroadcastTimeout, shuts the pool down and closes the Events channel.
// It returns nil after a normal stop. Run may be called once.
//
// memberlist's goroutines are memberlist's own: Run starts none of its own,
// and memberlist's end shortly after Shutdown, which Run calls before it
// returns.
func (g *Gossip) Run(ctx context.Context) (err error) {
	if !g.started.CompareAndSwap(false, true) {
		return ErrAlreadyRun
	}
	defer g.closeEvents()
	ml, err := g.create()
	if err != nil {
		return err
	}
	close(g.ready)
	g.log.Info("gossip pool up", "addr", g.Addr(), "seeds", len(g.cfg.Join))
	defer func() { err = errors.Join(err, g.stop(ml)) }()

	g.join(ctx, ml)
	// Suspects are looked at once a second while there are any. A pool
	// without suspects keeps no timer: a process hosting thousands of
	// members (e2e/otascale) woke thousands of times a second for nothing.
	var t *time.Ticker
	var tick <-chan time.Time
	defer func() {
		if t != nil {
			t.Stop()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-g.suspected:
			if t == nil {
				t = time.NewTicker(time.Second)
				tick = t.C
			}
		case <-tick:
			if !g.clearRefuted(ml) {
				t.Stop()
				t, tick = nil, nil
			}
		}
	}
}

// clearRefuted pings the members this node has suspected for longer than
// refuteGrace and marks alive those that answer. A suspect that refutes the
// suspicion (an alive message with a higher incarnation) raises no
// memberlist event, memberlist does not export a member's state (see
// DESIGN.md), and this node's next direct probe of it may be minutes away
// in a large site. A suspect that does not answer stays suspect until
// memberlist declares it dead or a probe reaches it. It reports whether
// any member is still suspected.
func (g *Gossip) clearRefuted(ml *memberlist.Memberlist) bool {
	g.mu.Lock()
	suspects := g.members.suspectedBefore(time.Now().Add(-refuteGrace))
	g.mu.Unlock()
	var wg sync.WaitGroup
	for name, addr := range suspects {
		ua, err := net.ResolveUDPAddr("udp", addr)
		if err != nil {
			continue
		}
		wg.Go(func() {
			if _, err := ml.Ping(name, ua); err == nil {
				g.onAck(name)
			}
		})
	}
	wg.Wait() // each Ping waits at most ProbeTimeout
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.members.suspects > 0
}

// refuteGrace is how long a suspicion stands before clearRefuted checks
// it: memberlist's own indirect probes and suspicion messages go first.
const refuteGrace = time.Second

// create makes the memberlist, holding mlMu so that an UpdateMeta cannot
// slip between memberlist reading the local metadata and ml being set.
func (g *Gossip) create() (*memberlist.Memberlist, error) {
	g.mlMu.Lock()
	defer g.mlMu.Unlock()
	keyring, err := memberlist.NewKeyring(nil, g.cfg.Key)
	if err != nil {
		g.phase = phaseStopped
		return nil, fmt.Errorf("gossip keyring: %w", err)
	}
	lw := &logWriter{log: g.log, onSuspect: g.onSuspect}
	g.lw = lw
	mc := g.cfg.memberlistConfig(&delegate{g: g}, keyring, newMemberlistLogger(lw))
	t, err := newTransport(g.cfg.BindAddr, g.cfg.BindPort, &g.deaf, g.log)
	if err != nil {
		g.phase = phaseStopped
		return nil, fmt.Errorf("start gossip on %s: %w",
			net.JoinHostPort(g.cfg.BindAddr, strconv.Itoa(g.cfg.BindPort)), err)
	}
	mc.Transport = t
	if mc.BindPort == 0 {
		mc.BindPort = t.port()
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		_ = t.Shutdown()
		g.phase = phaseStopped
		return nil, fmt.Errorf("start gossip on %s: %w",
			net.JoinHostPort(g.cfg.BindAddr, strconv.Itoa(g.cfg.BindPort)), err)
	}
	g.ml, g.phase = ml, phaseRunning
	return ml, nil
}

// join retries the seeds until one answers, another member has reached
// this one, or ctx is done. Each round tries every seed once; an attempt on
// one seed is bounded by TCPTimeout.
func (g *Gossip) join(ctx context.Context, ml *memberlist.Memberlist) {
	if len(g.cfg.Join) == 0 {
		return
	}
	backoff := g.cfg.JoinBackoff
	for attempt := 1; ctx.Err() == nil; attempt++ {
		if ml.NumMembers() > 1 {
			g.log.Info("joined by another member; stop trying the seeds")
			return
		}
		n, err := ml.Join(g.cfg.Join)
		if err == nil {
			g.log.Info("joined gossip pool", "seeds_reached", n, "attempt", attempt)
			return
		}
		wait := jitter(backoff)
		g.log.Warn("join gossip pool failed; will retry", "attempt", attempt, "retry_in", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, g.cfg.JoinBackoffMax)
	}
}

// jitter returns a random duration in [d/2, d].
func jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d/2+1)
}

// stop leaves the pool, unless crash is set, and shuts it down.
func (g *Gossip) stop(ml *memberlist.Memberlist) error {
	g.mlMu.Lock() // waits for an UpdateMeta in flight
	g.phase, g.ml = phaseStopped, nil
	g.mlMu.Unlock()

	if !g.crash.Load() {
		// Tell the others that what follows is a leave, not a death, then
		// leave. Both wait for their broadcast, at most BroadcastTimeout.
		g.setLeaving()
		if err := ml.UpdateNode(g.cfg.BroadcastTimeout); err != nil {
			g.log.Warn("announce leave", "err", err)
		}
		if err := ml.Leave(g.cfg.BroadcastTimeout); err != nil {
			g.log.Warn("leave gossip pool", "err", err)
		}
	}
	err := ml.Shutdown()
	g.lw.close()
	if err != nil {
		return fmt.Errorf("shut down gossip: %w", err)
	}
	g.log.Info("gossip pool down")
	return nil
}

// Ready is closed once Run has created the pool: from then on Addr and
// Local are known. If Run fails to create the pool, Ready stays open and
// Run returns the error.
func (g *Gossip) Ready() <-chan struct{} { return g.ready }

// Addr returns this node's gossip address, host:port, as the others see
// it; it is empty until Ready is closed.
func (g *Gossip) Addr() string {
	return g.Local().Addr
}

// Local returns this node as a member. Until Ready is closed its State and
// Addr are empty.
func (g *Gossip) Local() Member {
	g.mu.Lock()
	m, ok := g.members.get(g.cfg.Meta.Name)
	g.mu.Unlock()
	if ok {
		return m
	}
	g.metaMu.Lock()
	defer g.metaMu.Unlock()
	return Member{Meta: g.meta.clone()}
}

// Members returns every member this node knows, itself included: alive,
// suspect, and dead or left within DeadRetention; sorted by name.
func (g *Gossip) Members() []Member {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.members.prune(time.Now())
	return g.members.list()
}

// Member returns the member called name, as Members would list it, without
// copying and sorting the others: for the lookups a leader makes per device.
func (g *Gossip) Member(name string) (Member, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	m, ok := g.members.get(name)
	if ok && g.members.expired(name, m.State, m.Since, time.Now()) {
		return Member{}, false // pruned at the next Members
	}
	return m, ok
}

// NumAlive returns how many members, this node included, are Alive.
// Suspect ones are not counted.
func (g *Gossip) NumAlive() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.members.count(Alive)
}

// Events returns the channel of membership changes, this node's own join
// included. It is buffered (Config.EventBuffer) and never blocks
// memberlist: when it is full, the oldest event is dropped to make room and
// counted in Dropped. A consumer that must not miss a change reconciles
// with Members. The channel is closed when Run returns.
func (g *Gossip) Events() <-chan Event { return g.events }

// Dropped returns how many events were dropped because the Events channel
// was full.
func (g *Gossip) Dropped() uint64 { return g.dropped.Load() }

// UpdateMeta replaces this node's metadata and broadcasts it, waiting at
// most BroadcastTimeout for the broadcast to go out. Name and Site cannot
// change. Before Run the new Meta is simply the one Run starts with. If
// the broadcast times out the new Meta is still in effect: the others get
// it from later gossip and push/pull.
func (g *Gossip) UpdateMeta(m Meta) error {
	if m.Name != g.cfg.Meta.Name || m.Site != g.cfg.Meta.Site {
		return fmt.Errorf("update meta: name and site are %q and %q, cannot become %q and %q",
			g.cfg.Meta.Name, g.cfg.Meta.Site, m.Name, m.Site)
	}
	raw, err := m.encode(false)
	if err != nil {
		return fmt.Errorf("update meta: %w", err)
	}
	g.mlMu.RLock()
	defer g.mlMu.RUnlock()
	if g.phase == phaseStopped {
		return fmt.Errorf("update meta: %w", ErrNotRunning)
	}
	g.metaMu.Lock()
	g.meta, g.metaRaw = m.clone(), raw
	g.metaMu.Unlock()
	if g.phase == phaseNew {
		return nil
	}
	if err := g.ml.UpdateNode(g.cfg.BroadcastTimeout); err != nil {
		return fmt.Errorf("broadcast meta update: %w", err)
	}
	return nil
}

// localMetaBytes is the encoded local metadata, for memberlist.
func (g *Gossip) localMetaBytes() []byte {
	g.metaMu.Lock()
	defer g.metaMu.Unlock()
	return g.metaRaw
}

// setLeaving marks the local metadata as leaving.
func (g *Gossip) setLeaving() {
	g.metaMu.Lock()
	defer g.metaMu.Unlock()
	raw, err := g.meta.encode(true)
	if err != nil {
		return // cannot happen: the flag does not change the size
	}
	g.leaving, g.metaRaw = true, raw
}

// onAlive records n, which memberlist holds alive (a join or an update).
func (g *Gossip) onAlive(n *memberlist.Node) {
	meta, leaving, err := decodeMeta(n.Meta)
	if err != nil {
		// NotifyAlive admits no such node; keep what is known.
		g.log.Warn("member with undecodable metadata", "peer", n.Name, "err", err)
		meta = Meta{Name: n.Name}
	}
	meta.Name = n.Name
	addr := nodeAddr(n)
	g.mu.Lock()
	defer g.mu.Unlock()
	g.emitLocked(g.members.alive(meta, leaving, addr, time.Now()))
}

// onGone records that memberlist declared name dead or left.
func (g *Gossip) onGone(name string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.emitLocked(g.members.gone(name, time.Now()))
}

// onSuspect records that this node's probe of name failed.
func (g *Gossip) onSuspect(name string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.emitLocked(g.members.suspect(name, time.Now()))
	select {
	case g.suspected <- struct{}{}:
	default:
	}
}

// onAck records that name answered a direct probe.
func (g *Gossip) onAck(name string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.emitLocked(g.members.acked(name, time.Now()))
}

// emitLocked logs evs and queues them on the events channel; g.mu is held.
//
// The send never blocks: it runs inside memberlist's callbacks, and a
// blocked callback stalls memberlist's packet handling and failure
// detection for the whole node. When the channel is full the oldest event
// is dropped instead, and counted: events are notifications, Members is
// the state, so a consumer that falls behind loses history, not truth.
// Only emitLocked sends, under g.mu, so after one receive there is room.
func (g *Gossip) emitLocked(evs []Event) {
	for _, ev := range evs {
		g.log.Debug("member "+ev.Type.String(), "peer", ev.Member.Name, "state", string(ev.Member.State), "addr", ev.Member.Addr)
		if g.closed {
			continue
		}
		select {
		case g.events <- ev:
			continue
		default:
		}
		select {
		case <-g.events:
			g.countDrop()
		default:
		}
		select {
		case g.events <- ev:
		default:
			g.countDrop() // unreachable: see above
		}
	}
}

// countDrop counts a dropped event, warning at 1, 2, 4, 8... drops.
func (g *Gossip) countDrop() {
	n := g.dropped.Add(1)
	if n&(n-1) == 0 {
		g.log.Warn("events channel full; dropped the oldest", "dropped", n)
	}
}

// closeEvents closes the events channel; later callbacks update the table
// only.
func (g *Gossip) closeEvents() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.closed {
		g.closed = true
		close(g.events)
	}
}
