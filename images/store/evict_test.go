package store

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// image stores a manifest referencing the given blobs (the first is the
// config) in ns/repo under tag, and returns its digest.
func (f *fixture) image(ns, repo, tag string, blobs ...digest.Digest) digest.Digest {
	f.t.Helper()
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest}
	m.SchemaVersion = 2
	for i, d := range blobs {
		info, err := f.Stat(d)
		if err != nil {
			f.t.Fatal(err)
		}
		desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: d, Size: info.Size}
		if i == 0 {
			desc.MediaType = ocispec.MediaTypeImageConfig
			m.Config = desc
		} else {
			m.Layers = append(m.Layers, desc)
		}
		if err := f.LinkBlob(ns, repo, d); err != nil {
			f.t.Fatal(err)
		}
	}
	body, _ := json.Marshal(m)
	md := digest.FromBytes(body)
	if err := f.PutManifest(ns, repo, md, m.MediaType, body); err != nil {
		f.t.Fatal(err)
	}
	if tag != "" {
		if err := f.Tag(ns, repo, tag, md); err != nil {
			f.t.Fatal(err)
		}
	}
	return md
}

func TestEvictsLeastRecentlyUsed(t *testing.T) {
	t.Parallel()
	f := newFixture(t, func(c *Config) { c.Quota = 300 })
	a, b, c := randomBytes(t, 100), randomBytes(t, 100), randomBytes(t, 100)
	da, db, dc := f.put(a), f.put(b), f.put(c)
	// Reading a makes b the least recently used.
	f.mustHave(da, a)
	d := randomBytes(t, 100)
	dd := f.put(d)
	f.mustMiss(db)
	f.mustHave(da, a)
	f.mustHave(dc, c)
	f.mustHave(dd, d)
	if st := f.Stats(); st.Bytes != 300 || st.Blobs != 3 || st.Evictions != 1 || st.EvictedBytes != 100 {
		t.Fatalf("stats: %+v", st)
	}
	// The order survives a restart: it is kept in Badger.
	f.reopen()
	e := randomBytes(t, 150)
	de := f.put(e)
	// a and c were last used before d: both go to make room for e.
	f.mustMiss(dc)
	f.mustMiss(da)
	f.mustHave(dd, d)
	f.mustHave(de, e)
}

func TestEvictionSparesPinsAndOpenReaders(t *testing.T) {
	t.Parallel()
	f := newFixture(t, func(c *Config) { c.Quota = 1000 })
	cfg, layer := randomBytes(t, 100), randomBytes(t, 300)
	dcfg, dlayer := f.put(cfg), f.put(layer)
	f.image("docker.io", "library/pinned", "v1", dcfg, dlayer)
	// Pinned by tag, before anything else is used.
	if err := f.Pin("docker.io", "library/pinned", "v1"); err != nil {
		t.Fatal(err)
	}
	open := randomBytes(t, 200)
	dopen := f.put(open)
	r, err := f.Open(context.Background(), dopen)
	if err != nil {
		t.Fatal(err)
	}
	free := randomBytes(t, 200)
	dfree := f.put(free)

	// 800 bytes stored; 400 more push the store over by 200. The pinned
	// image and the open blob are older, yet only the free blob may go.
	big := randomBytes(t, 400)
	dbig := f.put(big)
	f.mustMiss(dfree)
	for _, d := range []digest.Digest{dcfg, dlayer, dbig} {
		if _, err := f.Stat(d); err != nil {
			t.Fatalf("%s evicted: %v", d, err)
		}
	}
	if _, err := f.Stat(dopen); err != nil {
		t.Fatalf("open blob evicted: %v", err)
	}
	// Once closed, the open blob may go.
	r.Close()
	more := randomBytes(t, 200)
	f.put(more)
	f.mustMiss(dopen)

	// Nothing left to evict: the store stays over quota rather than
	// evicting pinned content.
	f.put(randomBytes(t, 500))
	if _, err := f.Stat(dlayer); err != nil {
		t.Fatalf("pinned layer evicted: %v", err)
	}
	// Unpinned, the image may go.
	if err := f.Unpin("docker.io", "library/pinned", "v1"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.Evict(); err != nil {
		t.Fatal(err)
	}
	if st := f.Stats(); st.Bytes > 1000 {
		t.Fatalf("still over quota after unpinning: %+v", st)
	}
	if err := f.Unpin("docker.io", "library/pinned", "v1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second unpin: %v", err)
	}
}

