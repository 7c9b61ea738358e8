package store

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestManifestsTagsAndReferrers(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	ns, repo := "docker.io", "library/nginx"
	cfg, layer := f.put([]byte(`{"architecture":"amd64"}`)), f.put(randomBytes(t, 100))
	md := f.image(ns, repo, "latest", cfg, layer)

	m, err := f.Manifest(ns, repo, "latest")
	if err != nil || m.Digest != md || m.MediaType != ocispec.MediaTypeImageManifest || digest.FromBytes(m.Body) != md {
		t.Fatalf("by tag: %+v, %v", m, err)
	}
	if m2, err := f.Manifest(ns, repo, md.String()); err != nil || string(m2.Body) != string(m.Body) {
		t.Fatalf("by digest: %v", err)
	}
	if _, err := f.Manifest("ghcr.io", repo, md.String()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("by digest in another registry: %v, want ErrNotFound", err)
	}
	if _, err := f.ManifestByDigest(md); err != nil {
		t.Fatalf("global by digest: %v", err)
	}
	tag, err := f.ResolveTag(ns, repo, "latest")
	if err != nil || tag.Digest != md || tag.Resolved.IsZero() {
		t.Fatalf("resolve: %+v %v", tag, err)
	}

	// Bytes that do not hash to the digest, and an oversized body.
	if err := f.PutManifest(ns, repo, md, "", append([]byte(" "), m.Body...)); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("mismatched body: %v", err)
	}
	huge := []byte(`{"x":"` + strings.Repeat("a", MaxManifestSize) + `"}`)
	if err := f.PutManifest(ns, repo, digest.FromBytes(huge), "application/json", huge); !errors.Is(err, ErrInvalidManifest) {
		t.Fatalf("oversized: %v", err)
	}
	if err := f.Tag(ns, repo, "v2", digest.FromString("nope")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("tag of an unknown manifest: %v", err)
	}

	// Tags list in lexical order.
	for _, tg := range []string{"b", "a", "C", "1.0"} {
		if err := f.Tag(ns, repo, tg, md); err != nil {
			t.Fatal(err)
		}
	}
	tags, err := f.Tags(ns, repo)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tg := range tags {
		names = append(names, tg.Name)
	}
	if strings.Join(names, ",") != "1.0,C,a,b,latest" {
		t.Fatalf("tags %v", names)
	}
	if _, err := f.Tags(ns, "library/none"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("tags of an unknown repository: %v", err)
	}

	// A referrer.
	sig := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest,
		Config:      ocispec.Descriptor{MediaType: "application/vnd.example.sig.config", Digest: cfg, Size: 1},
		Subject:     &ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: md, Size: int64(len(m.Body))},
		Annotations: map[string]string{"k": "v"}}
	sig.SchemaVersion = 2
	sb, _ := json.Marshal(sig)
	ds := digest.FromBytes(sb)
	if err := f.PutManifest(ns, repo, ds, "", sb); err != nil {
		t.Fatal(err)
	}
	refs, err := f.Referrers(ns, repo, md)
	if err != nil || len(refs) != 1 {
		t.Fatalf("referrers: %v %v", refs, err)
	}
	if r := refs[0]; r.Digest != ds || r.ArtifactType != "application/vnd.example.sig.config" || r.Size != int64(len(sb)) || r.Annotations["k"] != "v" || r.MediaType != ocispec.MediaTypeImageManifest {
		t.Fatalf("referrer descriptor %+v", r)
	}

	// The same manifest held by a second repository survives its
	// deletion from the first.
	if err := f.PutManifest("", "copy", md, "", m.Body); err != nil {
		t.Fatal(err)
	}
	if err := f.DeleteManifest(ns, repo, md); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Manifest(ns, repo, "latest"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("tag of a deleted manifest: %v", err)
	}
	if tags, _ := f.Tags(ns, repo); len(tags) != 0 {
		t.Fatalf("tags left: %v", tags)
	}
	if _, err := f.ManifestByDigest(md); err != nil {
		t.Fatalf("manifest held by another repository was deleted: %v", err)
	}
	if err := f.DeleteManifest(ns, repo, ds); err != nil {
		t.Fatal(err)
	}
	if refs, _ := f.Referrers(ns, repo, md); len(refs) != 0 {
		t.Fatalf("referrers after delete: %v", refs)
	}
	if _, err := f.ManifestByDigest(ds); !errors.Is(err, ErrNotFound) {
		t.Fatalf("manifest held by no repository kept: %v", err)
	}
	if err := f.DeleteManifest(ns, repo, ds); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	if st := f.Stats(); st.ManifestHits == 0 || st.ManifestMisses == 0 {
		t.Fatalf("manifest counters: %+v", st)
	}
}

