package consensus

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/watch"
)

// retryable reports whether a write or read may be tried again on whichever
// member leads: no leader, leadership moved or lost mid-write, the member
// stopping under the call.
func retryable(err error) bool {
	return IsNotLeader(err) || apierrors.IsServiceUnavailable(err) || apierrors.IsServerTimeout(err) ||
		apierrors.IsTimeout(err) || apierrors.IsInternalError(err)
}

// pause waits a moment between retries; false when ctx ended.
func pause(ctx context.Context) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(5 * time.Millisecond):
		return true
	}
}

// create creates obj on whichever member leads, through elections. A write
// whose outcome was unknown (leadership lost under it) and that then finds
// the object existing was applied after all; its object is read back.
func (c *testCluster) create(ctx context.Context, obj *Object) (*Object, error) {
	unsure := false
	for {
		if i := c.leaderNow(); i >= 0 {
			out, err := c.Store(i).Create(ctx, c.kind, obj)
			switch {
			case err == nil:
				return out, nil
			case apierrors.IsAlreadyExists(err) && unsure:
				return c.get(ctx, obj.Namespace, obj.Name)
			case !retryable(err):
				return nil, err
			}
			c.retries.Add(1)
			unsure = true
		}
		if !pause(ctx) {
			return nil, ctx.Err()
		}
	}
}

// get is a linearizable Get on whichever member leads.
func (c *testCluster) get(ctx context.Context, ns, name string) (*Object, error) {
	for {
		if i := c.leaderNow(); i >= 0 {
			out, err := c.Store(i).Get(ctx, c.kind, ns, name, ReadOptions{})
			if err == nil || !retryable(err) {
				return out, err
			}
		}
		if !pause(ctx) {
			return nil, ctx.Err()
		}
	}
}

// list is a linearizable List on whichever member leads.
func (c *testCluster) list(ctx context.Context, ns string) (*List, error) {
	for {
		if i := c.leaderNow(); i >= 0 {
			out, err := c.Store(i).List(ctx, c.kind, ns, nil, ReadOptions{})
			if err == nil || !retryable(err) {
				return out, err
			}
		}
		if !pause(ctx) {
			return nil, ctx.Err()
		}
	}
}

// writer creates widgets ns/<prefix>-<i> one after another on the leader
// and records each acknowledged write.
type writer struct {
	mu    sync.Mutex
	acked []*Object
	err   error
	done  chan struct{}
}

func startWriter(ctx context.Context, c *testCluster, ns, prefix string, n int) *writer {
	w := &writer{done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for i := range n {
			obj, err := c.create(ctx, newWidget(ns, fmt.Sprintf("%s-%04d", prefix, i), nil, widgetSpec{Size: i}))
			w.mu.Lock()
			if err != nil {
				w.err = fmt.Errorf("write %d: %w", i, err)
				w.mu.Unlock()
				return
			}
			w.acked = append(w.acked, obj)
			w.mu.Unlock()
		}
	}()
	return w
}

func (w *writer) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acked)
}

// wait waits for the writer to finish and returns what it acknowledged.
func (w *writer) wait(t testing.TB) []*Object {
	t.Helper()
	select {
	case <-w.done:
	case <-time.After(waitLong):
		t.Fatalf("writer still running after %v, %d writes acknowledged", waitLong, w.count())
	}
	if w.err != nil {
		t.Fatal(w.err)
	}
	return w.acked
}

// createAll creates n widgets through elections and returns them.
func createAll(t testing.TB, c *testCluster, ns, prefix string, n int) []*Object {
	t.Helper()
	return startWriter(t.Context(), c, ns, prefix, n).wait(t)
}

// resumingWatch collects the events of a watch from a resourceVersion. When
// Next fails it opens a new watch, wherever pick says, from the last
// resourceVersion it saw.
type resumingWatch struct {
	mu     sync.Mutex
	events []Event
	ends   []error // errors that ended a watch
	cancel context.CancelFunc
	done   chan struct{}
}

func startWatch(c *testCluster, ns string, from uint64, pick func() *Store) *resumingWatch {
	ctx, cancel := context.WithCancel(context.Background())
	rw := &resumingWatch{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(rw.done)
		last := from
		for {
			s := pick()
			if s == nil {
				if !pause(ctx) {
					return
				}
				continue
			}
			w, err := s.Watch(ctx, c.kind, ns, nil, last)
			for err == nil {
				var ev Event
				if ev, err = w.Next(ctx); err == nil {
					rw.mu.Lock()
					rw.events = append(rw.events, ev)
					rw.mu.Unlock()
					last = ev.Index()
				}
			}
			if w != nil {
				w.Stop()
			}
			if ctx.Err() != nil {
				return
			}
			rw.mu.Lock()
			rw.ends = append(rw.ends, err)
			rw.mu.Unlock()
			if !pause(ctx) {
				return
			}
		}
	}()
	return rw
}

