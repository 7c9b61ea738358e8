package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/outpost-mesh/outpost/consensus"
	"github.com/outpost-mesh/outpost/transport"
)

const (
	// linkInterval is how often a site leader reports to the hub.
	linkInterval = 2 * time.Second
	// linkTimeout is how long the hub waits for a report before it marks
	// the site disconnected.
	linkTimeout = 3 * linkInterval
	// linkBackoffMax caps the wait between reconnects to the hub.
	linkBackoffMax = 30 * time.Second
	// linkReplyTimeout is how long a site leader waits for the hub's
	// answer to a report: a busy hub that takes a few seconds to write a
	// report's results is slow, not gone, and dropping the link would
	// only add a reconnect and a resend to its work; a dead hub member is
	// still left within seconds, for another.
	linkReplyTimeout = 2 * linkTimeout
	// linkResultDelay is how long a report woken by a device's result
	// waits for more results to join it.
	linkResultDelay = 50 * time.Millisecond
)

// linkReport is what a site leader sends the hub every linkInterval.
type linkReport struct {
	Site   string `json:"site"`
	Leader string `json:"leader"`
	// Nodes is the site's roster. A report leaves it out (nil) when the
	// roster is the one this link last sent: the hub goes on with that.
	// The first report on a link always carries it.
	Nodes []linkNode `json:"nodes"`
	// SameNodes says that Nodes was left out because it did not change.
	SameNodes bool           `json:"sameNodes,omitempty"`
	OTA       *otaLinkReport `json:"ota,omitempty"`
	// Images carries node figures and sync progress (images_sync.go).
	Images *imagesLinkReport `json:"images,omitempty"`
}

// linkNode is one node of a site's roster.
type linkNode struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels,omitempty"`
	Status NodeStatus        `json:"status"`
}

// linkReply is the hub's answer to a report.
type linkReply struct {
	Error    string        `json:"error,omitempty"`
	Redirect string        `json:"redirect,omitempty"`
	HubAddrs []string      `json:"hubAddrs,omitempty"`
	Revoked  []string      `json:"revoked,omitempty"`
	OTA      *otaLinkReply `json:"ota,omitempty"`
	// Images carries sync assignments and pins (images_sync.go).
	Images *imagesLinkReply `json:"images,omitempty"`
}

// errRedirected ends a link to a hub member that does not lead.
var errRedirected = errors.New("redirected to the hub leader")