func TestNamesValidated(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	d := digest.FromString("x")
	badRepos := []string{"", "UPPER", "a//b", "/a", "a/", "../a", "a/../b", "a/./b", ".", "..", "a..b", "-a", "a-", "a b", "a\x00b", strings.Repeat("a", 256)}
	for _, r := range badRepos {
		if err := ValidateRepository(r); !errors.Is(err, ErrInvalidName) {
			t.Errorf("repository %q accepted", r)
		}
		if err := f.PutManifest("", r, d, "", []byte("x")); !errors.Is(err, ErrInvalidName) {
			t.Errorf("PutManifest in %q: %v", r, err)
		}
	}
	for _, r := range []string{"a", "library/nginx", "a/b/c", "a.b_c__d--e", "0", strings.Repeat("a", 255)} {
		if err := ValidateRepository(r); err != nil {
			t.Errorf("repository %q refused: %v", r, err)
		}
	}
	for _, tg := range []string{"", ".a", "-a", "a:b", "a/b", strings.Repeat("a", 129)} {
		if err := ValidateTag(tg); !errors.Is(err, ErrInvalidName) {
			t.Errorf("tag %q accepted", tg)
		}
	}
	for _, tg := range []string{"latest", "_a", "V1.2-rc_3", strings.Repeat("a", 128)} {
		if err := ValidateTag(tg); err != nil {
			t.Errorf("tag %q refused: %v", tg, err)
		}
	}
	for _, ns := range []string{"Docker.io", "docker.io/", "../x", "a..b", "docker.io:0", "docker.io:99999", "docker.io:", "[::1", "[::1]x", "a b", "-a.io"} {
		if err := ValidateNamespace(ns); !errors.Is(err, ErrInvalidName) {
			t.Errorf("namespace %q accepted", ns)
		}
	}
	for _, ns := range []string{"", "docker.io", "registry-1.docker.io", "localhost:5000", "127.0.0.1:5000", "[fd00::1]:5000", "[::1]"} {
		if err := ValidateNamespace(ns); err != nil {
			t.Errorf("namespace %q refused: %v", ns, err)
		}
	}
}

func TestRepositoriesListing(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	cfg, layer := f.put(randomBytes(t, 10)), f.put(randomBytes(t, 1000))
	f.image("docker.io", "library/nginx", "1.27", cfg, layer)
	f.image("", "team/app", "v1", cfg)
	for range 3 {
		if err := f.RecordPull("docker.io", "library/nginx"); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Pin("", "team/app", "v1"); err != nil {
		t.Fatal(err)
	}
	repos, err := f.Repositories()
	if err != nil {
		t.Fatal(err)
	}
	if len(repos) != 2 || repos[0].Namespace != "" || repos[1].Namespace != "docker.io" {
		t.Fatalf("repositories %+v", repos)
	}
	app, nginx := repos[0], repos[1]
	if nginx.Pulls != 3 || nginx.LastPulled.IsZero() || len(nginx.Tags) != 1 || nginx.Tags[0].Name != "1.27" || nginx.Blobs != 2 || nginx.Manifests != 1 || nginx.Size < 1010 {
		t.Errorf("nginx %+v", nginx)
	}
	if len(app.Pinned) != 1 || app.Pinned[0] != "v1" || app.Pulls != 0 {
		t.Errorf("app %+v", app)
	}
}

func TestLargeManifestKeptWhole(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	body := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","annotations":{"a":"` +
		strings.Repeat("a", MaxManifestSize-200) + `"}}`)
	d := digest.FromBytes(body)
	if err := f.PutManifest("", "big", d, "", body); err != nil {
		t.Fatal(err)
	}
	m, err := f.Manifest("", "big", d.String())
	if err != nil || digest.FromBytes(m.Body) != d || m.MediaType != ocispec.MediaTypeImageManifest {
		t.Fatalf("large manifest: %v", err)
	}
}
