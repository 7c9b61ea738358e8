package consensus

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
)

// compactEvery is how often, in Raft indexes, the watch history is trimmed.
// Trimming is keyed on the index alone so every replica trims identically.
const compactEvery = 256

// maxCompactDeletes caps the events one trim deletes, keeping its
// transaction small; the next trim goes on from there.
const maxCompactDeletes = 4096

// fsm applies commands to the state store. Raft calls Apply, ApplyBatch,
// Snapshot and Restore from one goroutine; readers use the state store
// directly and see whole transactions.
type fsm struct {
	st           *state
	hub          *hub
	log          *slog.Logger
	historyLimit uint64

	// proposed holds the commands this member proposed and has not yet
	// applied, by their encoding's first byte: a leader applies what it
	// just encoded without decoding it (decoding was a tenth of a hub's
	// CPU in a 10,000-node read, where the hub writes every result).
	proposed sync.Map // *byte -> proposal

	mu        sync.Mutex
	applied   uint64
	advanced  chan struct{} // closed and replaced whenever applied moves
	storeErr  error         // first storage failure; the replica is unhealthy
	onApplied func(uint64)  // metrics hook, may be nil
}

var _ raft.BatchingFSM = (*fsm)(nil)

// applyResult is what Apply returns to the proposer through the ApplyFuture.
type applyResult struct {
	obj *Object
	err error
}

func newFSM(st *state, h *hub, historyLimit uint64, logger *slog.Logger) (*fsm, error) {
	applied, err := st.applied()
	if err != nil {
		return nil, fmt.Errorf("read applied index: %w", err)
	}
	return &fsm{st: st, hub: h, log: logger, historyLimit: historyLimit, applied: applied, advanced: make(chan struct{})}, nil
}

// Apply implements raft.FSM.
func (f *fsm) Apply(l *raft.Log) any { return f.ApplyBatch([]*raft.Log{l})[0] }

// ApplyBatch implements raft.BatchingFSM: one Badger transaction for a batch,
// split when it would grow past Badger's transaction limit.
func (f *fsm) ApplyBatch(logs []*raft.Log) []any {
	out := make([]any, len(logs))
	var events []Event
	limit := f.st.db.MaxBatchSize() / 2
	txn := f.st.db.NewTransaction(true)
	defer func() { txn.Discard() }()
	var size int64
	// written holds the object keys the open transaction wrote: only
	// their reads must decode the transaction's own pending values.
	written := map[string]bool{}
	p, applied, err := f.txnHead(txn)
	last := applied
	for i, l := range logs {
		if err != nil {
			break
		}
		if l.Index <= applied {
			// Already in the state before a restart; Raft replays from its
			// last snapshot, this store remembers further.
			continue
		}
		if size > 0 && size+2*int64(len(l.Data))+512 > limit {
			if err = txn.Commit(); err != nil {
				break
			}
			f.publish(last, events)
			events, size = nil, 0
			clear(written)
			txn = f.st.db.NewTransaction(true)
		}
		size += 2*int64(len(l.Data)) + 512
		if l.Type == raft.LogCommand {
			var ev *Event
			var res applyResult
			res, ev, err = f.applyCommand(txn, p, l, written)
			out[i] = res
			if ev != nil {
				events = append(events, *ev)
			}
		}
		if err == nil && l.Index%compactEvery == 0 {
			err = f.compact(txn, p, l.Index)
		}
		if err == nil {
			err = putUint(txn, key(p, nsMeta, metaApplied), l.Index)
			last = l.Index
		}
	}
	if err == nil {
		err = txn.Commit()
	}
	if err != nil {
		f.fail(err)
		for i := range out {
			if out[i] == nil {
				out[i] = applyResult{err: apierrors.NewInternalError(err)}
			}
		}
		return out
	}
	f.publish(last, events)
	return out
}

// txnHead reads the live generation prefix and applied index in txn.
func (f *fsm) txnHead(txn *badger.Txn) ([]byte, uint64, error) {
	gen, err := f.st.gen(txn)
	if err != nil {
		return nil, 0, err
	}
	p := genPrefix(gen)
	applied, err := getUint(txn, key(p, nsMeta, metaApplied))
	return p, applied, err
}

// fail records a storage failure; the replica reports itself not ready.
func (f *fsm) fail(err error) {
	f.log.Error("state store write failed; this replica is unhealthy", "err", err)
	f.mu.Lock()
	if f.storeErr == nil {
		f.storeErr = err
	}
	f.mu.Unlock()
}

// healthy returns the first storage failure, if any.
func (f *fsm) healthy() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.storeErr
}

