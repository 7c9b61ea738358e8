package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/outpost-mesh/outpost/consensus"
	"github.com/outpost-mesh/outpost/gossip"
	"github.com/outpost-mesh/outpost/ota"
	"github.com/outpost-mesh/outpost/transport"
)

// methodOTARefusals: site member → its site leader: run requests the
// member refused for their grant (otarefusal.go).
const methodOTARefusals = "ota.refusals"

// GrantRefusalKind keeps, in a site's Raft group, the refusals of the
// site's agents until the hub has audited them. Internal: not served by
// the API.
var GrantRefusalKind = consensus.Kind{
	Group: ota.Group, Version: "v1alpha1", Kind: "GrantRefusal", Plural: "grantrefusals", Hidden: true,
	NewSpec: func() any { return &GrantRefusal{} },
}

// refusalAck is the hub's word that it audited a site's refusal, with
// the count it audited.
type refusalAck struct {
	Name  string `json:"name"`
	Count int    `json:"count"`
}

// refusalsReply answers a methodOTARefusals call.
type refusalsReply struct {
	Error string `json:"error,omitempty"`
}

// deliverRefusals hands this node's refusals to its site leader: itself,
// or the leader over the mesh.
func (n *Node) deliverRefusals(ctx context.Context, batch []GrantRefusal) error {
	if n.group.IsLeader() {
		return n.refusalStore().add(ctx, batch)
	}
	return n.callLeader(ctx, batch)
}

// callLeader sends refusals to the site's Raft leader.
func (n *Node) callLeader(ctx context.Context, batch []GrantRefusal) error {
	r := n.group.Raft()
	if r == nil {
		return errors.New("raft has not started")
	}
	_, id := r.LeaderWithID()
	if id == "" {
		return fmt.Errorf("site %s has no leader right now", n.id.Site)
	}
	var reply refusalsReply
	if err := n.callMember(ctx, string(id), methodOTARefusals, batch, &reply); err != nil {
		return err
	}
	if reply.Error != "" {
		return errors.New(reply.Error)
	}
	return nil
}

// deliverRefusals hands a stateless agent's refusals to a member of its
// site's Raft group, which passes them to the leader.
func (a *Agent) deliverRefusals(ctx context.Context, batch []GrantRefusal) error {
	var errs []error
	for _, m := range a.gossip.Members() {
		if m.Site != a.id.Site || m.Stateless || m.State != gossip.Alive || m.QUICAddr == "" {
			continue
		}
		err := callRefusals(ctx, a.ep, m.QUICAddr, batch)
		if err == nil {
			return nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", m.Name, err))
	}
	if len(errs) == 0 {
		return fmt.Errorf("no member of site %s holds its state", a.id.Site)
	}
	return errors.Join(errs...)
}

// callRefusals makes one methodOTARefusals call to addr.
func callRefusals(ctx context.Context, ep *transport.Endpoint, addr string, batch []GrantRefusal) error {
	var reply refusalsReply
	if err := callOn(ctx, ep.Dial, addr, methodOTARefusals, batch, &reply); err != nil {
		return err
	}
	if reply.Error != "" {
		return errors.New(reply.Error)
	}
	return nil
}

// serveRefusals takes refusals from a member of this site: its own, or,
// from a member of the site's Raft group, a stateless agent's that it
// passes on. The leader keeps them; another member passes a member's own
// refusals to the leader, once.
func (n *Node) serveRefusals(ctx context.Context, s *transport.Stream) {
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(15 * time.Second))
	var batch []GrantRefusal
	if err := readMessage(s, &batch, 1<<20); err != nil {
		return
	}
	_ = writeMessage(s, refusalsReply{Error: errText(n.takeRefusals(ctx, s.Peer(), batch))})
}

func (n *Node) takeRefusals(ctx context.Context, peer transport.Peer, batch []GrantRefusal) error {
	if peer.Site != n.id.Site {
		return fmt.Errorf("%s of site %s may not report refusals of site %s", peer.Name, peer.Site, n.id.Site)
	}
	own := true
	for _, r := range batch {
		own = own && r.Node == peer.Name
	}
	if !own && !n.raftMember(peer.Name) {
		return fmt.Errorf("%s may report only its own refusals", peer.Name)
	}
	if len(batch) > maxHeldRefusals+1 {
		return fmt.Errorf("a report holds at most %d refusals", maxHeldRefusals+1)
	}
	switch {
	case n.group.IsLeader():
		return n.refusalStore().add(ctx, batch)
	case own:
		return n.callLeader(ctx, batch)
	}
	return fmt.Errorf("%s does not lead site %s", n.id.Name, n.id.Site)
}