func TestPinCoversIndexChildrenAndReferrers(t *testing.T) {
	t.Parallel()
	f := newFixture(t, func(c *Config) { c.Quota = 1 })
	ns, repo := "ghcr.io", "org/app"
	// Evictions are only checked once everything is stored: Evict is
	// called explicitly below, with the quota of 1 byte.
	f.quota = 0
	c1, l1 := f.put(randomBytes(t, 10)), f.put(randomBytes(t, 10))
	m1 := f.image(ns, repo, "", c1, l1)
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageManifest, Digest: m1, Size: 1}}}
	idx.SchemaVersion = 2
	body, _ := json.Marshal(idx)
	di := digest.FromBytes(body)
	if err := f.PutManifest(ns, repo, di, "", body); err != nil {
		t.Fatal(err)
	}
	if err := f.Tag(ns, repo, "v1", di); err != nil {
		t.Fatal(err)
	}
	// A signature referring to the index.
	sigCfg, sigLayer := f.put([]byte("{}")), f.put(randomBytes(t, 10))
	sig := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, ArtifactType: "application/vnd.example.sig",
		Config:  ocispec.Descriptor{MediaType: "application/vnd.oci.empty.v1+json", Digest: sigCfg, Size: 2},
		Layers:  []ocispec.Descriptor{{MediaType: "application/octet-stream", Digest: sigLayer, Size: 10}},
		Subject: &ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: di, Size: int64(len(body))}}
	sig.SchemaVersion = 2
	sb, _ := json.Marshal(sig)
	if err := f.PutManifest(ns, repo, digest.FromBytes(sb), "", sb); err != nil {
		t.Fatal(err)
	}
	other := f.put(randomBytes(t, 10))
	if err := f.Pin(ns, repo, "v1"); err != nil {
		t.Fatal(err)
	}
	f.quota = 1
	if _, _, err := f.Evict(); err != nil {
		t.Fatal(err)
	}
	for _, d := range []digest.Digest{c1, l1, sigCfg, sigLayer} {
		if _, err := f.Stat(d); err != nil {
			t.Errorf("pinned %s evicted: %v", d, err)
		}
	}
	if _, err := f.Stat(other); !errors.Is(err, ErrNotFound) {
		t.Errorf("unpinned blob kept: %v", err)
	}
}

func TestDedupAcrossRegistriesAndRepositories(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	layer := randomBytes(t, 4096)
	d := f.put(layer)
	if _, err := f.Begin(d, int64(len(layer))); !errors.Is(err, ErrExists) {
		t.Fatalf("second Begin of a stored blob: %v, want ErrExists", err)
	}
	// The same layer pushed to the hub's own registry lands on the same
	// file.
	w, err := f.BeginUpload()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(layer); err != nil {
		t.Fatal(err)
	}
	if err := w.CommitAs(d); err != nil {
		t.Fatal(err)
	}
	holders := [][2]string{{"docker.io", "library/nginx"}, {"ghcr.io", "org/nginx"}, {"", "mirror/nginx"}}
	for _, h := range holders {
		if err := f.LinkBlob(h[0], h[1], d); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(f.files()); n != 1 {
		t.Fatalf("%d files for one blob in three registries", n)
	}
	if st := f.Stats(); st.Bytes != 4096 || st.Blobs != 1 {
		t.Fatalf("stats: %+v", st)
	}
	repos, err := f.Repositories()
	if err != nil {
		t.Fatal(err)
	}
	if len(repos) != 3 {
		t.Fatalf("%d repositories listed, want 3", len(repos))
	}
	for _, r := range repos {
		if r.Size != 4096 || r.Blobs != 1 {
			t.Errorf("%s/%s: size %d blobs %d", r.Namespace, r.Name, r.Size, r.Blobs)
		}
	}
	// Unlinking from two keeps the blob for the third; the last unlink
	// deletes it.
	for i, h := range holders {
		if err := f.UnlinkBlob(h[0], h[1], d); err != nil {
			t.Fatal(err)
		}
		if linked, _ := f.BlobLinked(h[0], h[1], d); linked {
			t.Fatalf("%v still linked", h)
		}
		if i < len(holders)-1 {
			f.mustHave(d, layer)
		}
	}
	f.mustMiss(d)
	if err := f.UnlinkBlob("docker.io", "library/nginx", d); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unlink again: %v", err)
	}
}

func TestEvictionRemovesLinks(t *testing.T) {
	t.Parallel()
	f := newFixture(t, func(c *Config) { c.Quota = 100 })
	d := f.put(randomBytes(t, 100))
	if err := f.LinkBlob("docker.io", "library/a", d); err != nil {
		t.Fatal(err)
	}
	f.put(randomBytes(t, 100))
	if linked, _ := f.BlobLinked("docker.io", "library/a", d); linked {
		t.Fatal("link of an evicted blob survived")
	}
	repos, _ := f.Repositories()
	for _, r := range repos {
		if r.Blobs != 0 || r.Size != 0 {
			t.Fatalf("repository still counts the evicted blob: %+v", r)
		}
	}
}
