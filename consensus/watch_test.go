package consensus

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/watch"
)

// nextEvents reads n events from w. The deadline only turns a hang into a
// failure.
func nextEvents(t testing.TB, w *Watcher, n int) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitLong)
	defer cancel()
	out := make([]string, 0, n)
	for range n {
		ev, err := w.Next(ctx)
		if err != nil {
			t.Fatalf("after %d events %v: next: %v", len(out), out, err)
		}
		out = append(out, evString(ev))
	}
	return out
}

func TestStoreWatch(t *testing.T) {
	t.Parallel()
	c := newTestGroup(t)
	s, k := c.Store(0), c.Kind()
	ctx := t.Context()

	// History: every write's event, in order.
	var history []string
	rec := func(typ watch.EventType) func(*Object, error) *Object {
		return func(obj *Object, err error) *Object {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
			history = append(history, objEv(typ, obj))
			return obj
		}
	}
	a1 := rec(watch.Added)(s.Create(ctx, k, newWidget("w", "a1", map[string]string{"app": "x"}, widgetSpec{Size: 1})))
	start := a1.Revision()
	rec(watch.Added)(s.Create(ctx, k, newWidget("w", "a2", map[string]string{"app": "y"}, widgetSpec{Size: 1})))
	rec(watch.Added)(s.Create(ctx, k, newWidget("other", "b1", map[string]string{"app": "x"}, widgetSpec{Size: 1})))
	rec(watch.Modified)(s.Patch(ctx, k, "w", "a1", []byte(`{"spec":{"size":2}}`), false))
	rec(watch.Modified)(s.Patch(ctx, k, "w", "a2", []byte(`{"status":{"phase":"Up"}}`), true))
	rec(watch.Deleted)(s.Delete(ctx, k, "w", "a2", 0, ""))

	tests := []struct {
		name      string
		namespace string
		selector  string
		from      uint64
		want      []string
	}{
		{"everything from 0", "", "", 0, history},
		{"after the first write", "", "", start, history[1:]},
		{"one namespace", "w", "", start, []string{history[1], history[3], history[4], history[5]}},
		{"label selector", "", "app=x", start, []string{history[2], history[3]}},
		{"namespace and selector", "w", "app=y", 0, []string{history[1], history[4], history[5]}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var sel labels.Selector
			if tc.selector != "" {
				var err error
				if sel, err = labels.Parse(tc.selector); err != nil {
					t.Fatal(err)
				}
			}
			w, err := s.Watch(t.Context(), k, tc.namespace, sel, tc.from)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Stop()
			equalStrings(t, "replayed events", nextEvents(t, w, len(tc.want)), tc.want)
		})
	}

	t.Run("history then live", func(t *testing.T) {
		t.Parallel()
		var want []string
		for i := range 3 {
			o := mustCreate(t, s, k, newWidget("live", fmt.Sprintf("h%d", i), nil, widgetSpec{}))
			want = append(want, objEv(watch.Added, o))
		}
		w, err := s.Watch(t.Context(), k, "live", nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Stop()
		equalStrings(t, "history", nextEvents(t, w, 3), want)
		// Live: written while the watcher waits.
		var live []string
		var wg sync.WaitGroup
		wg.Go(func() {
			for i := range 5 {
				o, err := s.Create(t.Context(), k, newWidget("live", fmt.Sprintf("l%d", i), nil, widgetSpec{}))
				if err != nil {
					t.Error(err)
					return
				}
				live = append(live, objEv(watch.Added, o))
			}
		})
		got := nextEvents(t, w, 5)
		wg.Wait()
		equalStrings(t, "live", got, live)
	})

	t.Run("ends with the context", func(t *testing.T) {
		t.Parallel()
		w, err := s.Watch(t.Context(), k, "quiet", nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Stop()
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if _, err := w.Next(ctx); err != context.Canceled {
			t.Fatalf("next on a cancelled context: %v", err)
		}
	})
}

// TestStoreWatchExpired writes past one history trim (compactEvery) with a
// short HistoryLimit: a watch from before the kept history is 410 Gone.
func TestStoreWatchExpired(t *testing.T) {
	t.Parallel()
	const limit = 16
	c := newTestGroup(t, func(cfg *Config) { cfg.HistoryLimit = limit })
	s, k, g := c.Store(0), c.Kind(), c.Group(0)

	first := mustCreate(t, s, k, newWidget("ns", "first", nil, widgetSpec{}))
	createMany(t, s, k, "ns", compactEvery+limit+8)
	eventually(t, waitLong, func() bool { return g.AppliedIndex() > compactEvery+limit })

	w, err := s.Watch(t.Context(), k, "", nil, first.Revision())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	_, err = w.Next(t.Context())
	if !apierrors.IsResourceExpired(err) && !apierrors.IsGone(err) {
		t.Fatalf("watch from %d after the history was trimmed: %v, want 410 Gone", first.Revision(), err)
	}

	// A watch inside the kept history replays it.
	list, err := s.List(t.Context(), k, "", nil, ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	from := list.ResourceVersion - limit/2
	w2, err := s.Watch(t.Context(), k, "", nil, from)
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Stop()
	ev, err := w2.Next(t.Context())
	if err != nil {
		t.Fatalf("watch from %d, inside the kept history: %v", from, err)
	}
	if ev.Index() <= from {
		t.Fatalf("event %d not after %d", ev.Index(), from)
	}
}

// watchAll returns every event from resourceVersion 0 up to upto.
func watchAll(t testing.TB, s *Store, k *Kind, upto uint64) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitLong)
	defer cancel()
	w, err := s.Watch(ctx, k, "", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	var out []string
	for {
		ev, err := w.Next(ctx)
		if err != nil {
			t.Fatalf("after %d events: %v", len(out), err)
		}
		out = append(out, evString(ev))
		if ev.Index() >= upto {
			return out
		}
	}
}

// TestEncodeEventIsMarshal: the FSM's hand-made event encoding is what
// json.Marshal makes of the Event, so history reads decode it the same.
func TestEncodeEventIsMarshal(t *testing.T) {
	t.Parallel()
	obj := &Object{ObjectMeta: metav1.ObjectMeta{Name: "a", ResourceVersion: "7", Labels: map[string]string{"k": "v<&>"}},
		Spec: json.RawMessage(`{"x":"\u00e9\"q"}`)}
	for _, tc := range []struct {
		t   watch.EventType
		key string
	}{{watch.Added, "g/K//a"}, {watch.Modified, "g/K/ns/a\"<b>"}, {watch.Deleted, ""}} {
		b, err := json.Marshal(obj)
		if err != nil {
			t.Fatal(err)
		}
		want, err := json.Marshal(Event{Type: tc.t, Object: obj, Key: tc.key})
		if err != nil {
			t.Fatal(err)
		}
		if got := encodeEvent(tc.t, b, tc.key); string(got) != string(want) {
			t.Errorf("encodeEvent:\n got %s\nwant %s", got, want)
		}
	}
}
