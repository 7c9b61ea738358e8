package consensus

import (
	"encoding/json"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// TestUpdateWithStatus checks that labels and status change in one write,
// at one resourceVersion, and that a stale resourceVersion is refused.
func TestUpdateWithStatus(t *testing.T) {
	t.Parallel()
	c := newTestGroup(t)
	s, k := c.Store(0), c.Kind()
	ctx := t.Context()
	cur := mustCreate(t, s, k, newWidget("ns", "w", map[string]string{"phase": "Queued"}, widgetSpec{Size: 1}))

	next := cur.DeepCopy()
	next.Labels["phase"] = "Done"
	next.Status = json.RawMessage(`{"phase":"Done","ready":true}`)
	got, err := s.UpdateWithStatus(ctx, k, next)
	if err != nil {
		t.Fatal(err)
	}
	if got.Labels["phase"] != "Done" || string(got.Status) != `{"phase":"Done","ready":true}` {
		t.Fatalf("after UpdateWithStatus: labels %v, status %s", got.Labels, got.Status)
	}
	if got.Revision() <= cur.Revision() {
		t.Fatalf("resourceVersion %d after %d", got.Revision(), cur.Revision())
	}
	if got.Generation != cur.Generation {
		t.Errorf("generation moved from %d to %d without a spec change", cur.Generation, got.Generation)
	}
	stale := cur.DeepCopy() // still at the first resourceVersion
	stale.Status = json.RawMessage(`{"phase":"Lost"}`)
	if _, err := s.UpdateWithStatus(ctx, k, stale); !apierrors.IsConflict(err) {
		t.Fatalf("stale UpdateWithStatus: %v, want Conflict", err)
	}
	// A plain Update still keeps the status.
	plain := got.DeepCopy()
	plain.Status = json.RawMessage(`{"phase":"Ignored"}`)
	kept, err := s.Update(ctx, k, plain)
	if err != nil {
		t.Fatal(err)
	}
	if string(kept.Status) != `{"phase":"Done","ready":true}` {
		t.Errorf("Update changed the status to %s", kept.Status)
	}
}

// TestGetManyThenUpdateFrom reads several objects in one transaction and
// updates one from what was read; an update from a read that another
// write has overtaken is a Conflict.
func TestGetManyThenUpdateFrom(t *testing.T) {
	t.Parallel()
	c := newTestGroup(t)
	s, k := c.Store(0), c.Kind()
	ctx := t.Context()
	mustCreate(t, s, k, newWidget("ns", "a", nil, widgetSpec{Size: 1}))
	mustCreate(t, s, k, newWidget("ns", "b", nil, widgetSpec{Size: 2}))
	got, err := s.GetMany(ctx, k, "ns", []string{"a", "missing", "b"}, ReadOptions{Stale: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got["a"] == nil || got["b"] == nil {
		t.Fatalf("GetMany = %v, want a and b", got)
	}
	cur := got["a"]
	next := cur.DeepCopy()
	next.Status = json.RawMessage(`{"phase":"Done"}`)
	updated, err := s.UpdateWithStatusFrom(ctx, k, next, cur)
	if err != nil {
		t.Fatal(err)
	}
	if string(updated.Status) != `{"phase":"Done"}` || updated.UID != cur.UID {
		t.Fatalf("after UpdateWithStatusFrom: status %s, uid %s (was %s)", updated.Status, updated.UID, cur.UID)
	}
	// GetMany hands out copies: the update did not reach the map's object.
	if string(cur.Status) == `{"phase":"Done"}` {
		t.Error("GetMany's object changed with the store")
	}
	again := cur.DeepCopy()
	again.Status = json.RawMessage(`{"phase":"Lost"}`)
	if _, err := s.UpdateWithStatusFrom(ctx, k, again, cur); !apierrors.IsConflict(err) {
		t.Fatalf("update from a stale read: %v, want Conflict", err)
	}
}
