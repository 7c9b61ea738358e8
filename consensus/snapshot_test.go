package consensus

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"
	"k8s.io/apimachinery/pkg/types"
)

// memSink is a raft.SnapshotSink over a buffer.
type memSink struct {
	bytes.Buffer
	failWrites bool
	cancelled  bool
	closed     bool
}

var _ raft.SnapshotSink = (*memSink)(nil)

func (s *memSink) Write(p []byte) (int, error) {
	if s.failWrites {
		return 0, errors.New("disk full")
	}
	return s.Buffer.Write(p)
}
func (s *memSink) ID() string    { return "test" }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }
func (s *memSink) Close() error  { s.closed = true; return nil }

// testFSM is an FSM over its own state store, as a Group builds it.
type testFSM struct {
	*fsm
	dir  string
	kind *Kind
	next uint64 // index of the next log entry
}

func newTestFSM(t testing.TB, historyLimit uint64) *testFSM {
	t.Helper()
	dir := t.TempDir()
	f := &testFSM{dir: dir, next: 1}
	_, f.kind = newTestRegistry(t)
	f.open(t, historyLimit)
	t.Cleanup(func() {
		if err := f.st.close(); err != nil {
			t.Error(err)
		}
	})
	return f
}

func (f *testFSM) open(t testing.TB, historyLimit uint64) {
	t.Helper()
	st, err := openState(f.dir, nil, FootprintHub)
	if err != nil {
		t.Fatal(err)
	}
	f.fsm, err = newFSM(st, newHub(), historyLimit, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if applied := f.appliedIndex(); applied >= f.next {
		f.next = applied + 1
	}
}

// reopen closes the state store and opens it again from disk.
func (f *testFSM) reopen(t testing.TB) {
	t.Helper()
	if err := f.st.close(); err != nil {
		t.Fatal(err)
	}
	f.open(t, f.historyLimit)
}

var snapshotTestNow = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// apply applies cmds as consecutive log entries, a configuration entry
// first when the log is empty, and fails on a refused command.
func (f *testFSM) apply(t testing.TB, cmds ...*command) {
	t.Helper()
	var logs []*raft.Log
	if f.next == 1 {
		logs = append(logs, &raft.Log{Index: 1, Term: 1, Type: raft.LogConfiguration})
		f.next++
	}
	for _, c := range cmds {
		c.Group, c.Resource, c.Now = f.kind.Group, f.kind.Plural, snapshotTestNow
		data, err := encodeCommand(c)
		if err != nil {
			t.Fatal(err)
		}
		logs = append(logs, &raft.Log{Index: f.next, Term: 1, Type: raft.LogCommand, Data: data})
		f.next++
	}
	for i, res := range f.ApplyBatch(logs) {
		if r, ok := res.(applyResult); ok && r.err != nil {
			t.Fatalf("apply %d: %v", logs[i].Index, r.err)
		}
	}
}

func (f *testFSM) create(ns, name string, size int) *command {
	obj := newWidget(ns, name, map[string]string{"size": fmt.Sprint(size)}, widgetSpec{Size: size})
	obj.APIVersion, obj.Kind = f.kind.APIVersion(), f.kind.Kind
	obj.UID = types.UID("uid-" + ns + "-" + name)
	return &command{Op: opCreate, Key: objectKey(f.kind, ns, name), Name: name, Obj: obj}
}

func (f *testFSM) status(ns, name, phase string) *command {
	return &command{Op: opStatus, Key: objectKey(f.kind, ns, name), Name: name,
		Obj: &Object{Status: json.RawMessage(fmt.Sprintf(`{"phase":%q}`, phase))}}
}

func (f *testFSM) remove(ns, name string) *command {
	return &command{Op: opDelete, Key: objectKey(f.kind, ns, name), Name: name}
}

// dump returns every key and value of the live generation, without the
// generation prefix: objects, events and the applied and compacted indexes.
func (f *testFSM) dump(t testing.TB) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := f.st.view(func(txn *badger.Txn, p []byte) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: p})
		defer it.Close()
		for it.Rewind(); it.ValidForPrefix(p); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			out[string(it.Item().Key()[len(p):])] = string(v)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// snapshot persists f's state and returns the stream.
func (f *testFSM) snapshot(t testing.TB) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	if !sink.closed || sink.cancelled {
		t.Fatalf("persist: closed %v cancelled %v", sink.closed, sink.cancelled)
	}
	return sink.Bytes()
}

func equalDumps(t testing.TB, what string, got, want map[string]string) {
	t.Helper()
	if maps.Equal(got, want) {
		return
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: key %q = %q, want %q", what, k, got[k], v)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s: extra key %q", what, k)
		}
	}
	t.FailNow()
}

func countPrefix(d map[string]string, ns byte) int {
	n := 0
	for k := range d {
		if k[0] == ns {
			n++
		}
	}
	return n
}

// fillSource writes objects, status changes and deletes, and with many set
// enough entries to trim the watch history.
func fillSource(t testing.TB, f *testFSM, many bool) {
	t.Helper()
	n := 5
	if many {
		n = compactEvery + 40
	}
	var cmds []*command
	for i := range n {
		cmds = append(cmds, f.create("ns", fmt.Sprintf("o-%03d", i), i))
	}
	f.apply(t, cmds...)
	f.apply(t, f.status("ns", "o-001", "Up"), f.remove("ns", "o-002"), f.create("other", "x", 1))
}

