package node

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/outpost-mesh/outpost/consensus"
)

// RevocationKind marks a node name whose certificates are refused. The hub
// writes it on `outpost delete node`; the hub link copies it to the sites.
var RevocationKind = consensus.Kind{
	Group: CoreGroup, Version: "v1alpha1", Kind: "Revocation", Plural: "revocations", Hidden: true,
}

// revoked reports whether name is revoked in this node's replica.
func (n *Node) revoked(name string) bool {
	_, err := n.group.Store().Get(context.Background(), &RevocationKind, "", name, consensus.ReadOptions{Stale: true})
	return err == nil
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