// publish advances the applied index and hands events to watchers.
func (f *fsm) publish(last uint64, events []Event) {
	f.mu.Lock()
	if last > f.applied {
		f.applied = last
		close(f.advanced)
		f.advanced = make(chan struct{})
	}
	hook := f.onApplied
	f.mu.Unlock()
	if hook != nil {
		hook(last)
	}
	f.hub.publish(events)
}

// appliedIndex returns the last applied index.
func (f *fsm) appliedIndex() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applied
}

// waitApplied blocks until the state has applied index i.
func (f *fsm) waitApplied(ctx context.Context, i uint64) error {
	for {
		f.mu.Lock()
		applied, ch := f.applied, f.advanced
		f.mu.Unlock()
		if applied >= i {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// proposal is a command as its proposer built it, and its encoding.
type proposal struct {
	data []byte
	c    *command
}

// remember keeps c, encoded as data, for the apply of data on this member;
// forget (once the proposal returned) drops it if it was not applied
// here. c must not change from here on.
func (f *fsm) remember(data []byte, c *command) (forget func()) {
	k := &data[0]
	f.proposed.Store(k, proposal{data: data, c: c})
	return func() { f.proposed.Delete(k) }
}

// command returns the command of l: the proposer's own when this member
// proposed it (Raft hands the leader's FSM the very bytes it was given),
// else decoded.
func (f *fsm) command(l *raft.Log) (*command, error) {
	if len(l.Data) > 0 {
		if v, ok := f.proposed.LoadAndDelete(&l.Data[0]); ok {
			if p := v.(proposal); bytes.Equal(p.data, l.Data) {
				return p.c, nil
			}
		}
	}
	return decodeCommand(l.Data)
}

// applyCommand applies one command. A refused command (conflict, not found)
// is a result, not an error: errors are storage failures. The stored
// object is read through the state's cache (it is shared: read, never
// changed here) unless txn wrote it; written gains the key.
func (f *fsm) applyCommand(txn *badger.Txn, p []byte, l *raft.Log, written map[string]bool) (applyResult, *Event, error) {
	c, err := f.command(l)
	if err != nil {
		f.log.Error("skipping undecodable command", "index", l.Index, "err", err)
		return applyResult{err: apierrors.NewBadRequest(err.Error())}, nil, nil
	}
	var cur *Object
	if written[c.Key] {
		cur, err = getObject(txn, p, c.Key)
	} else {
		cur, err = f.st.readObject(txn, p, c.Key)
	}
	if err != nil {
		return applyResult{}, nil, err
	}
	now := metav1.NewTime(c.Now.UTC())
	gr := groupResource(c)
	if c.Op != opCreate {
		if cur == nil {
			return applyResult{err: apierrors.NewNotFound(gr, c.Name)}, nil, nil
		}
		if c.ExpectRV != 0 && c.ExpectRV != cur.Revision() {
			return applyResult{err: apierrors.NewConflict(gr, c.Name, fmt.Errorf(
				"the object has been modified (resourceVersion %d, you sent %d); read it again and reapply your change", cur.Revision(), c.ExpectRV))}, nil, nil
		}
		if c.ExpectUID != "" && string(cur.UID) != c.ExpectUID {
			return applyResult{err: apierrors.NewConflict(gr, c.Name, fmt.Errorf("uid %s does not match the stored %s", c.ExpectUID, cur.UID))}, nil, nil
		}
	}
	var next *Object
	evType := watch.Modified
	switch c.Op {
	case opCreate:
		if cur != nil {
			return applyResult{err: apierrors.NewAlreadyExists(gr, c.Name)}, nil, nil
		}
		next = c.Obj.DeepCopy()
		next.Generation = 1
		next.CreationTimestamp = now
		next.DeletionTimestamp = nil
		evType = watch.Added
	case opUpdate:
		next = c.Obj.DeepCopy()
		next.UID, next.CreationTimestamp, next.DeletionTimestamp = cur.UID, cur.CreationTimestamp, cur.DeletionTimestamp.DeepCopy()
		if !c.WithStatus {
			next.Status = append(json.RawMessage(nil), cur.Status...)
		}
		next.Generation = cur.Generation
		if !jsonEqual(next.Spec, cur.Spec) {
			next.Generation++
		}
	case opStatus:
		next = cur.DeepCopy()
		next.Status = append(json.RawMessage(nil), c.Obj.Status...)
	case opDelete:
		next = cur.DeepCopy()
		if next.DeletionTimestamp == nil {
			// Without finalizers this deletes the object below; with them
			// it only marks it.
			next.DeletionTimestamp = &now
			if len(next.Finalizers) > 0 {
				next.Generation++
			}
		}
	default:
		return applyResult{err: apierrors.NewBadRequest(fmt.Sprintf("unknown op %q", c.Op))}, nil, nil
	}
	next.ResourceVersion = formatRV(l.Index)
	okey := key(p, nsObject, c.Key)
	// The object is encoded once, for its key and inside its event.
	b, err := json.Marshal(next)
	if err != nil {
		return applyResult{}, nil, err
	}
	if next.DeletionTimestamp != nil && len(next.Finalizers) == 0 {
		evType = watch.Deleted
		err = txn.Delete(okey)
	} else {
		err = txn.Set(okey, b)
	}
	if err != nil {
		return applyResult{}, nil, err
	}
	written[c.Key] = true
	ev := &Event{Type: evType, Object: next, Key: c.Key}
	if err := txn.Set(eventKey(p, l.Index), encodeEvent(evType, b, c.Key)); err != nil {
		return applyResult{}, nil, err
	}
	return applyResult{obj: next}, ev, nil
}

// encodeEvent is json.Marshal of Event{Type: t, Object: obj, Key: key}
// for an object already encoded as obj.
func encodeEvent(t watch.EventType, obj []byte, key string) []byte {
	k, _ := json.Marshal(key) // a string always encodes
	b := make([]byte, 0, len(obj)+len(t)+len(k)+32)
	b = append(b, `{"type":`...)
	tb, _ := json.Marshal(t)
	b = append(b, tb...)
	b = append(b, `,"object":`...)
	b = append(b, obj...)
	b = append(b, `,"key":`...)
	b = append(b, k...)
	return append(b, '}')
}

// compact trims watch history older than historyLimit indexes before i.
func (f *fsm) compact(txn *badger.Txn, p []byte, i uint64) error {
	if f.historyLimit == 0 || i <= f.historyLimit {
		return nil
	}
	floor := i - f.historyLimit
	ck := key(p, nsMeta, metaCompact)
	compacted, err := getUint(txn, ck)
	if err != nil || compacted >= floor {
		return err
	}
	pre := key(p, nsEvent, "")
	it := txn.NewIterator(badger.IteratorOptions{Prefix: pre})
	var dead [][]byte
	upto := floor
	for it.Seek(eventKey(p, compacted+1)); it.ValidForPrefix(pre); it.Next() {
		k := it.Item().KeyCopy(nil)
		idx := indexOfEventKey(k, len(pre))
		if idx > floor {
			break
		}
		if len(dead) == maxCompactDeletes {
			upto = idx - 1
			break
		}
		dead = append(dead, k)
	}
	it.Close()
	for _, k := range dead {
		if err := txn.Delete(k); err != nil {
			return err
		}
	}
	return putUint(txn, ck, upto)
}

func indexOfEventKey(k []byte, prefixLen int) uint64 {
	var n uint64
	for _, b := range k[prefixLen:] {
		n = n<<8 | uint64(b)
	}
	return n
}

// jsonEqual reports whether a and b encode the same value; the same bytes
// (an update that leaves the spec alone, most of a controller's) are
// equal without decoding either.
func jsonEqual(a, b json.RawMessage) bool {
	if len(a) == 0 || len(b) == 0 {
		return len(a) == len(b)
	}
	if bytes.Equal(a, b) {
		return true
	}
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return string(a) == string(b)
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return string(xa) == string(ya)
}

func groupResource(c *command) schema.GroupResource {
	return schema.GroupResource{Group: c.Group, Resource: c.Resource}
}

// Snapshot implements raft.FSM: a Badger read transaction pins the state as
// of the last applied index while Persist streams it.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	txn := f.st.db.NewTransaction(false)
	gen, err := f.st.gen(txn)
	if err != nil {
		txn.Discard()
		return nil, err
	}
	return &fsmSnapshot{txn: txn, prefix: genPrefix(gen)}, nil
}

// Restore implements raft.FSM: the snapshot is written as a new generation,
// which one transaction then makes live; watchers are closed so they resume
// from their last resourceVersion against the new history.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	applied, err := restoreState(f.st, rc)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.applied = applied
	close(f.advanced)
	f.advanced = make(chan struct{})
	f.mu.Unlock()
	f.hub.closeAll(errRestored)
	f.log.Info("state restored from snapshot", "index", applied)
	return nil
}

// errRestored ends the watchers of a replica that restored a snapshot. It is
// an ErrWatchDropped, as that error's documentation promises, so callers
// (the API's 503 mapping) resume instead of failing.
var errRestored = fmt.Errorf("state replaced by a snapshot: %w", ErrWatchDropped)