func (rw *resumingWatch) count() int {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	return len(rw.events)
}

func (rw *resumingWatch) endErrors() []error {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	return slices.Clone(rw.ends)
}

// stop ends the watch and returns its events.
func (rw *resumingWatch) stop() []Event {
	rw.cancel()
	<-rw.done
	return rw.events
}

// sawExactly checks that events are the ADDED events of want, once each, in
// strictly increasing resourceVersion.
func sawExactly(t testing.TB, what string, events []Event, want []*Object) {
	t.Helper()
	var prev uint64
	got := make([]string, 0, len(events))
	for i, ev := range events {
		if ev.Index() <= prev {
			t.Errorf("%s: event %d at %d is not after %d", what, i, ev.Index(), prev)
		}
		prev = ev.Index()
		got = append(got, evString(ev))
	}
	wantS := make([]string, 0, len(want))
	for _, o := range want {
		wantS = append(wantS, objEv(watch.Added, o))
	}
	equalStrings(t, what, got, wantS)
}

// byRV sorts objects by resourceVersion.
func byRV(objs []*Object) []*Object {
	out := slices.Clone(objs)
	slices.SortFunc(out, func(a, b *Object) int { return cmp.Compare(a.Revision(), b.Revision()) })
	return out
}

// checkAcked checks that every acknowledged write is in the final list with
// the resourceVersion it was acknowledged with.
func checkAcked(t testing.TB, acked, final []*Object) {
	t.Helper()
	rv := map[string]string{}
	for _, o := range final {
		rv[o.Namespace+"/"+o.Name] = o.ResourceVersion
	}
	for _, o := range acked {
		if got, ok := rv[o.Namespace+"/"+o.Name]; !ok || got != o.ResourceVersion {
			t.Errorf("acknowledged %s/%s@%s, final list has %q", o.Namespace, o.Name, o.ResourceVersion, got)
		}
	}
}

// TestClusterLeaderFailover kills the leader: a new one is elected, every
// write acknowledged before the kill reads back from it unchanged, and
// writes go on.
func TestClusterLeaderFailover(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3)
	old := c.Leader()
	acked := createAll(t, c, "ns", "w", 200)

	c.Kill(old)
	leader := c.Leader()
	if leader == old {
		t.Fatalf("member %d still leads after it was killed", old)
	}
	ctx := t.Context()
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for j := i; j < len(acked); j += 4 {
				want := acked[j]
				got, err := c.get(ctx, want.Namespace, want.Name)
				if err != nil {
					t.Errorf("get %s after failover: %v", want.Name, err)
					return
				}
				if got.ResourceVersion != want.ResourceVersion || got.UID != want.UID {
					t.Errorf("%s after failover: resourceVersion %s uid %s, acknowledged %s %s",
						want.Name, got.ResourceVersion, got.UID, want.ResourceVersion, want.UID)
				}
			}
		})
	}
	wg.Wait()
	list, err := c.list(ctx, "ns")
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != len(acked) {
		t.Fatalf("list after failover has %d objects, want %d", len(list.Items), len(acked))
	}

	after := createAll(t, c, "ns", "after", 10)
	if after[0].Revision() <= byRV(acked)[len(acked)-1].Revision() {
		t.Fatalf("write after failover at %s, not after the last before it", after[0].ResourceVersion)
	}

	// The old leader comes back as a follower and catches up.
	c.Restart(old)
	final, err := c.list(ctx, "ns")
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, waitLong, func() bool {
		l, err := c.Store(old).List(ctx, c.kind, "ns", nil, ReadOptions{Stale: true})
		return err == nil && len(l.Items) == len(final.Items) && l.ResourceVersion >= final.ResourceVersion
	}, "restarted member %d did not catch up", old)
}

