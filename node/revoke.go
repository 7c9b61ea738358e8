package node

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/outpost-mesh/outpost/consensus"
)

// RevocationKind marks a node name whose certificates are refused. The hub
// writes it on `outpost delete node`; the hub link copies it to the sites.
var RevocationKind = consensus.Kind{
	Group: CoreGroup, Version: "v1alpha1", Kind: "Revocation", Plural: "revocations", Hidden: true,
}

// revoked reports whether name is revoked in this node's replica.
func (n *Node) revoked(name string) bool {
	return n.revocations.has(n.group, name)
}

// revocationSet is the revoked names of a replica as of its applied index,
// listed again when the index moved: the roster asks about every member of
// the site each second, and the transport about every stream, and a Get
// per question (a Badger miss and a NotFound error each time) was a fifth
// of an idle site leader's CPU.
type revocationSet struct {
	mu    sync.Mutex
	index uint64
	names map[string]bool // nil until listed
}

// has reports whether name is revoked in g's replica.
func (r *revocationSet) has(g *consensus.Group, name string) bool {
	return r.current(g.AppliedIndex(), g.Store())[name]
}

// sorted returns the revoked names of g's replica, sorted.
func (r *revocationSet) sorted(g *consensus.Group) []string {
	return slices.Sorted(maps.Keys(r.current(g.AppliedIndex(), g.Store())))
}

// current returns the set as of applied index, read from store when the
// index moved (not to be changed). An error listing them keeps the last
// list.
func (r *revocationSet) current(index uint64, store *consensus.Store) map[string]bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.names == nil || r.index != index {
		list, err := store.List(context.Background(), &RevocationKind, "", nil, consensus.ReadOptions{Stale: true})
		if err == nil {
			names := make(map[string]bool, len(list.Items))
			for _, o := range list.Items {
				names[o.Name] = true
			}
			r.names, r.index = names, index
		}
	}
	return r.names
}

// runRevocations ends the open connections of a peer as soon as its
// revocation is in this node's replica. The transport refuses a revoked
// peer's handshakes and new streams by itself; this closes what it already
// holds (a site member's Raft stream would otherwise go on replicating the
// site's state to it).
func (n *Node) runRevocations(ctx context.Context) error {
	for ctx.Err() == nil {
		if err := n.followRevocations(ctx); err != nil && ctx.Err() == nil {
			n.log.Debug("revocation watch restarted", "err", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	return nil
}

// followRevocations closes revoked peers' connections now and after each
// revocation the watch delivers, until the watch fails.
func (n *Node) followRevocations(ctx context.Context) error {
	w, err := n.group.Store().Watch(ctx, &RevocationKind, "", nil, n.group.AppliedIndex())
	if err != nil {
		return err
	}
	defer w.Stop()
	n.closeRevoked("")
	for {
		ev, err := w.Next(ctx)
		if err != nil {
			return err
		}
		if ev.Type == watch.Added {
			n.closeRevoked(ev.Object.Name)
		}
	}
}

// closeRevoked closes the connections of every revoked peer (the event
// applied its revocation, and the revoked set follows the applied index).
func (n *Node) closeRevoked(name string) {
	if k := n.ep.CloseRevoked(); k > 0 {
		n.revokedConns.Add(uint64(k))
		n.log.Info("closed the connections of a revoked node", "node", name, "connections", k)
	}
}

// revoke records name as revoked and forgets its membership; a new join
// may take the name again.
func revoke(ctx context.Context, store *consensus.Store, name string) error {
	_, err := store.Create(ctx, &RevocationKind, &consensus.Object{ObjectMeta: metav1.ObjectMeta{Name: name}})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("revoke %s: %w", name, err)
	}
	if _, err := store.Delete(ctx, &MemberKind, "", name, 0, ""); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	return nil
}

// onDelete runs before the admin API deletes an object: deleting a Node
// revokes its certificate and removes it from its Raft group.
func (n *Node) onDelete(ctx context.Context, k *consensus.Kind, namespace, name string) error {
	if k.Kind != NodeKind.Kind {
		return nil
	}
	if name == n.id.Name {
		return apierrors.NewBadRequest("a node cannot delete itself; delete it from another hub member")
	}
	if err := revoke(ctx, n.group.Store(), name); err != nil {
		return err
	}
	if r := n.group.Raft(); r != nil {
		_ = r.RemoveServer(raftID(name), 0, 0).Error()
	}
	return nil
}
