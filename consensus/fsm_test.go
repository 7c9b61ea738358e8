package consensus

import (
	"bytes"
	"testing"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"
)

// TestApplyBatchReadsItsOwnWrites: within one batch, a command sees the
// version an earlier command of the batch wrote, though the object's
// committed version sits in the read cache (each command's expected
// resourceVersion is the previous command's index).
func TestApplyBatchReadsItsOwnWrites(t *testing.T) {
	t.Parallel()
	f := newTestFSM(t, 0)
	f.apply(t, f.create("ns", "a", 1)) // index 2
	key := objectKey(f.kind, "ns", "a")
	read := func() *Object {
		var obj *Object
		if err := f.st.view(func(txn *badger.Txn, p []byte) error {
			var err error
			obj, err = f.st.readObject(txn, p, key)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return obj
	}
	if obj := read(); obj.Revision() != 2 { // now cached
		t.Fatalf("created at %d, want 2", obj.Revision())
	}
	one, two, three := f.status("ns", "a", "one"), f.status("ns", "a", "two"), f.status("ns", "a", "three")
	one.ExpectRV, two.ExpectRV, three.ExpectRV = 2, 3, 4
	f.apply(t, one, two, three) // indexes 3, 4, 5 in one batch; apply fails on a conflict
	obj := read()
	if obj.Revision() != 5 || string(obj.Status) != `{"phase":"three"}` {
		t.Fatalf("after the batch: version %d status %s; want 5 and phase three", obj.Revision(), obj.Status)
	}
}

// TestJSONEqual: the same bytes, and the same value written differently,
// are equal; a different value is not.
func TestJSONEqual(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		a, b string
		want bool
	}{
		{`{"a":1,"b":[1,2]}`, `{"a":1,"b":[1,2]}`, true},
		{`{"a":1,"b":[1,2]}`, `{ "b": [1, 2], "a": 1 }`, true},
		{`{"a":1}`, `{"a":2}`, false},
		{`{"a":1}`, ``, false},
		{``, ``, true},
	} {
		if got := jsonEqual([]byte(c.a), []byte(c.b)); got != c.want {
			t.Errorf("jsonEqual(%s, %s) = %v, want %v", c.a, c.b, got, c.want)
		}
	}
}

// TestApplyUsesTheProposersCommand: a command this member proposed is
// applied as the proposer built it, not decoded again; the same bytes in
// another slice (a log read back from disk), or after the proposal was
// forgotten, are decoded.
func TestApplyUsesTheProposersCommand(t *testing.T) {
	t.Parallel()
	f := newTestFSM(t, 0)
	c := f.create("ns", "a", 1)
	c.Group, c.Resource, c.Now = f.kind.Group, f.kind.Plural, snapshotTestNow
	data, err := encodeCommand(c)
	if err != nil {
		t.Fatal(err)
	}
	forget := f.remember(data, c)
	if got, err := f.command(&raft.Log{Data: bytes.Clone(data)}); err != nil || got == c {
		t.Fatalf("a copy of the bytes: %p, %v; want a decoded command", got, err)
	}
	if got, err := f.command(&raft.Log{Data: data}); err != nil || got != c {
		t.Fatalf("the proposed bytes: %p, %v; want the proposer's command %p", got, err, c)
	}
	if got, _ := f.command(&raft.Log{Data: data}); got == c {
		t.Fatal("the proposer's command was used twice")
	}
	forget()
	forget = f.remember(data, c)
	forget()
	if got, err := f.command(&raft.Log{Data: data}); err != nil || got == c || got.Key != c.Key {
		t.Fatalf("a forgotten proposal: %p (key %q), %v; want a decoded command for %q", got, got.Key, err, c.Key)
	}
}