// runHubLink holds, while this node leads its site, an outbound link to the
// hub's leader; it reconnects with jittered backoff and lets go when
// leadership moves.
func (n *Node) runHubLink(ctx context.Context) error {
	backoff := time.Second
	next := 0
	for {
		if n.group.IsLeader() && len(n.id.HubAddrs) > 0 {
			addrs := n.hubAddrList()
			addr := addrs[next%len(addrs)]
			up, err := n.holdLink(ctx, addr)
			if ctx.Err() != nil {
				return nil
			}
			if up {
				backoff = time.Second // it worked: a break is not a reason to wait long
			}
			switch {
			case errors.Is(err, errRedirected):
				// The leader's address is now first: dial it at once.
				next, backoff = 0, time.Second
				continue
			case errors.Is(err, transport.ErrRevoked) || strings.Contains(fmt.Sprint(err), "bad certificate"):
				n.log.Error("the hub refuses this node's certificate: the node was revoked (`outpost delete node`) or its certificate is not the hub's; stop it, or wipe its data dir and join again with a new token", "hub", addr, "err", err)
				next++
			case err != nil:
				n.log.Debug("hub link down", "hub", addr, "err", err)
				next++
			default:
				backoff = time.Second
			}
		}
		wait := backoff/2 + time.Duration(rand.Int64N(int64(backoff)))
		if n.group.IsLeader() {
			backoff = min(2*backoff, linkBackoffMax)
		} else {
			wait = 500 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

func (n *Node) hubAddrList() []string {
	n.id.mu.RLock()
	defer n.id.mu.RUnlock()
	return slices.Clone(n.id.HubAddrs)
}

// holdLink reports to the hub at addr until the link breaks, this node
// stops leading, or the hub redirects (then it returns errRedirected after
// switching to the leader's address). up says whether the hub answered at
// least one report.
func (n *Node) holdLink(ctx context.Context, addr string) (up bool, err error) {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	s, err := n.dialRPC(dctx, addr, methodLink)
	cancel()
	if err != nil {
		return false, err
	}
	defer s.Close()
	n.log.Info("hub link up", "hub", addr)
	defer n.log.Info("hub link down", "hub", addr)
	t := time.NewTicker(linkInterval)
	defer t.Stop()
	var roster linkRoster
	for {
		if !n.group.IsLeader() {
			return up, nil
		}
		rep, err := n.report(ctx, &roster)
		if err != nil {
			return up, err
		}
		_ = s.SetWriteDeadline(time.Now().Add(linkTimeout))
		_ = s.SetReadDeadline(time.Now().Add(linkReplyTimeout))
		if err := writeMessage(s, rep); err != nil {
			return up, err
		}
		var reply linkReply
		if err := readMessage(s, &reply, maxMessageBytes); err != nil {
			return up, err
		}
		if reply.Error != "" {
			n.log.Warn("hub refused the site's report", "err", reply.Error)
			return up, nil
		}
		if reply.Redirect != "" {
			n.setHubAddrs(append([]string{reply.Redirect}, n.hubAddrList()...))
			return up, errRedirected
		}
		up = true
		n.setHubAddrs(reply.HubAddrs)
		n.applyRevocations(ctx, reply.Revoked)
		if err := n.otaInbox(ctx, reply.OTA); err != nil {
			n.log.Warn("could not record the hub's task assignments", "err", err)
		}
		n.imagesInbox(reply.Images) // images_sync.go
		// With task traffic in flight, report again soon; a result that
		// comes in meanwhile is reported at once (after a moment, for
		// others to join it).
		wait := t.C
		if reply.OTA != nil && (len(reply.OTA.Assignments) > 0 || len(reply.OTA.Acked) > 0) || n.otaBusy(ctx) {
			wait = time.After(200 * time.Millisecond)
		}
		select {
		case <-ctx.Done():
			return up, nil
		case <-wait:
		case <-n.otaSite.Unreported():
			time.Sleep(linkResultDelay)
		}
	}
}

// setHubAddrs remembers the hub's members, leader first, deduplicated.
func (n *Node) setHubAddrs(addrs []string) {
	var out []string
	for _, a := range addrs {
		if a != "" && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		return
	}
	n.id.mu.Lock()
	changed := !slices.Equal(out, n.id.HubAddrs)
	n.id.HubAddrs = out
	n.id.mu.Unlock()
	if changed {
		if err := n.id.save(); err != nil {
			n.log.Warn("could not remember the hub's addresses", "err", err)
		}
	}
}

// linkRoster is what a link last sent of the site's roster, and each
// Node's fingerprint by resourceVersion, so that an unchanged roster is
// neither decoded nor sent again. A refresh of lastSeen alone is no
// change: the hub keeps its own lastSeen of a site's nodes.
type linkRoster struct {
	nodes map[string]rosterNode // by name
	key   string                // the fingerprints of the roster last sent
	sent  bool
	// index is the site store's applied index when the roster was last
	// read: with no write since, it is not read again.
	index uint64
}

// rosterNode is a Node as a link reports it.
type rosterNode struct {
	rv   string
	fp   string
	node linkNode
}

// report reads the site's roster from the site store; the roster is left
// out when it is the one last sent on this link.
func (n *Node) report(ctx context.Context, last *linkRoster) (*linkReport, error) {
	rep := &linkReport{Site: n.id.Site, Leader: n.id.Name}
	var err error
	if rep.OTA, err = n.otaOutbox(ctx); err != nil {
		return nil, err
	}
	rep.Images = n.imagesOutbox() // images_sync.go
	index := n.group.AppliedIndex()
	if last.sent && index == last.index {
		rep.SameNodes = true // nothing was written since the roster was read
		return rep, nil
	}
	// Read in place (Scan): a Node that has not changed since the last
	// report is known by its resourceVersion, and only a changed one is
	// decoded (and its labels copied, as the report keeps them).
	nodes := make(map[string]rosterNode, len(last.nodes))
	var names []string
	var key strings.Builder
	err = n.group.Store().Scan(ctx, &NodeKind, "", nil, consensus.ReadOptions{Stale: true}, func(o *consensus.Object) error {
		rn, ok := last.nodes[o.Name]
		if !ok || rn.rv != o.ResourceVersion {
			var st NodeStatus
			_ = o.DecodeStatus(&st)
			labels := maps.Clone(o.Labels)
			rn = rosterNode{rv: o.ResourceVersion, node: linkNode{Name: o.Name, Labels: labels, Status: st}}
			st.LastSeen, st.HeartbeatTime = nil, nil
			b, _ := json.Marshal(linkNode{Name: o.Name, Labels: labels, Status: st})
			rn.fp = string(b)
		}
		nodes[o.Name] = rn
		names = append(names, o.Name)
		key.WriteString(rn.fp)
		return nil
	})
	if err != nil {
		return nil, err
	}
	last.index = index
	last.nodes = nodes
	if last.sent && last.key == key.String() {
		rep.SameNodes = true
		return rep, nil
	}
	rep.Nodes = make([]linkNode, 0, len(names))
	for _, name := range names {
		rep.Nodes = append(rep.Nodes, nodes[name].node)
	}
	last.key, last.sent = key.String(), true
	return rep, nil
}

// applyRevocations makes the site's revocations the hub's list: revoked
// nodes leave the site's Raft group and roster.
func (n *Node) applyRevocations(ctx context.Context, names []string) {
	store := n.group.Store()
	list, err := store.List(ctx, &RevocationKind, "", nil, consensus.ReadOptions{Stale: true})
	if err != nil {
		return
	}
	have := map[string]bool{}
	for _, o := range list.Items {
		have[o.Name] = true
		if !slices.Contains(names, o.Name) {
			_, _ = store.Delete(ctx, &RevocationKind, "", o.Name, 0, "")
		}
	}
	for _, name := range names {
		if have[name] {
			continue
		}
		n.log.Info("node revoked by the hub", "peer", name)
		_ = revoke(ctx, store, name)
		if r := n.group.Raft(); r != nil {
			_ = r.RemoveServer(raftID(name), 0, 10*time.Second).Error()
		}
		_, _ = store.Delete(ctx, &NodeKind, "", name, 0, "")
	}
}

// serveLink is the hub's end of a site link: it mirrors the site's roster
// into the hub's store and records the Site's status.
func (n *Node) serveLink(ctx context.Context, s *transport.Stream) {
	defer s.Close()
	peer := s.Peer()
	var roster []linkNode // the roster this link last carried
	for {
		_ = s.SetReadDeadline(time.Now().Add(linkTimeout))
		var rep linkReport
		if err := readMessage(s, &rep, maxMessageBytes); err != nil {
			return
		}
		if rep.SameNodes {
			rep.Nodes = roster
		} else {
			roster = rep.Nodes
		}
		reply := n.acceptReport(ctx, peer, &rep)
		// A report that took long to take in still counts as heard now.
		n.siteClock.mark(n.group.Status().Term, rep.Site, time.Now())
		_ = s.SetWriteDeadline(time.Now().Add(linkTimeout))
		if err := writeMessage(s, reply); err != nil || reply.Error != "" || reply.Redirect != "" {
			return
		}
	}
}

func (n *Node) acceptReport(ctx context.Context, peer transport.Peer, rep *linkReport) linkReply {
	if peer.Site != rep.Site {
		return linkReply{Error: "a node of site " + peer.Site + " cannot report for site " + rep.Site}
	}
	if !n.group.IsLeader() {
		n.hubRoster.reset()
		if r := n.group.Raft(); r != nil {
			if addr, _ := r.LeaderWithID(); addr != "" {
				return linkReply{Redirect: string(addr)}
			}
		}
		return linkReply{Error: "the hub has no leader right now"}
	}
	store := n.group.Store()
	revoked := n.revokedNames()
	now := time.Now()
	n.siteClock.mark(n.group.Status().Term, rep.Site, now)
	// Only a report whose roster is as last sent may skip its writes: the
	// site sends a changed roster once.
	if rep.SameNodes {
		if first := n.assignFirst(ctx, rep.Site, rep.OTA); first != nil {
			return linkReply{HubAddrs: n.hubAddrs(), Revoked: revoked, OTA: first}
		}
	}
	versions := map[string]bool{}
	// The Nodes are written concurrently, so that Raft commits them
	// together: a site's nodes joined together and fall due for their
	// lastSeen together, and a hundred writes one after another would
	// hold the report past the link's timeout on a busy hub.
	var names []string
	for _, nd := range rep.Nodes {
		if !slices.Contains(revoked, nd.Name) {
			names = append(names, nd.Name)
		}
	}
	refresh := n.hubRoster.refreshAge(names, now, n.cfg.HeartbeatInterval)
	eg, ectx := errgroup.WithContext(ctx)
	eg.SetLimit(32)
	for _, nd := range rep.Nodes {
		if slices.Contains(revoked, nd.Name) {
			continue
		}
		if nd.Status.Version != "" {
			versions[nd.Status.Version] = true
		}
		if rep.SameNodes && n.hubRoster.fresh(nd.Name, now, refresh) {
			continue // as the link last carried it, and written since
		}
		nd.Status.Site = rep.Site
		labels := maps.Clone(nd.Labels)
		if labels == nil {
			labels = map[string]string{}
		}
		labels["outpost.dev/site"] = rep.Site
		eg.Go(func() error {
			return n.hubRoster.upsert(ectx, store, nd.Name, labels, nd.Status, now, refresh)
		})
	}
	if err := eg.Wait(); err != nil {
		return linkReply{Error: "record roster: " + err.Error()}
	}
	if err := n.writeSiteStatus(ctx, rep.Site, SiteStatus{Connected: true, Leader: rep.Leader, NodeCount: len(rep.Nodes), Versions: sortedKeys(versions)}); err != nil {
		return linkReply{Error: "record site: " + err.Error()}
	}
	otaReply, err := n.otaExchange(ctx, rep.Site, rep.OTA)
	if err != nil {
		return linkReply{Error: "record task results: " + err.Error()}
	}
	imagesReply, err := n.imagesExchange(ctx, rep.Site, rep.Images) // images_sync.go
	if err != nil {
		return linkReply{Error: "record image figures: " + err.Error()}
	}
	return linkReply{HubAddrs: n.hubAddrs(), Revoked: revoked, OTA: otaReply, Images: imagesReply}
}

// revokedNames lists the revoked nodes, for every site's report.
func (n *Node) revokedNames() []string {
	return n.revocations.sorted(n.group)
}

// writeSiteStatus creates the Site if needed and writes its status, with
// lastSeen now.
func (n *Node) writeSiteStatus(ctx context.Context, site string, st SiteStatus) error {
	store := n.group.Store()
	cur, err := store.Get(ctx, &SiteKind, "", site, consensus.ReadOptions{Stale: true})
	if apierrors.IsNotFound(err) {
		cur, err = store.Create(ctx, &SiteKind, &consensus.Object{ObjectMeta: metav1.ObjectMeta{Name: site}})
	}
	if err != nil {
		return err
	}
	var old SiteStatus
	_ = cur.DecodeStatus(&old)
	now := metav1.Now()
	st.LastSeen = &now
	if old.LastSeen != nil && st.Connected && jsonEq(withoutSeen(old), withoutSeen(st)) && now.Sub(old.LastSeen.Time) < siteSeenPersist {
		return nil
	}
	next := cur.DeepCopy()
	if err := next.SetStatus(st); err != nil {
		return err
	}
	next.ResourceVersion = ""
	_, err = store.UpdateStatus(ctx, &SiteKind, next)
	return err
}

// siteSeenPersist is how often a reporting site's stored lastSeen is
// refreshed; the hub leader keeps the exact time of each report in memory
// (siteClock), so a hundred sites cost a few writes a second, not one per
// report, and a slow Raft log does not make a reporting site look silent.
const siteSeenPersist = 30 * time.Second

// siteClock is the hub leader's memory of when each site last reported,
// for the current Raft term: a new term (a new leader) starts from a grace
// in which every site counts as just heard.
type siteClock struct {
	mu   sync.Mutex
	term uint64
	seen map[string]time.Time
}

func (c *siteClock) at(term uint64) {
	if c.term != term || c.seen == nil {
		c.term, c.seen = term, map[string]time.Time{}
	}
}

// mark records a report from site.
func (c *siteClock) mark(term uint64, site string, t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.at(term)
	c.seen[site] = t
}

// last returns when site last reported in term, now when not yet.
func (c *siteClock) last(term uint64, site string, now time.Time) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.at(term)
	t, ok := c.seen[site]
	if !ok {
		c.seen[site] = now
		return now
	}
	return t
}

func withoutSeen(s SiteStatus) SiteStatus { s.LastSeen = nil; return s }

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// runSiteMonitor runs on the hub: while it leads, the hub's own Site is
// kept current and any site whose link has been silent past linkTimeout is
// marked disconnected.
func (n *Node) runSiteMonitor(ctx context.Context) error {
	return n.whileLeader(ctx, linkInterval, "site monitor", n.monitorSites)
}

// monitorSites is one pass of runSiteMonitor.
func (n *Node) monitorSites(ctx context.Context) error {
	if err := n.refreshHubSite(ctx); err != nil {
		return fmt.Errorf("hub site status: %w", err)
	}
	sites, err := n.group.Store().List(ctx, &SiteKind, "", nil, consensus.ReadOptions{Stale: true})
	if err != nil {
		return err
	}
	term, now := n.group.Status().Term, time.Now()
	for _, o := range sites.Items {
		var st SiteStatus
		if o.Name == HubSite || o.DecodeStatus(&st) != nil || !st.Connected {
			continue
		}
		last := n.siteClock.last(term, o.Name, now)
		if now.Sub(last) < linkTimeout {
			continue
		}
		n.log.Warn("site link silent; marking the site disconnected", "peer_site", o.Name, "last_seen", last)
		st.Connected = false
		next := o.DeepCopy()
		_ = next.SetStatus(st)
		next.ResourceVersion = o.ResourceVersion
		if _, err := n.group.Store().UpdateStatus(ctx, &SiteKind, next); err == nil {
			n.markNodesUnknown(ctx, o.Name)
		}
	}
	return nil
}

// stateUnknown is a node's state at the hub while its site is cut off: the
// hub cannot tell alive from dead until the site reports again.
const stateUnknown = "unknown"

// markNodesUnknown sets the state of a disconnected site's nodes to unknown;
// the site's next report writes what its gossip sees.
func (n *Node) markNodesUnknown(ctx context.Context, site string) {
	store := n.group.Store()
	sel := labels.SelectorFromSet(labels.Set{"outpost.dev/site": site})
	nodes, err := store.List(ctx, &NodeKind, "", sel, consensus.ReadOptions{Stale: true})
	if err != nil {
		return
	}
	for _, o := range nodes.Items {
		var st NodeStatus
		if o.DecodeStatus(&st) != nil || st.State == stateUnknown {
			continue
		}
		st.State = stateUnknown
		next := o.DeepCopy()
		_ = next.SetStatus(st)
		next.ResourceVersion = o.ResourceVersion
		_, _ = store.UpdateStatus(ctx, &NodeKind, next)
		n.hubRoster.forget(o.Name) // the site's next report writes it again
	}
}

// refreshHubSite writes the hub Site's status from the hub's roster. The
// hub site's Nodes are found by listing every Node (ten thousand, in a big
// mesh), so they are listed again only when the hub's gossip view of its
// own site changed, or hubSiteRecount after the last time; in between the
// status is written from the last count (its lastSeen stays current).
func (n *Node) refreshHubSite(ctx context.Context) error {
	var view strings.Builder
	for _, m := range n.gossip.Members() {
		if m.Site == HubSite {
			fmt.Fprintf(&view, "%s %s %s;", m.Name, m.State, m.Version)
		}
	}
	c := &n.hubSiteCount
	c.mu.Lock()
	fresh := c.view == view.String() && time.Since(c.at) < hubSiteRecount
	count, versions := c.nodes, c.versions
	c.mu.Unlock()
	if !fresh {
		sel := labels.SelectorFromSet(labels.Set{"outpost.dev/site": HubSite})
		nodes, err := n.group.Store().List(ctx, &NodeKind, "", sel, consensus.ReadOptions{Stale: true})
		if err != nil {
			return err
		}
		seen := map[string]bool{}
		for _, o := range nodes.Items {
			var st NodeStatus
			if o.DecodeStatus(&st) == nil && st.Version != "" {
				seen[st.Version] = true
			}
		}
		count, versions = len(nodes.Items), sortedKeys(seen)
		c.mu.Lock()
		c.view, c.at, c.nodes, c.versions = view.String(), time.Now(), count, versions
		c.mu.Unlock()
	}
	return n.writeSiteStatus(ctx, HubSite, SiteStatus{Connected: true, Leader: n.id.Name, NodeCount: count, Versions: versions})
}

// hubSiteRecount is how often refreshHubSite lists the hub site's Nodes
// when its gossip view has not changed.
const hubSiteRecount = 30 * time.Second

// hubSiteCount is refreshHubSite's last count of the hub site's Nodes.
type hubSiteCount struct {
	mu       sync.Mutex
	view     string // the gossip view it was taken at
	at       time.Time
	nodes    int
	versions []string
}
