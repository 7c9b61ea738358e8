package consensus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/raft"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/watch"
)

func mustCreate(t testing.TB, s *Store, k *Kind, obj *Object) *Object {
	t.Helper()
	out, err := s.Create(t.Context(), k, obj)
	if err != nil {
		t.Fatalf("create %s/%s: %v", obj.Namespace, obj.Name, err)
	}
	return out
}

func mustGet(t testing.TB, s *Store, k *Kind, ns, name string) *Object {
	t.Helper()
	out, err := s.Get(t.Context(), k, ns, name, ReadOptions{})
	if err != nil {
		t.Fatalf("get %s/%s: %v", ns, name, err)
	}
	return out
}

func specOf(t testing.TB, obj *Object) widgetSpec {
	t.Helper()
	var s widgetSpec
	if err := obj.DecodeSpec(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

func statusOf(t testing.TB, obj *Object) widgetStatus {
	t.Helper()
	var s widgetStatus
	if err := obj.DecodeStatus(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// evString describes an event for comparisons: "ADDED ns/name@rv".
func evString(ev Event) string {
	return fmt.Sprintf("%s %s/%s@%s", ev.Type, ev.Object.Namespace, ev.Object.Name, ev.Object.ResourceVersion)
}

func objEv(typ watch.EventType, obj *Object) string {
	return fmt.Sprintf("%s %s/%s@%s", typ, obj.Namespace, obj.Name, obj.ResourceVersion)
}

func equalStrings(t testing.TB, what string, got, want []string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("%s:\ngot  %q\nwant %q", what, got, want)
	}
}

func TestStoreCreate(t *testing.T) {
	t.Parallel()
	c := newTestGroup(t)
	s, k := c.Store(0), c.Kind()

	in := newWidget("ns", "w1", map[string]string{"app": "a"}, widgetSpec{Size: 1})
	in.Status = json.RawMessage(`{"phase":"Ignored"}`)
	in.ResourceVersion = "12345"
	got := mustCreate(t, s, k, in)
	if got.UID == "" || got.Generation != 1 || got.CreationTimestamp.IsZero() || got.Revision() == 0 {
		t.Fatalf("create did not fill uid, generation, timestamp, resourceVersion: %+v", got.ObjectMeta)
	}
	if got.APIVersion != "test.outpost.dev/v1" || got.Kind != "Widget" {
		t.Fatalf("type meta = %s %s", got.APIVersion, got.Kind)
	}
	if len(got.Status) != 0 {
		t.Fatalf("create kept status %s; status is written through UpdateStatus", got.Status)
	}

	_, err := s.Create(t.Context(), k, newWidget("ns", "w1", nil, widgetSpec{Size: 2}))
	if !apierrors.IsAlreadyExists(err) {
		t.Fatalf("second create: %v, want AlreadyExists", err)
	}
	// The same name in another namespace is another object.
	mustCreate(t, s, k, newWidget("other", "w1", nil, widgetSpec{Size: 3}))
	if spec := specOf(t, mustGet(t, s, k, "ns", "w1")); spec.Size != 1 {
		t.Fatalf("failed create changed the object: size %d", spec.Size)
	}
}

func TestStoreInvalid(t *testing.T) {
	t.Parallel()
	c := newTestGroup(t)
	s, k := c.Store(0), c.Kind()
	tests := []struct {
		name string
		obj  *Object
		path string // in the message
	}{
		{"uppercase and underscore", newWidget("ns", "Bad_Name", nil, widgetSpec{}), "metadata.name"},
		{"empty name", newWidget("ns", "", nil, widgetSpec{}), "metadata.name"},
		{"no namespace", newWidget("", "ok", nil, widgetSpec{}), "metadata.namespace"},
		{"bad label", newWidget("ns", "ok", map[string]string{"a b": "c"}, widgetSpec{}), "metadata.labels"},
		{"generateName", func() *Object {
			o := newWidget("ns", "ok", nil, widgetSpec{})
			o.GenerateName = "ok-"
			return o
		}(), "metadata.generateName"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := s.Create(t.Context(), k, tc.obj)
			if !apierrors.IsInvalid(err) {
				t.Fatalf("create: %v, want Invalid", err)
			}
			if !strings.Contains(err.Error(), tc.path) {
				t.Fatalf("error %q does not name %s", err, tc.path)
			}
		})
	}
}

func TestStoreUnknownField(t *testing.T) {
	t.Parallel()
	c := newTestGroup(t)
	s, k := c.Store(0), c.Kind()
	mustCreate(t, s, k, newWidget("ns", "w", nil, widgetSpec{Size: 1}))

	tests := []struct {
		name string
		call func(context.Context) error
		path string
	}{
		{"decode unknown spec field", func(context.Context) error {
			_, err := k.Decode([]byte(`{"metadata":{"name":"x","namespace":"ns"},"spec":{"size":1,"bogus":true}}`))
			return err
		}, `"spec.bogus"`},
		{"decode spec field of the wrong type", func(context.Context) error {
			_, err := k.Decode([]byte(`{"metadata":{"name":"x","namespace":"ns"},"spec":{"size":"big"}}`))
			return err
		}, "spec.size"},
		{"decode unknown top-level field", func(context.Context) error {
			_, err := k.Decode([]byte(`{"metadata":{"name":"x","namespace":"ns"},"sepc":{}}`))
			return err
		}, `"sepc"`},
		{"patch unknown spec field", func(ctx context.Context) error {
			_, err := s.Patch(ctx, k, "ns", "w", []byte(`{"spec":{"bogus":1}}`), false)
			return err
		}, `"spec.bogus"`},
		{"patch unknown status field", func(ctx context.Context) error {
			_, err := s.Patch(ctx, k, "ns", "w", []byte(`{"status":{"bogus":1}}`), true)
			return err
		}, `"status.bogus"`},
		{"update status with unknown field", func(ctx context.Context) error {
			obj := newWidget("ns", "w", nil, widgetSpec{})
			obj.Status = json.RawMessage(`{"phase":"Up","bogus":1}`)
			_, err := s.UpdateStatus(ctx, k, obj)
			return err
		}, `"status.bogus"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := tc.call(t.Context())
			if !apierrors.IsBadRequest(err) {
				t.Fatalf("%v, want BadRequest", err)
			}
			if !strings.Contains(err.Error(), tc.path) {
				t.Fatalf("error %q does not name %s", err, tc.path)
			}
		})
	}
	if got := mustGet(t, s, k, "ns", "w"); got.Generation != 1 || len(got.Status) != 0 {
		t.Fatalf("a rejected write changed the object: %+v", got)
	}
}

func TestStoreGetList(t *testing.T) {
	t.Parallel()
	c := newTestGroup(t)
	s, k := c.Store(0), c.Kind()
	var last uint64
	for _, w := range []struct {
		ns, name string
		labels   map[string]string
	}{
		{"a", "web-1", map[string]string{"app": "web", "tier": "front"}},
		{"a", "web-2", map[string]string{"app": "web", "tier": "back"}},
		{"a", "db-1", map[string]string{"app": "db", "tier": "back"}},
		{"b", "web-3", map[string]string{"app": "web"}},
		{"b", "plain", nil},
	} {
		last = mustCreate(t, s, k, newWidget(w.ns, w.name, w.labels, widgetSpec{Size: 1})).Revision()
	}

	tests := []struct {
		name      string
		namespace string
		selector  string
		want      []string // ns/name in store order
	}{
		{"all namespaces", "", "", []string{"a/db-1", "a/web-1", "a/web-2", "b/plain", "b/web-3"}},
		{"one namespace", "a", "", []string{"a/db-1", "a/web-1", "a/web-2"}},
		{"equality", "", "app=web", []string{"a/web-1", "a/web-2", "b/web-3"}},
		{"equality in namespace", "b", "app=web", []string{"b/web-3"}},
		{"two terms", "", "app=web,tier=back", []string{"a/web-2"}},
		{"inequality", "", "app!=web", []string{"a/db-1", "b/plain"}},
		{"set", "", "tier in (front,back)", []string{"a/db-1", "a/web-1", "a/web-2"}},
		{"exists", "", "tier", []string{"a/db-1", "a/web-1", "a/web-2"}},
		{"not exists", "", "!tier", []string{"b/plain", "b/web-3"}},
		{"no match", "", "app=none", nil},
		{"empty namespace", "c", "", nil},
	}
	for _, tc := range tests {
		for _, stale := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/stale=%v", tc.name, stale), func(t *testing.T) {
				t.Parallel()
				got, rv := listNames(t, s, k, tc.namespace, tc.selector, stale)
				equalStrings(t, "list", got, tc.want)
				if rv < last {
					t.Fatalf("list resourceVersion %d is before the last write %d", rv, last)
				}
				sel, _ := labels.Parse(tc.selector)
				var scanned []string
				if err := s.Scan(t.Context(), k, tc.namespace, sel, ReadOptions{Stale: stale}, func(o *Object) error {
					scanned = append(scanned, o.Namespace+"/"+o.Name)
					return nil
				}); err != nil {
					t.Fatal(err)
				}
				equalStrings(t, "scan", scanned, tc.want)
			})
		}
	}

	t.Run("scan stopped", func(t *testing.T) {
		t.Parallel()
		stop := errors.New("enough")
		n := 0
		err := s.Scan(t.Context(), k, "", nil, ReadOptions{}, func(*Object) error { n++; return stop })
		if err != stop || n != 1 {
			t.Fatalf("Scan returned %v after %d objects; want fn's own error after the first", err, n)
		}
	})

	t.Run("get", func(t *testing.T) {
		t.Parallel()
		got := mustGet(t, s, k, "a", "web-2")
		if got.Labels["tier"] != "back" || specOf(t, got).Size != 1 {
			t.Fatalf("get = %+v", got)
		}
		if _, err := s.Get(t.Context(), k, "b", "web-2", ReadOptions{}); !apierrors.IsNotFound(err) {
			t.Fatalf("get in the wrong namespace: %v, want NotFound", err)
		}
	})
}

// listNames lists k in namespace through selector ("" for everything) and
// returns the objects as ns/name, and the resourceVersion read at.
func listNames(t *testing.T, s *Store, k *Kind, namespace, selector string, stale bool) ([]string, uint64) {
	t.Helper()
	sel, err := labels.Parse(selector)
	if err != nil {
		t.Fatal(err)
	}
	list, err := s.List(t.Context(), k, namespace, sel, ReadOptions{Stale: stale})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, o := range list.Items {
		got = append(got, o.Namespace+"/"+o.Name)
	}
	return got, list.ResourceVersion
}

// TestStoreListNamePrefix checks that a kind's NamePrefix narrows List to
// the names it implies: an object that breaks the kind's convention (here
// x.n6, labelled for owner t) is not read, and a kind without NamePrefix,
// or a namespaced list over every namespace, reads every object.
func TestStoreListNamePrefix(t *testing.T) {
	t.Parallel()
	c := newTestGroup(t)
	s, k := c.Store(0), c.Kind()
	owned := *k
	owned.NamePrefix = func(sel labels.Selector) string {
		if v, ok := sel.RequiresExactMatch("owner"); ok {
			return v + "."
		}
		return ""
	}
	for _, w := range []struct{ ns, name, owner string }{
		{"a", "t.n1", "t"}, {"a", "t.b.n2", "t.b"}, {"a", "tb.n3", "tb"}, {"a", "t", "none"},
		{"a", "u.n4", "u"}, {"a", "x.n6", "t"}, {"b", "t.n5", "t"},
	} {
		mustCreate(t, s, k, newWidget(w.ns, w.name, map[string]string{"owner": w.owner}, widgetSpec{Size: 1}))
	}
	tests := []struct {
		kind    *Kind
		ns, sel string
		want    []string
	}{
		{&owned, "a", "owner=t", []string{"a/t.n1"}},
		{k, "a", "owner=t", []string{"a/t.n1", "a/x.n6"}},
		{&owned, "a", "owner=t.b", []string{"a/t.b.n2"}},
		{&owned, "a", "owner in (t,u)", []string{"a/t.n1", "a/u.n4", "a/x.n6"}},
		{&owned, "b", "owner=t", []string{"b/t.n5"}},
		{&owned, "a", "owner=v", nil},
		{&owned, "", "owner=t", []string{"a/t.n1", "a/x.n6", "b/t.n5"}},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%v/%s/%s", tc.kind.NamePrefix != nil, tc.ns, tc.sel), func(t *testing.T) {
			got, _ := listNames(t, s, tc.kind, tc.ns, tc.sel, true)
			equalStrings(t, "list", got, tc.want)
		})
	}
}

func TestStoreUpdate(t *testing.T) {
	t.Parallel()
	c := newTestGroup(t)
	s, k := c.Store(0), c.Kind()

	tests := []struct {
		name    string
		change  func(obj *Object) // applied to a copy of the stored object
		noRV    bool              // clear the resourceVersion: unconditional
		staleRV bool              // send the resourceVersion before the last write
		wantErr func(error) bool
		wantGen int64
	}{
		{name: "labels only keep the generation", change: func(o *Object) { o.Labels = map[string]string{"x": "y"} }, wantGen: 1},
		{name: "annotations only keep the generation", change: func(o *Object) { o.Annotations = map[string]string{"note": "n"} }, wantGen: 1},
		{name: "same spec re-encoded keeps the generation", change: func(o *Object) { o.Spec = json.RawMessage(`{ "size" : 1 }`) }, wantGen: 1},
		{name: "spec change bumps the generation", change: func(o *Object) { o.Spec = json.RawMessage(`{"size":2}`) }, wantGen: 2},
		{name: "without resourceVersion", noRV: true, change: func(o *Object) { o.Spec = json.RawMessage(`{"size":3}`) }, wantGen: 2},
		{name: "stale resourceVersion", staleRV: true, change: func(o *Object) { o.Spec = json.RawMessage(`{"size":4}`) }, wantErr: apierrors.IsConflict},
		{name: "uid change", change: func(o *Object) { o.UID = "other" }, wantErr: apierrors.IsInvalid},
		// Changed metadata is validated again (metadata left as stored is not).
		{name: "invalid label", change: func(o *Object) { o.Labels = map[string]string{"bad key!": "v"} }, wantErr: apierrors.IsInvalid},
		{name: "invalid finalizer", change: func(o *Object) { o.Finalizers = []string{"not a finalizer!"} }, wantErr: apierrors.IsInvalid},
		{name: "owner without uid", change: func(o *Object) {
			o.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Widget", Name: "w"}}
		}, wantErr: apierrors.IsInvalid},
		{name: "grace period set", change: func(o *Object) { o.DeletionGracePeriodSeconds = new(int64(30)) }, wantErr: apierrors.IsInvalid},
		{name: "namespace change", change: func(o *Object) { o.Namespace = "elsewhere" }, wantErr: apierrors.IsNotFound},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			name := fmt.Sprintf("w%d", i)
			created := mustCreate(t, s, k, newWidget("ns", name, nil, widgetSpec{Size: 1}))
			// A status write moves the resourceVersion, so created's is stale.
			st := created.DeepCopy()
			st.Status = json.RawMessage(`{"phase":"Up"}`)
			cur, err := s.UpdateStatus(t.Context(), k, st)
			if err != nil {
				t.Fatal(err)
			}
			obj := cur.DeepCopy()
			if tc.staleRV {
				obj = created.DeepCopy()
			}
			tc.change(obj)
			if tc.noRV {
				obj.ResourceVersion = ""
			}
			got, err := s.Update(t.Context(), k, obj)
			if tc.wantErr != nil {
				if !tc.wantErr(err) {
					t.Fatalf("update: %v", err)
				}
				if now := mustGet(t, s, k, "ns", name); now.ResourceVersion != cur.ResourceVersion {
					t.Fatalf("failed update wrote: resourceVersion %s, was %s", now.ResourceVersion, cur.ResourceVersion)
				}
				return
			}
			if err != nil {
				t.Fatalf("update: %v", err)
			}
			if got.Generation != tc.wantGen {
				t.Errorf("generation = %d, want %d", got.Generation, tc.wantGen)
			}
			if got.Revision() <= cur.Revision() {
				t.Errorf("resourceVersion %s did not move past %s", got.ResourceVersion, cur.ResourceVersion)
			}
			if got.UID != created.UID || !got.CreationTimestamp.Equal(&created.CreationTimestamp) {
				t.Errorf("update changed uid or creationTimestamp")
			}
			stored := mustGet(t, s, k, "ns", name)
			if statusOf(t, stored).Phase != "Up" {
				t.Errorf("update dropped the status: %s", stored.Status)
			}
			if !jsonEqual(stored.Spec, obj.Spec) {
				t.Errorf("stored spec %s, want %s", stored.Spec, obj.Spec)
			}
		})
	}

	t.Run("missing object", func(t *testing.T) {
		t.Parallel()
		_, err := s.Update(t.Context(), k, newWidget("ns", "absent", nil, widgetSpec{}))
		if !apierrors.IsNotFound(err) {
			t.Fatalf("update: %v, want NotFound", err)
		}
	})
}

func TestStoreStatusSubresource(t *testing.T) {
	t.Parallel()
	c := newTestGroup(t)
	s, k := c.Store(0), c.Kind()
	created := mustCreate(t, s, k, newWidget("ns", "w", map[string]string{"a": "b"}, widgetSpec{Size: 1}))

	// UpdateStatus keeps metadata and spec whatever the object carries.
	in := created.DeepCopy()
	in.Spec = json.RawMessage(`{"size":99}`)
	in.Labels = map[string]string{"changed": "yes"}
	in.Status = json.RawMessage(`{"phase":"Running","ready":true}`)
	withStatus, err := s.UpdateStatus(t.Context(), k, in)
	if err != nil {
		t.Fatal(err)
	}
	if specOf(t, withStatus).Size != 1 || withStatus.Labels["a"] != "b" || withStatus.Generation != 1 {
		t.Fatalf("UpdateStatus changed metadata or spec: %+v %s", withStatus.ObjectMeta, withStatus.Spec)
	}
	if st := statusOf(t, withStatus); st.Phase != "Running" || !st.Ready {
		t.Fatalf("status = %+v", st)
	}

	// A stale resourceVersion on a status write conflicts.
	if _, err := s.UpdateStatus(t.Context(), k, in); !apierrors.IsConflict(err) {
		t.Fatalf("UpdateStatus with stale resourceVersion: %v, want Conflict", err)
	}

	// Update keeps the status whatever the object carries.
	up := withStatus.DeepCopy()
	up.Spec = json.RawMessage(`{"size":2}`)
	up.Status = json.RawMessage(`{"phase":"Overwritten"}`)
	updated, err := s.Update(t.Context(), k, up)
	if err != nil {
		t.Fatal(err)
	}
	if st := statusOf(t, updated); st.Phase != "Running" || !st.Ready {
		t.Fatalf("Update changed status: %s", updated.Status)
	}
	if specOf(t, updated).Size != 2 || updated.Generation != 2 {
		t.Fatalf("Update: spec %s generation %d", updated.Spec, updated.Generation)
	}
}

func TestStorePatch(t *testing.T) {
	t.Parallel()
	c := newTestGroup(t)
	s, k := c.Store(0), c.Kind()

	tests := []struct {
		name    string
		patch   func(cur *Object) string
		status  bool
		wantErr func(error) bool
		check   func(t *testing.T, before, after *Object)
	}{
		{name: "spec", patch: func(*Object) string { return `{"spec":{"color":"red"}}` },
			check: func(t *testing.T, before, after *Object) {
				if sp := specOf(t, after); sp.Size != 1 || sp.Color != "red" || after.Generation != 2 {
					t.Errorf("spec %+v generation %d", sp, after.Generation)
				}
				if statusOf(t, after).Phase != "Up" {
					t.Errorf("spec patch changed status: %s", after.Status)
				}
			}},
		{name: "labels add and remove", patch: func(*Object) string { return `{"metadata":{"labels":{"keep":null,"new":"x"}}}` },
			check: func(t *testing.T, before, after *Object) {
				if _, ok := after.Labels["keep"]; ok || after.Labels["new"] != "x" || after.Generation != 1 {
					t.Errorf("labels %v generation %d", after.Labels, after.Generation)
				}
			}},
		{name: "status", status: true, patch: func(*Object) string { return `{"status":{"ready":true}}` },
			check: func(t *testing.T, before, after *Object) {
				if st := statusOf(t, after); st.Phase != "Up" || !st.Ready {
					t.Errorf("status %+v", st)
				}
				if after.Generation != 1 || !jsonEqual(after.Spec, before.Spec) {
					t.Errorf("status patch changed spec or generation")
				}
			}},
		{name: "status patch ignores spec", status: true, patch: func(*Object) string { return `{"spec":{"size":7},"status":{"phase":"Down"}}` },
			check: func(t *testing.T, before, after *Object) {
				if specOf(t, after).Size != 1 || statusOf(t, after).Phase != "Down" {
					t.Errorf("spec %s status %s", after.Spec, after.Status)
				}
			}},
		{name: "spec patch ignores status", patch: func(*Object) string { return `{"spec":{"size":5},"status":{"phase":"Down"}}` },
			check: func(t *testing.T, before, after *Object) {
				if specOf(t, after).Size != 5 || statusOf(t, after).Phase != "Up" {
					t.Errorf("spec %s status %s", after.Spec, after.Status)
				}
			}},
		{name: "current resourceVersion", patch: func(cur *Object) string {
			return fmt.Sprintf(`{"metadata":{"resourceVersion":%q},"spec":{"size":6}}`, cur.ResourceVersion)
		}, check: func(t *testing.T, before, after *Object) {
			if specOf(t, after).Size != 6 {
				t.Errorf("spec %s", after.Spec)
			}
		}},
		{name: "stale resourceVersion", patch: func(cur *Object) string {
			return fmt.Sprintf(`{"metadata":{"resourceVersion":"%d"},"spec":{"size":6}}`, cur.Revision()-1)
		}, wantErr: apierrors.IsConflict},
		{name: "stale resourceVersion on status", status: true, patch: func(cur *Object) string {
			return fmt.Sprintf(`{"metadata":{"resourceVersion":"%d"},"status":{"ready":true}}`, cur.Revision()-1)
		}, wantErr: apierrors.IsConflict},
		{name: "rename", patch: func(*Object) string { return `{"metadata":{"name":"other"}}` }, wantErr: apierrors.IsBadRequest},
		{name: "not JSON", patch: func(*Object) string { return `{` }, wantErr: apierrors.IsBadRequest},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			name := fmt.Sprintf("w%d", i)
			created := mustCreate(t, s, k, newWidget("ns", name, map[string]string{"keep": "1"}, widgetSpec{Size: 1}))
			st := created.DeepCopy()
			st.Status = json.RawMessage(`{"phase":"Up"}`)
			before, err := s.UpdateStatus(t.Context(), k, st)
			if err != nil {
				t.Fatal(err)
			}
			after, err := s.Patch(t.Context(), k, "ns", name, []byte(tc.patch(before)), tc.status)
			if tc.wantErr != nil {
				if !tc.wantErr(err) {
					t.Fatalf("patch: %v", err)
				}
				if now := mustGet(t, s, k, "ns", name); now.ResourceVersion != before.ResourceVersion {
					t.Fatalf("failed patch wrote")
				}
				return
			}
			if err != nil {
				t.Fatalf("patch: %v", err)
			}
			if after.Revision() <= before.Revision() {
				t.Errorf("resourceVersion did not move")
			}
			tc.check(t, before, after)
			stored := mustGet(t, s, k, "ns", name)
			if stored.ResourceVersion != after.ResourceVersion {
				t.Errorf("stored resourceVersion %s, patch returned %s", stored.ResourceVersion, after.ResourceVersion)
			}
		})
	}

	t.Run("concurrent patches without resourceVersion all apply", func(t *testing.T) {
		t.Parallel()
		mustCreate(t, s, k, newWidget("ns", "shared", nil, widgetSpec{Size: 1}))
		const n = 8
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := range n {
			wg.Go(func() {
				_, err := s.Patch(t.Context(), k, "ns", "shared", fmt.Appendf(nil, `{"metadata":{"labels":{"p%d":"x"}}}`, i), false)
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		if got := mustGet(t, s, k, "ns", "shared"); len(got.Labels) != n {
			t.Fatalf("labels %v, want %d", got.Labels, n)
		}
	})
}

func TestStoreFinalizers(t *testing.T) {
	t.Parallel()
	c := newTestGroup(t)
	s, k := c.Store(0), c.Kind()

	obj := newWidget("ns", "fin", nil, widgetSpec{Size: 1})
	obj.Finalizers = []string{"test.outpost.dev/cleanup"}
	created := mustCreate(t, s, k, obj)
	w, err := s.Watch(t.Context(), k, "ns", nil, created.Revision())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()

	marked, err := s.Delete(t.Context(), k, "ns", "fin", 0, "")
	if err != nil {
		t.Fatal(err)
	}
	if marked.DeletionTimestamp == nil || marked.Generation != 2 {
		t.Fatalf("delete with finalizers: deletionTimestamp %v generation %d", marked.DeletionTimestamp, marked.Generation)
	}
	kept := mustGet(t, s, k, "ns", "fin")
	if kept.DeletionTimestamp == nil || kept.ResourceVersion != marked.ResourceVersion {
		t.Fatalf("object with finalizers not kept as marked: %+v", kept.ObjectMeta)
	}

	// Finalizers cannot be added once deletion started.
	add := kept.DeepCopy()
	add.Finalizers = append(add.Finalizers, "another")
	if _, err := s.Update(t.Context(), k, add); !apierrors.IsInvalid(err) {
		t.Fatalf("adding a finalizer during deletion: %v, want Invalid", err)
	}

	done := kept.DeepCopy()
	done.Finalizers = nil
	gone, err := s.Update(t.Context(), k, done)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(t.Context(), k, "ns", "fin", ReadOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("get after the last finalizer went: %v, want NotFound", err)
	}
	equalStrings(t, "events", nextEvents(t, w, 2), []string{
		objEv(watch.Modified, marked),
		objEv(watch.Deleted, gone),
	})

	// Without finalizers, delete removes at once; a second delete is 404.
	plain := mustCreate(t, s, k, newWidget("ns", "plain", nil, widgetSpec{}))
	if _, err := s.Delete(t.Context(), k, "ns", "plain", plain.Revision()-1, ""); !apierrors.IsConflict(err) {
		t.Fatalf("delete with stale resourceVersion: %v, want Conflict", err)
	}
	if _, err := s.Delete(t.Context(), k, "ns", "plain", 0, "wrong-uid"); !apierrors.IsConflict(err) {
		t.Fatalf("delete with wrong uid: %v, want Conflict", err)
	}
	deleted, err := s.Delete(t.Context(), k, "ns", "plain", plain.Revision(), string(plain.UID))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(t.Context(), k, "ns", "plain", ReadOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("get after delete: %v, want NotFound", err)
	}
	if _, err := s.Delete(t.Context(), k, "ns", "plain", 0, ""); !apierrors.IsNotFound(err) {
		t.Fatalf("second delete: %v, want NotFound", err)
	}
	equalStrings(t, "events", nextEvents(t, w, 2), []string{
		objEv(watch.Added, plain),
		objEv(watch.Deleted, deleted),
	})
}

// TestStoreResourceVersionIsRaftIndex checks that every write's
// resourceVersion is the Raft index of the entry that made it.
func TestStoreResourceVersionIsRaftIndex(t *testing.T) {
	t.Parallel()
	c := newTestGroup(t)
	s, k, g := c.Store(0), c.Kind(), c.Group(0)
	ctx := t.Context()

	obj := newWidget("ns", "rv", nil, widgetSpec{Size: 1})
	obj.Finalizers = []string{"f"}
	writes := []struct {
		op   op
		call func() (*Object, error)
	}{
		{opCreate, func() (*Object, error) { return s.Create(ctx, k, obj) }},
		{opUpdate, func() (*Object, error) {
			cur := mustGet(t, s, k, "ns", "rv")
			cur.Spec = json.RawMessage(`{"size":2}`)
			return s.Update(ctx, k, cur)
		}},
		{opStatus, func() (*Object, error) {
			return s.Patch(ctx, k, "ns", "rv", []byte(`{"status":{"phase":"Up"}}`), true)
		}},
		{opUpdate, func() (*Object, error) {
			return s.Patch(ctx, k, "ns", "rv", []byte(`{"spec":{"size":3}}`), false)
		}},
		{opDelete, func() (*Object, error) { return s.Delete(ctx, k, "ns", "rv", 0, "") }},
		{opUpdate, func() (*Object, error) {
			return s.Patch(ctx, k, "ns", "rv", []byte(`{"metadata":{"finalizers":null}}`), false)
		}},
	}
	var prev uint64
	for i, w := range writes {
		out, err := w.call()
		if err != nil {
			t.Fatalf("write %d (%s): %v", i, w.op, err)
		}
		rv := out.Revision()
		if rv <= prev {
			t.Fatalf("write %d: resourceVersion %d not after %d", i, rv, prev)
		}
		prev = rv
		var l raft.Log
		if err := g.logs.GetLog(rv, &l); err != nil {
			t.Fatalf("write %d: raft log at its resourceVersion %d: %v", i, rv, err)
		}
		if l.Type != raft.LogCommand {
			t.Fatalf("write %d: raft entry %d is %s, not a command", i, rv, l.Type)
		}
		cmd, err := decodeCommand(l.Data)
		if err != nil {
			t.Fatal(err)
		}
		if cmd.Op != w.op || cmd.Key != objectKey(k, "ns", "rv") {
			t.Fatalf("write %d: raft entry %d is %s %s, want %s of the object", i, rv, cmd.Op, cmd.Key, w.op)
		}
		if applied := g.AppliedIndex(); applied < rv {
			t.Fatalf("write %d acknowledged at %d before it was applied (applied %d)", i, rv, applied)
		}
	}
	list, err := s.List(ctx, k, "", nil, ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if list.ResourceVersion < prev || len(list.Items) != 0 {
		t.Fatalf("list at %d with %d items after the delete at %d", list.ResourceVersion, len(list.Items), prev)
	}
}

// createMany creates n widgets named m-<i> in ns from a few writers, so
// Raft batches them.
func createMany(t testing.TB, s *Store, k *Kind, ns string, n int) []*Object {
	t.Helper()
	const writers = 8
	out := make([]*Object, n)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := w; i < n; i += writers {
				o, err := s.Create(t.Context(), k, newWidget(ns, fmt.Sprintf("m-%04d", i), nil, widgetSpec{Size: i}))
				if err != nil {
					t.Errorf("create m-%04d: %v", i, err)
					return
				}
				out[i] = o
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return out
}

// TestStoreRestart stops the group and opens it again on its directory:
// every object, its resourceVersion and the watch history survive.
func TestStoreRestart(t *testing.T) {
	t.Parallel()
	c := newTestGroup(t)
	s, k := c.Store(0), c.Kind()
	createMany(t, s, k, "ns", 40)
	if _, err := s.Patch(t.Context(), k, "ns", "m-0001", []byte(`{"status":{"phase":"Up"}}`), true); err != nil {
		t.Fatal(err)
	}
	last, err := s.Delete(t.Context(), k, "ns", "m-0002", 0, "")
	if err != nil {
		t.Fatal(err)
	}
	before, err := s.List(t.Context(), k, "", nil, ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	historyBefore := watchAll(t, s, k, last.Revision())
	if len(historyBefore) != 42 {
		t.Fatalf("history holds %d events, want 42", len(historyBefore))
	}

	// A live watch ends with its member instead of waiting forever.
	w, err := s.Watch(t.Context(), k, "", nil, last.Revision())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	c.Kill(0)
	if _, err := w.Next(t.Context()); !errors.Is(err, ErrWatchDropped) {
		t.Fatalf("watch on a stopped member: %v, want ErrWatchDropped", err)
	}
	c.Restart(0)
	c.Leader()
	s = c.Store(0)

	for _, stale := range []bool{true, false} {
		after, err := s.List(t.Context(), k, "", nil, ReadOptions{Stale: stale})
		if err != nil {
			t.Fatal(err)
		}
		equalObjects(t, after.Items, before.Items)
	}
	for _, o := range before.Items {
		got := mustGet(t, s, k, o.Namespace, o.Name)
		if got.ResourceVersion != o.ResourceVersion || got.UID != o.UID {
			t.Fatalf("%s after restart: resourceVersion %s uid %s, was %s %s", o.Name, got.ResourceVersion, got.UID, o.ResourceVersion, o.UID)
		}
	}
	equalStrings(t, "watch history after restart", watchAll(t, s, k, last.Revision()), historyBefore)

	next := mustCreate(t, s, k, newWidget("ns", "after", nil, widgetSpec{}))
	if next.Revision() <= before.ResourceVersion {
		t.Fatalf("write after restart at %d, not after %d", next.Revision(), before.ResourceVersion)
	}
}

// equalObjects compares two lists of objects, field by field in JSON.
func equalObjects(t testing.TB, got, want []*Object) {
	t.Helper()
	g, err := json.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	w, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	if string(g) != string(w) {
		t.Fatalf("objects differ:\ngot  %s\nwant %s", g, w)
	}
}
