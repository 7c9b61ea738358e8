package node

import (
	"context"
	"encoding/json"
	"maps"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"golang.org/x/sync/errgroup"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/outpost-mesh/outpost/consensus"
	"github.com/outpost-mesh/outpost/gossip"
)

const (
	goos   = runtime.GOOS
	goarch = runtime.GOARCH
	// rosterInterval is how often the site leader looks at its roster;
	// without gossip events it reconciles it every rosterQuietPass.
	rosterInterval  = time.Second
	rosterQuietPass = 10 * time.Second
)

// runRoster keeps, while this node leads its site's group, the group's
// membership and the site's Node objects in step with gossip: live members
// join Raft as voters up to --site-voters, always an odd number of them
// (a site of two nodes has one voter), and as non-voters beyond; a voter
// dead past --reap-after is removed and a non-voter promoted; stateless
// members (see Agent) stay out of Raft; every member's state is written to
// its Node object.
//
// A pass runs on every gossip event; a tick without one changes no
// member's state, only what time brings (a lastSeen refresh, a dead voter
// reaped, a revoked member removed), so it makes a pass only every
// rosterQuietPass (less when --heartbeat-interval or --reap-after is
// short; a failed pass is made again at the next tick): a hundred idle
// site leaders each copied and sorted its members every second for
// nothing.
func (n *Node) runRoster(ctx context.Context) error {
	t := time.NewTicker(rosterInterval)
	defer t.Stop()
	events := n.gossip.Events()
	quiet := min(rosterQuietPass, n.cfg.HeartbeatInterval/2, n.cfg.ReapAfter/2)
	var last time.Time // the last pass; zero: the next tick makes one
	retry := false
	for {
		changed := false
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case _, ok := <-events:
			if !ok {
				events = nil
			}
			changed = true
		}
		if !n.group.IsLeader() {
			n.siteRoster.reset()
			n.warm.reset()
			last = time.Time{}
			continue
		}
		if retry { // the last pass failed: this tick makes a full one
			changed, retry = true, false
		}
		if !changed && time.Since(last) < quiet {
			continue
		}
		last = time.Now()
		members := n.gossip.Members()
		n.warmMembers(ctx, members) // otawarm.go
		if err := n.reconcileRaft(members); err != nil && ctx.Err() == nil {
			n.log.Debug("raft membership not reconciled", "err", err)
			retry = true
		}
		if err := n.writeRoster(ctx, members, changed); err != nil && ctx.Err() == nil {
			n.log.Debug("roster not written", "err", err)
			retry = true
		}
	}
}

// reconcileRaft adds and removes servers; it runs on the leader.
func (n *Node) reconcileRaft(members []gossip.Member) error {
	r := n.group.Raft()
	if r == nil {
		return nil
	}
	f := r.GetConfiguration()
	if err := f.Error(); err != nil {
		return err
	}
	cfg := f.Configuration()
	servers := map[string]raft.Server{}
	voters := 0
	for _, s := range cfg.Servers {
		servers[string(s.ID)] = s
		if s.Suffrage == raft.Voter {
			voters++
		}
	}
	for _, m := range members {
		s, known := servers[m.Name]
		dead := m.State == gossip.Dead || m.State == gossip.Left
		switch {
		case known && (n.revoked(m.Name) || (dead && time.Since(m.Since) > n.cfg.ReapAfter)):
			n.log.Info("removing server from the raft group", "peer", m.Name, "state", m.State)
			if err := r.RemoveServer(s.ID, 0, 10*time.Second).Error(); err != nil {
				return err
			}
			if s.Suffrage == raft.Voter {
				voters--
			}
		case !known && m.State == gossip.Alive && !m.Stateless && m.Site == n.id.Site && !n.revoked(m.Name):
			// A non-voter first; the promotions below decide who votes.
			n.log.Info("adding non-voter", "peer", m.Name, "addr", m.QUICAddr)
			if err := r.AddNonvoter(raft.ServerID(m.Name), raft.ServerAddress(m.QUICAddr), 0, 10*time.Second).Error(); err != nil {
				return err
			}
			servers[m.Name] = raft.Server{ID: raft.ServerID(m.Name), Address: raft.ServerAddress(m.QUICAddr), Suffrage: raft.Nonvoter}
		}
	}
	// Promote live non-voters (new ones, or to replace reaped voters) up
	// to --site-voters, to an odd count: a second voter is a second node
	// whose loss stops the site (two voters need both for a quorum), so a
	// site of two keeps one voter and a non-voter, and a third node's
	// arrival promotes both.
	var spare []raft.Server
	for _, m := range members {
		if s, ok := servers[m.Name]; ok && s.Suffrage == raft.Nonvoter && m.State == gossip.Alive {
			spare = append(spare, s)
		}
	}
	target := min(n.cfg.SiteVoters, voters+len(spare))
	if target%2 == 0 {
		target--
	}
	for _, s := range spare {
		if voters >= target {
			break
		}
		n.log.Info("promoting non-voter", "peer", s.ID)
		if err := r.AddVoter(s.ID, s.Address, 0, 10*time.Second).Error(); err != nil {
			return err
		}
		voters++
	}
	return nil
}

