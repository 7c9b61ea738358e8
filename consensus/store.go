package consensus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/google/uuid"
	"github.com/hashicorp/raft"
	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
)

// patchRetries bounds how often a patch is re-applied after losing a race
// with another writer of the same object.
const patchRetries = 8

// NotLeaderError is returned by writes and linearizable reads on a member
// that does not lead the group. Leader is the leader's Raft address and
// LeaderID its name, both empty while an election is under way.
type NotLeaderError struct {
	Leader   string
	LeaderID string
}

func (e *NotLeaderError) Error() string {
	if e.LeaderID == "" {
		return "no leader elected yet; retry in a moment"
	}
	return fmt.Sprintf("not the leader; the leader is %s (%s)", e.LeaderID, e.Leader)
}

// IsNotLeader reports whether err is a NotLeaderError.
func IsNotLeader(err error) bool {
	var nl *NotLeaderError
	return errors.As(err, &nl)
}

// ReadOptions choose how a read is served.
type ReadOptions struct {
	// Stale reads the local replica without checking leadership; it may lag
	// the leader. Default reads are linearizable and served by the leader.
	Stale bool
	// Uncached reads the objects the store's cache does not hold without
	// adding them to it: for a scan of many objects read once (the hub's
	// sweep of every task's results for orphans), which would otherwise
	// push out the objects that busy readers decode again and again.
	Uncached bool
}

// Store is the replicated object store of a Group. Writes go through Raft on
// the leader; on any other member they return a NotLeaderError.
type Store struct {
	g   *Group
	reg *Registry
	// verifiedTerm is the term in which this leader committed a barrier,
	// after which its commit index covers every earlier term's writes.
	verifiedTerm atomic.Uint64
	// observeApply, if set, receives each write's latency.
	observeApply func(time.Duration)
}

// Registry returns the kinds the store accepts.
func (s *Store) Registry() *Registry { return s.reg }

// Get returns one object.
func (s *Store) Get(ctx context.Context, k *Kind, namespace, name string, opt ReadOptions) (*Object, error) {
	if err := s.readBarrier(ctx, opt); err != nil {
		return nil, err
	}
	var obj *Object
	err := s.g.st.view(func(txn *badger.Txn, p []byte) (err error) {
		obj, err = s.g.st.readObject(txn, p, objectKey(k, namespace, name))
		return err
	})
	if err != nil {
		return nil, apierrors.NewInternalError(err)
	}
	if obj == nil {
		return nil, apierrors.NewNotFound(k.GroupResource(), name)
	}
	return obj.DeepCopy(), nil
}

// GetMany returns the objects of k in namespace with the given names, by
// name, read in one transaction; absent names are left out. It is for a
// caller about to update many objects: one read instead of one each.
func (s *Store) GetMany(ctx context.Context, k *Kind, namespace string, names []string, opt ReadOptions) (map[string]*Object, error) {
	if err := s.readBarrier(ctx, opt); err != nil {
		return nil, err
	}
	out := make(map[string]*Object, len(names))
	err := s.g.st.view(func(txn *badger.Txn, p []byte) error {
		for _, name := range names {
			obj, err := s.g.st.readObject(txn, p, objectKey(k, namespace, name))
			if err != nil {
				return err
			}
			if obj != nil {
				out[name] = obj.DeepCopy()
			}
		}
		return nil
	})
	if err != nil {
		return nil, apierrors.NewInternalError(err)
	}
	return out, nil
}

// List returns the objects of k in namespace (every namespace when empty)
// that match sel (everything when nil), and the resourceVersion read at.
// Only the keys under k's NamePrefix for sel are read.
func (s *Store) List(ctx context.Context, k *Kind, namespace string, sel labels.Selector, opt ReadOptions) (*List, error) {
	list := &List{Items: []*Object{}}
	rv, err := s.scan(ctx, listPrefix(k, namespace, sel), sel, opt, func(o *Object) error {
		list.Items = append(list.Items, o.DeepCopy())
		return nil
	})
	if err != nil {
		return nil, err
	}
	list.ResourceVersion = rv
	return list, nil
}

// Scan calls fn with each object of k in namespace that sel matches, in
// one consistent read, as the store holds it: fn must neither change nor
// keep the object (List returns copies). A caller that reads a few
// fields of many objects (the hub's ten thousand Nodes when a task
// starts) is spared a copy of each. An error of fn ends the scan and is
// returned as it is.
func (s *Store) Scan(ctx context.Context, k *Kind, namespace string, sel labels.Selector, opt ReadOptions, fn func(*Object) error) error {
	_, err := s.scan(ctx, listPrefix(k, namespace, sel), sel, opt, fn)
	return err
}