func TestSnapshotRoundTrip(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		many    bool // enough entries that the watch history was trimmed
		dstUsed bool // the destination has state of its own to replace
	}{
		{name: "small into empty"},
		{name: "small into used", dstUsed: true},
		{name: "trimmed history into used", many: true, dstUsed: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			src := newTestFSM(t, 32)
			fillSource(t, src, tc.many)
			want := src.dump(t)
			if countPrefix(want, nsObject) == 0 || countPrefix(want, nsEvent) == 0 {
				t.Fatalf("source state has no objects or events: %v", want)
			}
			if _, ok := want[string(nsMeta)+metaCompact]; ok != tc.many {
				t.Fatalf("source history trimmed: %v, want %v", ok, tc.many)
			}
			stream := src.snapshot(t)

			dst := newTestFSM(t, 32)
			if tc.dstUsed {
				dst.apply(t, dst.create("ns", "o-000", 100), dst.create("old", "only-here", 1))
			}
			w := dst.hub.subscribe()
			if err := dst.Restore(io.NopCloser(bytes.NewReader(stream))); err != nil {
				t.Fatal(err)
			}
			equalDumps(t, "restored state", dst.dump(t), want)
			if got, want := dst.appliedIndex(), src.appliedIndex(); got != want {
				t.Fatalf("applied index %d after restore, want %d", got, want)
			}
			if got, err := dst.st.applied(); err != nil || got != src.appliedIndex() {
				t.Fatalf("stored applied index %d (%v), want %d", got, err, src.appliedIndex())
			}
			// Watchers of the replaced state end and resume from their
			// last resourceVersion.
			select {
			case <-w.done:
				if !errors.Is(w.err, ErrWatchDropped) {
					t.Errorf("watcher ended with %v, want ErrWatchDropped", w.err)
				}
			default:
				t.Error("restore left a watcher of the old state running")
			}

			// The restored state survives a reopen and goes on applying
			// exactly as the source does.
			dst.reopen(t)
			dst.next = src.next
			more := func(f *testFSM) []*command {
				return []*command{f.create("ns", "later", 7), f.status("ns", "o-003", "Down"), f.remove("ns", "o-004")}
			}
			src.apply(t, more(src)...)
			dst.apply(t, more(dst)...)
			equalDumps(t, "state after more commands", dst.dump(t), src.dump(t))
		})
	}
}

// TestSnapshotRestoreAtomic feeds Restore broken streams: each fails and
// leaves the state it had, and a whole stream restores afterwards.
func TestSnapshotRestoreAtomic(t *testing.T) {
	t.Parallel()
	src := newTestFSM(t, 0)
	fillSource(t, src, false)
	stream := src.snapshot(t)
	want := src.dump(t)

	tests := []struct {
		name   string
		stream func() []byte
	}{
		{"empty", func() []byte { return nil }},
		{"half the header", func() []byte { return stream[:len(snapshotMagic)/2] }},
		{"header only", func() []byte { return stream[:len(snapshotMagic)] }},
		{"inside the first record", func() []byte { return stream[:len(snapshotMagic)+3] }},
		{"half the stream", func() []byte { return stream[:len(stream)/2] }},
		{"without the end marker", func() []byte { return stream[:len(stream)-1] }},
		{"wrong header", func() []byte {
			b := bytes.Clone(stream)
			b[0] = 'X'
			return b
		}},
		{"huge record length", func() []byte {
			b := append([]byte(snapshotMagic), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f)
			return append(b, stream[len(snapshotMagic):]...)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dst := newTestFSM(t, 0)
			dst.apply(t, dst.create("ns", "o-000", 100), dst.create("old", "only-here", 1))
			before := dst.dump(t)
			appliedBefore := dst.appliedIndex()
			w := dst.hub.subscribe()

			if err := dst.Restore(io.NopCloser(bytes.NewReader(tc.stream()))); err == nil {
				t.Fatal("restore of a broken stream succeeded")
			}
			equalDumps(t, "state after a failed restore", dst.dump(t), before)
			if dst.appliedIndex() != appliedBefore {
				t.Fatalf("applied index moved to %d from %d", dst.appliedIndex(), appliedBefore)
			}
			select {
			case <-w.done:
				t.Fatal("a failed restore ended the watchers")
			default:
			}
			dst.reopen(t)
			equalDumps(t, "state reopened after a failed restore", dst.dump(t), before)

			// What the failed restore wrote aside does not leak into the
			// next one.
			if err := dst.Restore(io.NopCloser(bytes.NewReader(stream))); err != nil {
				t.Fatal(err)
			}
			equalDumps(t, "state after a good restore", dst.dump(t), want)
		})
	}
}

func TestSnapshotPersistFailure(t *testing.T) {
	t.Parallel()
	src := newTestFSM(t, 0)
	fillSource(t, src, false)
	snap, err := src.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	sink := &memSink{failWrites: true}
	if err := snap.Persist(sink); err == nil {
		t.Fatal("persist to a failing sink succeeded")
	}
	if !sink.cancelled || sink.closed {
		t.Fatalf("failed persist: cancelled %v closed %v, want cancelled only", sink.cancelled, sink.closed)
	}
}