// raftRoles maps server names to their Raft role as the leader sees it.
func (n *Node) raftRoles() map[string]string {
	roles := map[string]string{}
	r := n.group.Raft()
	if r == nil {
		return roles
	}
	f := r.GetConfiguration()
	if f.Error() != nil {
		return roles
	}
	_, leader := r.LeaderWithID()
	for _, s := range f.Configuration().Servers {
		role := "Voter"
		if s.Suffrage != raft.Voter {
			role = "Nonvoter"
		}
		if s.ID == leader {
			role = "Leader"
		}
		roles[string(s.ID)] = role
	}
	return roles
}

// writeRoster writes each member's Node object where it changed; unless
// changed, it looks only at members whose lastSeen is due. The lastSeen
// refreshes go together: when any is due, every member's older than half
// the heartbeat interval is refreshed with it, concurrently, so that Raft
// commits them in a batch or two. (One at a time, as each fell due, a
// site of a hundred nodes made a Raft write and an fsync every 0.6 s.)
func (n *Node) writeRoster(ctx context.Context, members []gossip.Member, changed bool) error {
	now := time.Now()
	mine := func(m gossip.Member) bool { return m.Site == n.id.Site && !n.revoked(m.Name) }
	var names []string
	for _, m := range members {
		if mine(m) {
			names = append(names, m.Name)
		}
	}
	refresh := n.siteRoster.refreshAge(names, now, n.cfg.HeartbeatInterval)
	roles := n.raftRoles()
	eg, ectx := errgroup.WithContext(ctx)
	eg.SetLimit(rosterWrites)
	for _, m := range members {
		if !mine(m) || (!changed && n.siteRoster.fresh(m.Name, now, refresh)) {
			continue
		}
		raftState := roles[m.Name]
		if m.Stateless {
			raftState = "None"
		}
		st := NodeStatus{
			Role: m.Role, Site: m.Site, State: string(m.State), Version: m.Version, OS: m.OS, Arch: m.Arch,
			Addresses: []NodeAddress{{Type: "InternalIP", Address: hostOf(m.QUICAddr)}},
			QUICAddr:  m.QUICAddr, GossipAddr: m.Addr, APIEndpoint: m.APIAddr,
			Raft: &NodeRaftState{State: raftState},
		}
		labels := nodeLabels(m)
		eg.Go(func() error {
			return n.siteRoster.upsert(ectx, n.group.Store(), m.Name, labels, st, now, refresh)
		})
	}
	return eg.Wait()
}

// rosterWrites is how many Node writes of one roster pass are proposed at
// once.
const rosterWrites = 32

// nodeLabels are a member's own labels plus the built-in ones.
func nodeLabels(m gossip.Member) map[string]string {
	l := maps.Clone(m.Labels)
	if l == nil {
		l = map[string]string{}
	}
	l["outpost.dev/site"] = m.Site
	l["outpost.dev/role"] = m.Role
	l["kubernetes.io/os"] = m.OS
	l["kubernetes.io/arch"] = m.Arch
	return l
}

