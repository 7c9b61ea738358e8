package consensus

import (
	"encoding/json"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// TestCreateWithStatus checks that CreateWithStatus keeps the status in
// the one write that creates the object (Create drops it), that the read
// back matches, and that a status the kind does not accept is refused.
func TestCreateWithStatus(t *testing.T) {
	t.Parallel()
	c := newTestGroup(t)
	s, k := c.Store(0), c.Kind()
	ctx := t.Context()

	obj := newWidget("ns", "w", nil, widgetSpec{Size: 1})
	obj.Status = json.RawMessage(`{"phase":"Queued"}`)
	got, err := s.CreateWithStatus(ctx, k, obj)
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Status) != `{"phase":"Queued"}` || got.UID == "" || got.Generation != 1 {
		t.Fatalf("created %+v: want the status, a uid and generation 1", got)
	}
	read, err := s.Get(ctx, k, "ns", "w", ReadOptions{})
	if err != nil || string(read.Status) != `{"phase":"Queued"}` || read.ResourceVersion != got.ResourceVersion {
		t.Fatalf("read back %+v, %v", read, err)
	}

	plain := newWidget("ns", "p", nil, widgetSpec{Size: 1})
	plain.Status = json.RawMessage(`{"phase":"Queued"}`)
	if got, err := s.Create(ctx, k, plain); err != nil || len(got.Status) != 0 {
		t.Fatalf("Create kept status %s (%v); it drops it", got.Status, err)
	}

	bad := newWidget("ns", "b", nil, widgetSpec{Size: 1})
	bad.Status = json.RawMessage(`{"nope":1}`)
	if _, err := s.CreateWithStatus(ctx, k, bad); !apierrors.IsBadRequest(err) {
		t.Fatalf("CreateWithStatus with an unknown status field: %v, want BadRequest", err)
	}
}
