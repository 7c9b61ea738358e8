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