// listPrefix is the key prefix of the objects a list of k reads.
func listPrefix(k *Kind, namespace string, sel labels.Selector) string {
	prefix := kindPrefix(k, namespace)
	if k.NamePrefix != nil && sel != nil && (namespace != "" || !k.Namespaced) {
		prefix += k.NamePrefix(sel)
	}
	return prefix
}

// scan calls fn with the stored objects under prefix that sel matches and
// returns the index the read was made at.
func (s *Store) scan(ctx context.Context, prefix string, sel labels.Selector, opt ReadOptions, fn func(*Object) error) (uint64, error) {
	if err := s.readBarrier(ctx, opt); err != nil {
		return 0, err
	}
	var rv uint64
	var fnErr error
	err := s.g.st.view(func(txn *badger.Txn, p []byte) error {
		var err error
		if rv, err = getUint(txn, key(p, nsMeta, metaApplied)); err != nil {
			return err
		}
		return s.g.st.readObjects(txn, p, prefix, !opt.Uncached, func(o *Object) error {
			if sel == nil || sel.Matches(labels.Set(o.Labels)) {
				fnErr = fn(o)
				return fnErr
			}
			return nil
		})
	})
	switch {
	case fnErr != nil:
		return 0, fnErr
	case err != nil:
		return 0, apierrors.NewInternalError(err)
	}
	return rv, nil
}

// Watch returns a Watcher for changes to k after resourceVersion from.
// A from older than the kept history fails on the first Next with 410 Gone.
func (s *Store) Watch(ctx context.Context, k *Kind, namespace string, sel labels.Selector, from uint64) (*Watcher, error) {
	if _, err := s.g.waitRaft(ctx); err != nil {
		return nil, err
	}
	return &Watcher{
		st: s.g.st, hub: s.g.hub, sub: s.g.hub.subscribe(),
		kind: k, prefix: kindPrefix(k, namespace), selector: sel, last: from,
	}, nil
}

// Create stores a new object. Its uid, resourceVersion, generation and
// timestamps are set by the store; a status given on create is dropped, as
// in Kubernetes: status is written through UpdateStatus.
func (s *Store) Create(ctx context.Context, k *Kind, obj *Object) (*Object, error) {
	return s.create(ctx, k, obj, false)
}

// CreateWithStatus stores a new object with the status it carries, in one
// write: for a controller that creates objects it owns with their first
// status (a task's queued results), which Create and UpdateStatus would
// make two writes each.
func (s *Store) CreateWithStatus(ctx context.Context, k *Kind, obj *Object) (*Object, error) {
	return s.create(ctx, k, obj, true)
}

func (s *Store) create(ctx context.Context, k *Kind, obj *Object, withStatus bool) (*Object, error) {
	obj = obj.DeepCopy()
	obj.APIVersion, obj.Kind = k.APIVersion(), k.Kind
	obj.UID = ""
	obj.ResourceVersion = ""
	if !withStatus {
		obj.Status = nil
	}
	obj.ManagedFields = nil
	if err := k.checkParts(obj); err != nil {
		return nil, err
	}
	if err := k.validateCreate(obj); err != nil {
		return nil, err
	}
	if err := s.sealSecrets(k, obj, nil); err != nil {
		return nil, err
	}
	obj.UID = uuidFor()
	return s.propose(ctx, k, &command{Op: opCreate, Key: objectKey(k, obj.Namespace, obj.Name), Name: obj.Name, Obj: obj})
}

// Update replaces an object's metadata and spec. A resourceVersion on obj is
// a precondition (409 Conflict when stale); without one the update is
// unconditional. Status is kept.
func (s *Store) Update(ctx context.Context, k *Kind, obj *Object) (*Object, error) {
	cur, err := s.Get(ctx, k, obj.Namespace, obj.Name, ReadOptions{})
	if err != nil {
		return nil, err
	}
	return s.update(ctx, k, obj, cur, obj.Revision())
}

// UpdateWithStatus replaces an object's metadata, spec and status in one
// write, for a controller that owns both (a result's phase label and its
// status). A resourceVersion on obj is a precondition.
func (s *Store) UpdateWithStatus(ctx context.Context, k *Kind, obj *Object) (*Object, error) {
	// The local replica is enough to validate against: the write itself
	// checks the resourceVersion on the leader.
	cur, err := s.Get(ctx, k, obj.Namespace, obj.Name, ReadOptions{Stale: true})
	if err != nil {
		return nil, err
	}
	return s.UpdateWithStatusFrom(ctx, k, obj, cur)
}