// upsertNode creates or updates a Node object when its labels or status
// changed, or when a live node's lastSeen is older than refresh; a node
// that was alive and is no longer gets lastSeen now.
func upsertNode(ctx context.Context, store *consensus.Store, name string, labels map[string]string, st NodeStatus, now time.Time, refresh time.Duration) error {
	own := ownLabelKeys(labels)
	cur, err := store.Get(ctx, &NodeKind, "", name, consensus.ReadOptions{Stale: true})
	if apierrors.IsNotFound(err) {
		cur, err = store.Create(ctx, &NodeKind, &consensus.Object{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels,
			Annotations: map[string]string{OwnLabelsAnnotation: own}}})
	}
	if err != nil {
		return err
	}
	if merged := mergeNodeLabels(cur, labels); !maps.Equal(cur.Labels, merged) || cur.Annotations[OwnLabelsAnnotation] != own {
		next := cur.DeepCopy()
		next.Labels = merged
		if next.Annotations == nil {
			next.Annotations = map[string]string{}
		}
		next.Annotations[OwnLabelsAnnotation] = own
		if cur, err = store.Update(ctx, &NodeKind, next); err != nil {
			return err
		}
	}
	var old NodeStatus
	_ = cur.DecodeStatus(&old)
	st.LastSeen = old.LastSeen
	alive := string(gossip.Alive)
	// A live node's lastSeen is refreshed when due; one that stops being
	// alive was last seen about when its leader saw it go.
	if st.State == alive && (st.LastSeen == nil || now.Sub(st.LastSeen.Time) > refresh) ||
		st.State != alive && old.State == alive {
		t := metav1.NewTime(now)
		st.LastSeen = &t
	}
	st.HeartbeatTime = st.LastSeen
	if jsonEq(old, st) {
		return nil
	}
	next := cur.DeepCopy()
	if err := next.SetStatus(st); err != nil {
		return err
	}
	next.ResourceVersion = ""
	_, err = store.UpdateStatus(ctx, &NodeKind, next)
	return err
}

// OwnLabelsAnnotation lists, comma-separated, the label keys of a Node
// that the node sets itself (its --labels and the built-in ones); its other
// labels are an operator's (`kubectl label`), which the roster keeps.
const OwnLabelsAnnotation = "outpost.dev/own-labels"

// ownLabelKeys is the value of OwnLabelsAnnotation for labels.
func ownLabelKeys(labels map[string]string) string {
	return strings.Join(slices.Sorted(maps.Keys(labels)), ",")
}

// mergeNodeLabels returns the labels a Node gets from the node's own:
// those, over the labels cur has that the node did not set before (an
// operator's), so a key the node drops goes and an operator's stays.
func mergeNodeLabels(cur *consensus.Object, own map[string]string) map[string]string {
	out := maps.Clone(cur.Labels)
	if out == nil {
		out = map[string]string{}
	}
	if prev := cur.Annotations[OwnLabelsAnnotation]; prev != "" {
		for _, k := range strings.Split(prev, ",") {
			delete(out, k)
		}
	}
	maps.Copy(out, own)
	return out
}

// rosterCache remembers what a leader last wrote to each Node, so that it
// reads and writes a Node only when its state changed or its lastSeen is
// due: ten thousand unchanged nodes cost no store reads per report. A
// leader resets it when it loses leadership.
type rosterCache struct {
	mu sync.Mutex
	m  map[string]rosterEntry
}

type rosterEntry struct {
	fingerprint string    // labels and status, lastSeen left out
	at          time.Time // when the store was last brought in line
}

func (c *rosterCache) reset() {
	c.mu.Lock()
	c.m = nil
	c.mu.Unlock()
}

// forget drops what the cache knows of a Node written by someone else.
func (c *rosterCache) forget(name string) {
	c.mu.Lock()
	delete(c.m, name)
	c.mu.Unlock()
}

// fresh reports whether name was brought in line with the store less than
// refresh ago: a roster known to be unchanged then needs no work.
func (c *rosterCache) fresh(name string, now time.Time, refresh time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[name]
	return ok && now.Sub(e.at) < refresh
}

// refreshAge is the lastSeen age past which names are refreshed now:
// interval, or half of it when any of them is due, so that the others
// half way there are refreshed with it and a roster's refreshes stay
// together.
func (c *rosterCache) refreshAge(names []string, now time.Time, interval time.Duration) time.Duration {
	for _, name := range names {
		if !c.fresh(name, now, interval) {
			return interval / 2
		}
	}
	return interval
}

// upsert is upsertNode, skipped while the node is as last written and its
// lastSeen is not due.
func (c *rosterCache) upsert(ctx context.Context, store *consensus.Store, name string, labels map[string]string, st NodeStatus, now time.Time, refresh time.Duration) error {
	st.LastSeen, st.HeartbeatTime = nil, nil
	b, _ := json.Marshal(struct {
		L map[string]string
		S NodeStatus
	}{labels, st})
	fp := string(b)
	c.mu.Lock()
	e, ok := c.m[name]
	c.mu.Unlock()
	if ok && e.fingerprint == fp && now.Sub(e.at) < refresh {
		return nil
	}
	if err := upsertNode(ctx, store, name, labels, st, now, refresh); err != nil {
		c.mu.Lock()
		delete(c.m, name)
		c.mu.Unlock()
		return err
	}
	c.mu.Lock()
	if c.m == nil {
		c.m = map[string]rosterEntry{}
	}
	c.m[name] = rosterEntry{fingerprint: fp, at: now}
	c.mu.Unlock()
	return nil
}

func jsonEq(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}