// TestClusterSnapshotCatchUp kills a follower, writes and compacts the log
// past where the follower stopped, and restarts it: the follower can only
// catch up by installing the leader's snapshot.
func TestClusterSnapshotCatchUp(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3, func(cfg *Config) {
		cfg.SnapshotThreshold = 16
		cfg.TrailingLogs = 8
	})
	leader := c.Leader()
	f := c.Follower(leader)
	ctx := t.Context()
	first := createAll(t, c, "ns", "before", 20)
	eventually(t, waitLong, func() bool { return c.Group(f).AppliedIndex() >= byRV(first)[len(first)-1].Revision() })
	stoppedAt := c.Group(f).Raft().LastIndex()
	if snaps, err := c.Group(f).snaps.List(); err != nil || len(snaps) != 0 {
		t.Fatalf("follower has snapshots %v (%v) before the test made any", snaps, err)
	}

	c.Kill(f)
	createAll(t, c, "ns", "while-down", 100)
	leader = c.Leader()
	lg := c.Group(leader)
	if err := lg.Snapshot(ctx); err != nil {
		t.Fatal(err)
	}
	snaps, err := lg.snaps.List()
	if err != nil || len(snaps) == 0 {
		t.Fatalf("leader snapshots: %v %v", snaps, err)
	}
	snapIndex := snaps[0].Index
	firstLog, err := lg.logs.FirstIndex()
	if err != nil {
		t.Fatal(err)
	}
	if firstLog <= stoppedAt+1 {
		t.Fatalf("leader's log starts at %d; the follower stopped at %d and could catch up from the log", firstLog, stoppedAt)
	}

	c.Restart(f)
	want, err := c.list(ctx, "ns")
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, waitLong, func() bool {
		got, err := c.Store(f).List(ctx, c.kind, "ns", nil, ReadOptions{Stale: true})
		return err == nil && len(got.Items) == len(want.Items) && got.ResourceVersion >= want.ResourceVersion
	}, "restarted follower did not catch up")
	got, err := c.Store(f).List(ctx, c.kind, "ns", nil, ReadOptions{Stale: true})
	if err != nil {
		t.Fatal(err)
	}
	equalObjects(t, got.Items, want.Items)

	// How it caught up: the leader's snapshot is in the follower's snapshot
	// store (it takes none of its own: SnapshotInterval is the default two
	// minutes), its FSM restored it, and its log holds nothing from before.
	fg := c.Group(f)
	fsnaps, err := fg.snaps.List()
	if err != nil || len(fsnaps) == 0 || fsnaps[0].Index < snapIndex {
		t.Fatalf("follower snapshots %v (%v), want the leader's at %d", fsnaps, err, snapIndex)
	}
	// The restored state is visible once its generation is live, a moment
	// before Restore finishes (it still drops the old generation) and logs.
	eventually(t, waitLong, func() bool { return c.Logs(f).Count("state restored from snapshot") > 0 },
		"follower's FSM never restored a snapshot")
	createAll(t, c, "ns", "after", 5)
	eventually(t, waitLong, func() bool {
		first, err := fg.logs.FirstIndex()
		return err == nil && first > stoppedAt
	}, "follower log still holds entries from before it stopped")
}

// TestClusterWatchAcrossLeaderChange holds a watch on a follower while the
// leader goes mid-stream, by a graceful stop (hand-off) or cut off first
// (writes in flight lose leadership): the watch sees every applied write
// exactly once, in order.
func TestClusterWatchAcrossLeaderChange(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		kill func(c *testCluster, i int)
	}{
		{"stop", (*testCluster).Kill},
		{"crash", (*testCluster).Crash},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := newCluster(t, 3)
			leader := c.Leader()
			f := c.Follower(leader)
			const n = 150

			first := true
			rw := startWatch(c, "ns", 0, func() *Store {
				if first {
					first = false
					return c.Store(f)
				}
				// Resume on any live member.
				for i := range c.N() {
					if c.Alive(i) {
						return c.Store(i)
					}
				}
				return nil
			})
			defer rw.stop()

			w := startWriter(t.Context(), c, "ns", "w", n)
			eventually(t, waitLong, func() bool { return w.count() >= n/3 }, "writes stalled")
			killed := c.leaderNow()
			if killed < 0 {
				killed = c.Leader()
			}
			tc.kill(c, killed)
			acked := w.wait(t)

			// Writes that failed with leadership lost may or may not have
			// been applied; the writer retried each until it was
			// acknowledged or found applied, so the final list holds every
			// name once, at the index that applied it.
			final, err := c.list(t.Context(), "ns")
			if err != nil {
				t.Fatal(err)
			}
			if len(final.Items) != n {
				t.Fatalf("final list has %d objects, want %d", len(final.Items), n)
			}
			checkAcked(t, acked, final.Items)
			eventually(t, waitLong, func() bool { return rw.count() >= len(final.Items) },
				"watch saw %d of %d events", rw.count(), len(final.Items))
			sawExactly(t, "watch across the leader change", rw.stop(), byRV(final.Items))
			t.Logf("leader %d went after %d writes; watch on %d; %d write attempts retried; watch ended %d times",
				killed, n/3, f, c.retries.Load(), len(rw.endErrors()))
			if killed != f {
				// The watched member never stopped: the watch was never
				// broken.
				if ends := rw.endErrors(); len(ends) > 0 {
					t.Errorf("watch on a member that kept running ended: %v", ends)
				}
			}
		})
	}
}