// UpdateWithStatusFrom is UpdateWithStatus for a caller that has just
// read cur and made obj from it (obj carries cur's resourceVersion, so the
// write fails with a Conflict if cur changed since): it spares the read.
func (s *Store) UpdateWithStatusFrom(ctx context.Context, k *Kind, obj, cur *Object) (*Object, error) {
	return s.updateCmd(ctx, k, obj, cur, obj.Revision(), true)
}

func (s *Store) update(ctx context.Context, k *Kind, obj, cur *Object, expectRV uint64) (*Object, error) {
	return s.updateCmd(ctx, k, obj, cur, expectRV, false)
}

func (s *Store) updateCmd(ctx context.Context, k *Kind, obj, cur *Object, expectRV uint64, withStatus bool) (*Object, error) {
	obj = obj.DeepCopy()
	obj.APIVersion, obj.Kind = k.APIVersion(), k.Kind
	if obj.UID == "" {
		obj.UID = cur.UID
	}
	if obj.CreationTimestamp.IsZero() {
		obj.CreationTimestamp = cur.CreationTimestamp
	}
	if obj.DeletionTimestamp == nil {
		obj.DeletionTimestamp = cur.DeletionTimestamp
	}
	obj.ManagedFields = nil
	obj.Generation = cur.Generation
	if obj.ResourceVersion == "" {
		// Unconditional (expectRV is 0): validate as an update of what
		// is stored, which requires a resourceVersion.
		obj.ResourceVersion = cur.ResourceVersion
	}
	if err := k.checkParts(obj); err != nil {
		return nil, err
	}
	if err := k.validateUpdate(obj, cur); err != nil {
		return nil, err
	}
	if err := s.sealSecrets(k, obj, cur); err != nil {
		return nil, err
	}
	return s.propose(ctx, k, &command{Op: opUpdate, Key: objectKey(k, obj.Namespace, obj.Name), Name: obj.Name, Obj: obj,
		ExpectRV: expectRV, ExpectUID: string(obj.UID), WithStatus: withStatus})
}

// UpdateStatus replaces an object's status, keeping metadata and spec. A
// resourceVersion on obj is a precondition.
func (s *Store) UpdateStatus(ctx context.Context, k *Kind, obj *Object) (*Object, error) {
	if err := k.checkParts(&Object{Status: obj.Status, statusFrom: obj.statusFrom}); err != nil {
		return nil, err
	}
	return s.propose(ctx, k, &command{Op: opStatus, Key: objectKey(k, obj.Namespace, obj.Name), Name: obj.Name,
		Obj: &Object{Status: obj.Status}, ExpectRV: obj.Revision(), ExpectUID: string(obj.UID)})
}

