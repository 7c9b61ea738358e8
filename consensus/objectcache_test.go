package consensus

import (
	"testing"
)

// TestCachedReadsAreCopies checks the decoded-object cache behind Get and
// List: a caller that changes what it read does not change what the next
// reader gets, and a write is seen at once by both.
func TestCachedReadsAreCopies(t *testing.T) {
	t.Parallel()
	c := newTestGroup(t)
	s, k := c.Store(0), c.Kind()
	ctx := t.Context()
	cur := mustCreate(t, s, k, newWidget("ns", "w", map[string]string{"a": "1"}, widgetSpec{Size: 1}))

	for range 2 { // the second round reads from the cache
		got, err := s.Get(ctx, k, "ns", "w", ReadOptions{Stale: true})
		if err != nil {
			t.Fatal(err)
		}
		if got.Labels["a"] != "1" {
			t.Fatalf("Get: labels %v, want a=1", got.Labels)
		}
		got.Labels["a"] = "changed by a reader"
		list, err := s.List(ctx, k, "", nil, ReadOptions{Stale: true})
		if err != nil || len(list.Items) != 1 {
			t.Fatalf("List: %v, %v", list, err)
		}
		if list.Items[0].Labels["a"] != "1" {
			t.Fatalf("List: labels %v, want a=1", list.Items[0].Labels)
		}
		list.Items[0].Labels["a"] = "changed by a lister"
	}

	next := cur.DeepCopy()
	next.Labels["a"] = "2"
	if _, err := s.Update(ctx, k, next); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, k, "ns", "w", ReadOptions{Stale: true})
	if err != nil || got.Labels["a"] != "2" {
		t.Fatalf("Get after the update: %v, %v; want a=2", got, err)
	}
	list, err := s.List(ctx, k, "", nil, ReadOptions{Stale: true})
	if err != nil || len(list.Items) != 1 || list.Items[0].Labels["a"] != "2" {
		t.Fatalf("List after the update: %v, %v; want a=2", list, err)
	}
}

// TestUncachedScanKeepsTheCache checks ReadOptions.Uncached: a scan reads
// every object right but adds none to the cache, and a cached read after
// it still fills the cache.
func TestUncachedScanKeepsTheCache(t *testing.T) {
	t.Parallel()
	c := newTestGroup(t)
	s, k := c.Store(0), c.Kind()
	ctx := t.Context()
	for _, name := range []string{"a", "b", "c"} {
		mustCreate(t, s, k, newWidget("ns", name, map[string]string{"name": name}, widgetSpec{Size: 1}))
	}
	cached := func() int {
		cache := &s.g.st.cache
		cache.mu.RLock()
		defer cache.mu.RUnlock()
		return len(cache.m)
	}
	before := cached()
	var seen []string
	err := s.Scan(ctx, k, "", nil, ReadOptions{Stale: true, Uncached: true}, func(o *Object) error {
		if o.Labels["name"] != o.Name {
			t.Errorf("scan: %s has labels %v", o.Name, o.Labels)
		}
		seen = append(seen, o.Name)
		return nil
	})
	if err != nil || len(seen) != 3 {
		t.Fatalf("uncached scan: %v, %v; want a, b, c", seen, err)
	}
	if n := cached(); n != before {
		t.Fatalf("uncached scan: the cache holds %d objects, held %d", n, before)
	}
	if _, err := s.List(ctx, k, "", nil, ReadOptions{Stale: true}); err != nil {
		t.Fatal(err)
	}
	if n := cached(); n != before+3 {
		t.Fatalf("cached list: the cache holds %d objects, want %d", n, before+3)
	}
}