// raftMember reports whether name is a server of this site's Raft group.
func (n *Node) raftMember(name string) bool {
	return slices.ContainsFunc(n.group.Status().Peers, func(p consensus.Peer) bool { return p.ID == name })
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// refusalStore is a site's record of its agents' refusals, in site Raft:
// written by the site leader, under mu, which orders the counts.
type refusalStore struct {
	mu    *sync.Mutex
	store *consensus.Store
}

func (n *Node) refusalStore() refusalStore {
	return refusalStore{mu: &n.access.refusalMu, store: n.group.Store()}
}

// add counts refusals in: into the object of the same refusal, or a new
// one, or, past maxSiteRefusals objects, into the overflow object.
func (s refusalStore) add(ctx context.Context, batch []GrantRefusal) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	store := s.store
	list, err := store.List(ctx, &GrantRefusalKind, "", nil, consensus.ReadOptions{Stale: true})
	if err != nil {
		return err
	}
	held := map[string]*consensus.Object{}
	for _, o := range list.Items {
		held[o.Name] = o
	}
	for _, r := range batch {
		name := r.key()
		if held[name] == nil && len(held) >= maxSiteRefusals {
			r, name = r.asOverflow(), overflowRefusal
		}
		r.Name = name
		cur := held[name]
		if cur == nil {
			obj := &consensus.Object{ObjectMeta: metav1.ObjectMeta{Name: name}}
			if err := obj.SetSpec(r); err != nil {
				return err
			}
			if held[name], err = store.Create(ctx, &GrantRefusalKind, obj); err != nil {
				return fmt.Errorf("keep refusal: %w", err)
			}
			continue
		}
		var spec GrantRefusal
		if err := cur.DecodeSpec(&spec); err != nil {
			return err
		}
		spec.merge(r)
		next := cur.DeepCopy()
		if err := next.SetSpec(spec); err != nil {
			return err
		}
		if held[name], err = store.Update(ctx, &GrantRefusalKind, next); err != nil {
			return fmt.Errorf("count refusal: %w", err)
		}
	}
	return nil
}

// pending are the refusals the site holds for the hub, at most
// refusalReportBatch, oldest first.
func (s refusalStore) pending(ctx context.Context) ([]GrantRefusal, error) {
	list, err := s.store.List(ctx, &GrantRefusalKind, "", nil, consensus.ReadOptions{Stale: true})
	if err != nil || len(list.Items) == 0 {
		return nil, err
	}
	out := make([]GrantRefusal, 0, len(list.Items))
	for _, o := range list.Items {
		var r GrantRefusal
		if o.DecodeSpec(&r) != nil {
			continue
		}
		r.Name = o.Name
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].First.Before(&out[j].First) })
	if len(out) > refusalReportBatch {
		out = out[:refusalReportBatch]
	}
	return out, nil
}

// ack forgets what the hub audited: an object whose count grew since
// keeps the difference.
func (s refusalStore) ack(ctx context.Context, acks []refusalAck) error {
	if len(acks) == 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	store := s.store
	var errs []error
	for _, a := range acks {
		cur, err := store.Get(ctx, &GrantRefusalKind, "", a.Name, consensus.ReadOptions{Stale: true})
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var spec GrantRefusal
		if err := cur.DecodeSpec(&spec); err != nil {
			errs = append(errs, err)
			continue
		}
		if spec.Count <= a.Count {
			_, err = store.Delete(ctx, &GrantRefusalKind, "", a.Name, cur.Revision(), "")
		} else {
			spec.Count -= a.Count
			next := cur.DeepCopy()
			if err = next.SetSpec(spec); err == nil {
				_, err = store.Update(ctx, &GrantRefusalKind, next)
			}
		}
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// auditRefusals writes a site's refusals to the audit log (hub leader)
// and returns those written: the site forgets only these.
func (l *auditLog) auditRefusals(ctx context.Context, site string, rs []GrantRefusal) []refusalAck {
	if len(rs) == 0 || l == nil {
		return nil
	}
	acks := make([]refusalAck, len(rs))
	var eg errgroup.Group
	eg.SetLimit(16)
	for i, r := range rs {
		eg.Go(func() error {
			wctx, cancel := context.WithTimeout(ctx, auditWriteTimeout)
			defer cancel()
			if err := l.write(wctx, refusalEvent(site, r)); err != nil {
				l.log.Warn("could not audit a refused task; the site sends it again", "site", site, "task", r.Task, "err", err)
				return nil
			}
			acks[i] = refusalAck{Name: r.Name, Count: r.Count}
			return nil
		})
	}
	_ = eg.Wait()
	return slices.DeleteFunc(acks, func(a refusalAck) bool { return a.Name == "" })
}

// refusalEvent is the audit event of a site's refusal: the site is the
// user (the request came through or into it), the caller and the node
// are in the message, the caller's address is the source.
func refusalEvent(site string, r GrantRefusal) AuditEventSpec {
	var b strings.Builder
	fmt.Fprintf(&b, "node %s refused %d run request", r.Node, r.Count)
	if r.Count != 1 {
		b.WriteByte('s')
	}
	if r.Name == overflowRefusal {
		b.WriteString(" beyond those itemized; the latest:")
	}
	fmt.Fprintf(&b, " of task %s (uid %s, attempt %d) from %s, ", r.Task, r.UID, r.Attempt, r.Peer)
	if r.Count == 1 {
		fmt.Fprintf(&b, "at %s", r.First.UTC().Format(time.RFC3339))
	} else {
		fmt.Fprintf(&b, "from %s to %s", r.First.UTC().Format(time.RFC3339), r.Last.UTC().Format(time.RFC3339))
	}
	fmt.Fprintf(&b, ": %s", r.Message)
	return AuditEventSpec{
		Time: r.Last, User: "site/" + site, Verb: "run", Group: ota.Group, Resource: "tasks", Name: r.Task,
		Source: r.Source, Code: 403, Message: b.String(),
	}
}