// TestClusterWatchFollowerRestart restarts a follower under a stream of
// writes. A watch on another member goes on unbroken; a watch on the
// follower ends with it and, resumed there from its last resourceVersion
// after the restart, misses nothing.
func TestClusterWatchFollowerRestart(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3)
	leader := c.Leader()
	f := c.Follower(leader)
	other := c.Follower(leader, f)
	const n = 150

	onOther := startWatch(c, "ns", 0, func() *Store { return c.Store(other) })
	defer onOther.stop()
	onF := startWatch(c, "ns", 0, func() *Store {
		if !c.Alive(f) {
			return nil
		}
		return c.Store(f)
	})
	defer onF.stop()

	w := startWriter(t.Context(), c, "ns", "w", n)
	eventually(t, waitLong, func() bool { return w.count() >= n/3 && onF.count() > 0 }, "writes stalled")
	c.Kill(f)
	eventually(t, waitLong, func() bool { return len(onF.endErrors()) > 0 }, "watch on the stopped follower did not end")
	if err := onF.endErrors()[0]; !errors.Is(err, ErrWatchDropped) {
		t.Errorf("watch on the stopped follower ended with %v, want ErrWatchDropped", err)
	}
	seenBefore := onF.count()
	eventually(t, waitLong, func() bool { return w.count() >= 2*n/3 }, "writes stalled")
	c.Restart(f)
	acked := w.wait(t)

	final, err := c.list(t.Context(), "ns")
	if err != nil {
		t.Fatal(err)
	}
	if len(final.Items) != n {
		t.Fatalf("final list has %d objects, want %d", len(final.Items), n)
	}
	checkAcked(t, acked, final.Items)
	want := byRV(final.Items)
	for _, tc := range []struct {
		name string
		rw   *resumingWatch
	}{
		{"watch on " + strconv.Itoa(other), onOther},
		{"watch resumed on the restarted " + strconv.Itoa(f), onF},
	} {
		eventually(t, waitLong, func() bool { return tc.rw.count() >= len(want) },
			"%s saw %d of %d events", tc.name, tc.rw.count(), len(want))
		sawExactly(t, tc.name, tc.rw.stop(), want)
	}
	if ends := onOther.endErrors(); len(ends) > 0 {
		t.Errorf("watch on a member that kept running ended: %v", ends)
	}
	if seenBefore == 0 || seenBefore >= n {
		t.Errorf("watch on the follower saw %d events before it stopped; the restart did not fall mid-stream", seenBefore)
	}
}

// TestClusterLeaderAppliesWhatFollowersDecode: the leader applies its own
// commands as it built them (not decoded from the log), its followers
// decode them; every member must end with the same objects, written with
// spacing, escapes and a status the encoding changes.
func TestClusterLeaderAppliesWhatFollowersDecode(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3)
	leader := c.Leader()
	s, k := c.Store(leader), c.kind
	obj := newWidget("ns", "w", map[string]string{"team": "a"}, widgetSpec{})
	obj.Spec = json.RawMessage(`{ "size" :  7 }`)
	created := mustCreate(t, s, k, obj)
	st := created.DeepCopy()
	st.Status = json.RawMessage(`{ "phase": "Up <&> \u00e9" }`)
	cur, err := s.UpdateStatus(t.Context(), k, st)
	if err != nil {
		t.Fatal(err)
	}
	next := cur.DeepCopy()
	next.Labels["team"] = "b"
	next.Spec = json.RawMessage(`{"size":8}`)
	if _, err := s.Update(t.Context(), k, next); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, s, k, newWidget("ns", "gone", nil, widgetSpec{Size: 1}))
	if _, err := s.Delete(t.Context(), k, "ns", "gone", 0, ""); err != nil {
		t.Fatal(err)
	}
	dump := func(i int) string {
		l, err := c.Store(i).List(t.Context(), k, "ns", nil, ReadOptions{Stale: true})
		if err != nil {
			return err.Error()
		}
		b, err := json.Marshal(l.Items)
		if err != nil {
			return err.Error()
		}
		return string(b)
	}
	want := dump(leader)
	if !strings.Contains(want, `"size":8`) || strings.Contains(want, `"gone"`) {
		t.Fatalf("the leader holds %s, want w at size 8 and no gone", want)
	}
	for i := range c.N() {
		eventually(t, waitLong, func() bool { return dump(i) == want }, "member %d holds %s, the leader %s", i, dump(i), want)
	}
}