// Patch applies a JSON merge patch (RFC 7386) to an object, or to its
// status when status is true. A resourceVersion in the patch's metadata is
// a precondition; without one, a lost race with another writer is retried
// on the fresh object.
func (s *Store) Patch(ctx context.Context, k *Kind, namespace, name string, patch []byte, status bool) (*Object, error) {
	var pre struct {
		Metadata struct {
			ResourceVersion string `json:"resourceVersion"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(patch, &pre); err != nil {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("patch is not a JSON object: %v", err))
	}
	for attempt := 0; ; attempt++ {
		cur, err := s.Get(ctx, k, namespace, name, ReadOptions{Stale: attempt > 0})
		if err != nil {
			return nil, err
		}
		curJSON, err := json.Marshal(cur)
		if err != nil {
			return nil, apierrors.NewInternalError(err)
		}
		merged, err := jsonpatch.MergePatch(curJSON, patch)
		if err != nil {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("apply merge patch: %v", err))
		}
		next, err := k.Decode(merged)
		if err != nil {
			return nil, err
		}
		if next.Name != cur.Name || next.Namespace != cur.Namespace {
			return nil, apierrors.NewBadRequest("a patch cannot change metadata.name or metadata.namespace")
		}
		expect := cur.Revision()
		if pre.Metadata.ResourceVersion != "" {
			expect = next.Revision()
		}
		var out *Object
		if status {
			next.ResourceVersion = formatRV(expect)
			out, err = s.UpdateStatus(ctx, k, next)
		} else {
			out, err = s.update(ctx, k, next, cur, expect)
		}
		if apierrors.IsConflict(err) && pre.Metadata.ResourceVersion == "" && attempt < patchRetries {
			continue
		}
		return out, err
	}
}

// Delete deletes an object. While it has finalizers it only gains a
// deletionTimestamp (and stays, returned with it); the owner removes its
// finalizer and then the object goes. expectRV and expectUID, when set, are
// preconditions.
func (s *Store) Delete(ctx context.Context, k *Kind, namespace, name string, expectRV uint64, expectUID string) (*Object, error) {
	return s.propose(ctx, k, &command{Op: opDelete, Key: objectKey(k, namespace, name), Name: name, ExpectRV: expectRV, ExpectUID: expectUID})
}

// propose replicates c through Raft and returns what the FSM made of it.
func (s *Store) propose(ctx context.Context, k *Kind, c *command) (*Object, error) {
	r, err := s.leader(ctx)
	if err != nil {
		return nil, err
	}
	c.Group, c.Resource = k.Group, k.Plural
	c.Now = time.Now().UTC().Truncate(time.Second)
	data, err := encodeCommand(c)
	if err != nil {
		return nil, apierrors.NewInternalError(err)
	}
	if len(data) > maxCommandBytes {
		return nil, apierrors.NewRequestEntityTooLargeError(fmt.Sprintf("object is %d bytes encoded; the limit is %d", len(data), maxCommandBytes))
	}
	start := time.Now()
	forget := s.g.fsm.remember(data, c)
	f := r.Apply(data, s.g.cfg.ApplyTimeout)
	err = f.Error()
	forget()
	if err != nil {
		return nil, s.raftError(r, err)
	}
	if s.observeApply != nil {
		s.observeApply(time.Since(start))
	}
	res, ok := f.Response().(applyResult)
	if !ok {
		return nil, apierrors.NewInternalError(fmt.Errorf("unexpected apply response %T", f.Response()))
	}
	// The FSM hands the same object to watchers: the caller gets its own.
	return res.obj.DeepCopy(), res.err
}

// maxCommandBytes bounds one replicated command; the API's 1 MiB body limit
// keeps requests well inside it.
const maxCommandBytes = 3 << 20

// leader returns Raft when this member leads, else a NotLeaderError.
func (s *Store) leader(ctx context.Context) (*raft.Raft, error) {
	r, err := s.g.waitRaft(ctx)
	if err != nil {
		return nil, err
	}
	if r.State() != raft.Leader {
		addr, id := r.LeaderWithID()
		return nil, &NotLeaderError{Leader: string(addr), LeaderID: string(id)}
	}
	return r, nil
}

// raftError maps Raft's errors to what a client can act on.
func (s *Store) raftError(r *raft.Raft, err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		addr, id := r.LeaderWithID()
		return &NotLeaderError{Leader: string(addr), LeaderID: string(id)}
	case errors.Is(err, raft.ErrLeadershipLost):
		return apierrors.NewServiceUnavailable("leadership was lost during the write: it may or may not have been applied; read the object and retry")
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return apierrors.NewServerTimeout(schema.GroupResource{}, "write", 1)
	case errors.Is(err, raft.ErrRaftShutdown):
		return apierrors.NewServiceUnavailable("this node is shutting down; retry on another")
	}
	return apierrors.NewInternalError(err)
}

// readBarrier makes a default read linearizable: the leader confirms it
// still leads and waits until its state has applied everything committed
// before the read began.
func (s *Store) readBarrier(ctx context.Context, opt ReadOptions) error {
	if opt.Stale {
		_, err := s.g.waitRaft(ctx)
		return err
	}
	r, err := s.leader(ctx)
	if err != nil {
		return err
	}
	if term := r.CurrentTerm(); s.verifiedTerm.Load() != term {
		// A new leader's commit index may trail writes the previous leader
		// acknowledged until an entry of its own term commits.
		if err := r.Barrier(s.g.cfg.ApplyTimeout).Error(); err != nil {
			return s.raftError(r, err)
		}
		s.verifiedTerm.Store(term)
	}
	idx := r.CommitIndex()
	if err := r.VerifyLeader().Error(); err != nil {
		return s.raftError(r, err)
	}
	return s.g.fsm.waitApplied(ctx, s.g.lastFSMIndex(idx))
}

// lastFSMIndex returns the last index at or below i whose entry Raft hands
// the FSM. A BatchingFSM never sees no-op and barrier entries, so waiting
// for a commit index that ends in them (a new leader's first read, before
// any write in its term) would wait for the next write.
func (g *Group) lastFSMIndex(i uint64) uint64 {
	for applied := g.fsm.appliedIndex(); i > applied; i-- {
		var l raft.Log
		if err := g.logs.GetLog(i, &l); err != nil || l.Type == raft.LogCommand || l.Type == raft.LogConfiguration {
			return i
		}
	}
	return i
}

func uuidFor() types.UID { return types.UID(uuid.NewString()) }
