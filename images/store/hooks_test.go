package store

import (
	"slices"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
)

// changes records what Config.OnChange reports.
type changes struct {
	mu  sync.Mutex
	got []string
}

func (c *changes) record(d digest.Digest, held bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	sign := "-"
	if held {
		sign = "+"
	}
	c.got = append(c.got, sign+d.Encoded()[:8])
}

func (c *changes) take() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.got
	c.got = nil
	return out
}

func short(sign string, d digest.Digest) string { return sign + d.Encoded()[:8] }

// TestOnChangeAndDigests checks that every way content comes and goes is
// reported, and that Digests lists blobs and manifests once each.
func TestOnChangeAndDigests(t *testing.T) {
	t.Parallel()
	var ch changes
	f := newFixture(t, func(c *Config) {
		c.Quota = 250
		c.OnChange = ch.record
	})
	a, b := randomBytes(t, 100), randomBytes(t, 100)
	da, db := f.put(a), f.put(b)
	if got, want := ch.take(), []string{short("+", da), short("+", db)}; !slices.Equal(got, want) {
		t.Fatalf("after two commits: %v, want %v", got, want)
	}
	md := f.image("", "team/app", "v1", da, db)
	if got, want := ch.take(), []string{short("+", md)}; !slices.Equal(got, want) {
		t.Fatalf("after a manifest put: %v, want %v", got, want)
	}
	got, err := f.Digests()
	if err != nil {
		t.Fatal(err)
	}
	want := []digest.Digest{da, db, md}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("Digests: %v, want %v", got, want)
	}

	// Eviction (a third blob over the quota evicts the oldest), Delete
	// and the last link of a manifest going are removals.
	dc := f.put(randomBytes(t, 100))
	if got, want := ch.take(), []string{short("-", da), short("+", dc)}; !slices.Equal(got, want) {
		t.Fatalf("after an eviction: %v, want %v", got, want)
	}
	if err := f.Delete(db); err != nil {
		t.Fatal(err)
	}
	if err := f.DeleteManifest("", "team/app", md); err != nil {
		t.Fatal(err)
	}
	if got, want := ch.take(), []string{short("-", db), short("-", md)}; !slices.Equal(got, want) {
		t.Fatalf("after Delete and DeleteManifest: %v, want %v", got, want)
	}
	if got, err := f.Digests(); err != nil || !slices.Equal(got, []digest.Digest{dc}) {
		t.Fatalf("Digests at the end: %v %v, want [%s]", got, err, dc)
	}
}

// TestRetainOwnRegistry checks that blobs of the hub's own registry are
// never evicted when RetainOwnRegistry is set, and are without it.
func TestRetainOwnRegistry(t *testing.T) {
	t.Parallel()
	for _, retain := range []bool{true, false} {
		f := newFixture(t, func(c *Config) {
			c.Quota = 250
			c.RetainOwnRegistry = retain
		})
		own := randomBytes(t, 100)
		dOwn := f.put(own)
		if err := f.LinkBlob("", "team/app", dOwn); err != nil {
			t.Fatal(err)
		}
		mirrored := randomBytes(t, 100)
		dMirrored := f.put(mirrored)
		if err := f.LinkBlob("docker.io", "library/nginx", dMirrored); err != nil {
			t.Fatal(err)
		}
		third := randomBytes(t, 100)
		dThird := f.put(third)
		f.mustHave(dThird, third)
		if retain {
			f.mustHave(dOwn, own)
			f.mustMiss(dMirrored)
		} else {
			f.mustMiss(dOwn)
			f.mustHave(dMirrored, mirrored)
		}
	}
}
