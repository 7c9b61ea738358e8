package node

import (
	"fmt"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/outpost-mesh/outpost/consensus"
	"github.com/outpost-mesh/outpost/consensus/consensustest"
)

// TestRevocationSetFollowsTheIndex: the revoked names are read once per
// applied index, and a revocation is seen as soon as the index moves.
func TestRevocationSetFollowsTheIndex(t *testing.T) {
	t.Parallel()
	store := consensustest.NewStore(t, func(r *consensus.Registry) error { return r.Register(RevocationKind) })
	revoke := func(name string) uint64 {
		obj, err := store.Create(t.Context(), &RevocationKind, &consensus.Object{ObjectMeta: metav1.ObjectMeta{Name: name}})
		if err != nil {
			t.Fatal(err)
		}
		return obj.Revision()
	}
	var r revocationSet
	index := revoke("a")
	if got := r.current(index, store); fmt.Sprint(got) != "map[a:true]" {
		t.Fatalf("first read: %v, want a", got)
	}
	next := revoke("b")
	if got := r.current(index, store); fmt.Sprint(got) != "map[a:true]" {
		t.Errorf("at the same index: %v, want the list read at it", got)
	}
	if got := r.current(next, store); fmt.Sprint(got) != "map[a:true b:true]" {
		t.Errorf("at the next index: %v, want a and b", got)
	}
}
