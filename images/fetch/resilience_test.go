package fetch

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/outpost-mesh/outpost/images/registry"
)

// corruptions records OnCorrupt calls.
type corruptions struct {
	mu   sync.Mutex
	seen []string // "tier digest"
}

func (c *corruptions) hook(t Tier, d digest.Digest) {
	c.mu.Lock()
	c.seen = append(c.seen, t.Name()+" "+d.String())
	c.mu.Unlock()
}

func (c *corruptions) has(tier string, d digest.Digest) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.seen {
		if s == tier+" "+d.String() {
			return true
		}
	}
	return false
}

// TestCorruptPeerCopy rots a byte of a peer's stored layer: the node
// detects it, reports the peer, fetches the layer from the origin, and the
// client that asked gets the right blob, none of the rotten bytes.
func TestCorruptPeerCopy(t *testing.T) {
	t.Parallel()
	origin := newOriginProxy(t, distribution(t, ""))
	ns := origin.Addr
	want := pushImage(t, ns, "app", "v1", []string{"linux/amd64"}, 2<<20, 10_000)
	org := newOrigin(t, nil)
	b := newNode(t, "b", ns, func(c *Config) { c.Upstream = []Tier{org} })
	pullAll(t, b.Mirror, "app", "v1", want)

	layer := want.Layers[0]
	path := blobFile(t, b, layer)
	rotten, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	rotten[len(rotten)/2] ^= 0x40
	if err := os.WriteFile(path, rotten, 0o600); err != nil {
		t.Fatal(err)
	}

	var bad corruptions
	a := newNode(t, "a", ns, func(c *Config) {
		c.Peers = peersFrom(b)
		c.Upstream = []Tier{org}
		c.OnCorrupt = bad.hook
	})
	// The first GET gets nothing of the peer's copy (held back until it
	// is verified) and then the origin's bytes: the right blob.
	resp, body, err := get(t, "GET", "http://"+a.Mirror+"/v2/app/blobs/"+layer.String())
	if err != nil || resp.StatusCode != 200 || !bytes.Equal(body, want.Blobs[layer]) {
		t.Fatalf("first GET past a rotten peer copy: %v, %d bytes, not the blob (rotten: %v)", err, len(body), bytes.Equal(body, rotten))
	}
	eventually(t, "the corruption is reported", func() bool { return bad.has("b", layer) })
	eventually(t, "the layer is fetched again", func() bool { _, err := a.Store.Stat(layer); return err == nil })
	resp, body, err = get(t, "GET", "http://"+a.Mirror+"/v2/app/blobs/"+layer.String())
	if err != nil || resp.StatusCode != 200 || !bytes.Equal(body, want.Blobs[layer]) {
		t.Fatalf("GET after the refetch: %v, %d bytes", err, len(body))
	}
	st := a.Source.Stats()
	if st.Tiers["peer"].Corrupt != 1 || st.Restarts != 1 || st.Tiers["origin"].Bytes != uint64(len(want.Blobs[layer])) {
		t.Fatalf("stats after a corrupt peer: %+v", st)
	}
	// The whole image pulls (the remote client verifies every digest).
	pullAll(t, a.Mirror, "app", "v1", want)
}

// blobFile is where a node's store keeps blob d.
func blobFile(t testing.TB, n *node, d digest.Digest) string {
	t.Helper()
	p := filepath.Join(n.Dir, "blobs", string(d.Algorithm()), d.Encoded()[:2], d.Encoded())
	if _, err := os.Stat(p); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestCorruptManifestFromPeer has a peer serve a manifest that does not
// hash to its digest: reported, and served from the next tier.
func TestCorruptManifestFromPeer(t *testing.T) {
	t.Parallel()
	origin := newOriginProxy(t, distribution(t, ""))
	ns := origin.Addr
	want := pushImage(t, ns, "app", "v1", []string{"linux/amd64"}, 1000)
	org := newOrigin(t, nil)
	b := newNode(t, "b", ns, func(c *Config) { c.Upstream = []Tier{org} })
	pullAll(t, b.Mirror, "app", "v1", want)

	var bad corruptions
	liar := tamperTier{Tier: b.PeerTier, manifest: func(m registry.Manifest) registry.Manifest {
		m.Body = append(bytes.Clone(m.Body), ' ')
		return m
	}}
	a := newNode(t, "a", ns, func(c *Config) {
		c.Peers = PeerFinderFunc(func(context.Context, digest.Digest) []Tier { return []Tier{liar} })
		c.Upstream = []Tier{org}
		c.OnCorrupt = bad.hook
	})
	img := want.Images[0]
	resp, body, err := get(t, "GET", "http://"+a.Mirror+"/v2/app/manifests/"+img.String())
	if err != nil || resp.StatusCode != 200 || digest.FromBytes(body).String() != img.String() {
		t.Fatalf("GET manifest: %v %d", err, resp.StatusCode)
	}
	if !bad.has("b", digest.Digest(img.String())) {
		t.Fatal("the peer's corrupt manifest was not reported")
	}
}

// tamperTier changes what a tier serves.
type tamperTier struct {
	Tier
	manifest func(registry.Manifest) registry.Manifest
}

func (t tamperTier) Manifest(ctx context.Context, ns, repo, ref string) (registry.Manifest, error) {
	m, err := t.Tier.Manifest(ctx, ns, repo, ref)
	if err == nil && t.manifest != nil {
		m = t.manifest(m)
	}
	return m, err
}

// breakingTier is a tier whose blob transfers die after n bytes.
type breakingTier struct {
	Tier
	n int64
}

func (t breakingTier) Blob(ctx context.Context, ns, repo string, d digest.Digest, offset int64) (io.ReadCloser, int64, error) {
	rc, size, err := t.Tier.Blob(ctx, ns, repo, d, offset)
	if err != nil {
		return nil, 0, err
	}
	return struct {
		io.Reader
		io.Closer
	}{io.MultiReader(io.LimitReader(rc, t.n), errReader{errBroken}), rc}, size, nil
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

// TestResumeBrokenTransfer breaks a peer's transfer mid-blob: the origin
// is asked for the rest only (a Range from the offset), and the client,
// which was reading all along, gets the whole blob.
func TestResumeBrokenTransfer(t *testing.T) {
	t.Parallel()
	origin := newOriginProxy(t, distribution(t, ""))
	ns := origin.Addr
	want := pushImage(t, ns, "app", "v1", []string{"linux/amd64"}, 3<<20)
	org := newOrigin(t, nil)
	b := newNode(t, "b", ns, func(c *Config) { c.Upstream = []Tier{org} })
	pullAll(t, b.Mirror, "app", "v1", want)
	layer := want.Layers[0]
	size := int64(len(want.Blobs[layer]))
	before := origin.bytesOf(layer)

	const cut = 1<<20 + 12_345
	a := newNode(t, "a", ns, func(c *Config) {
		c.Peers = PeerFinderFunc(func(context.Context, digest.Digest) []Tier { return []Tier{breakingTier{Tier: b.PeerTier, n: cut}} })
		c.Upstream = []Tier{org}
	})
	resp, body, err := get(t, "GET", "http://"+a.Mirror+"/v2/app/blobs/"+layer.String())
	if err != nil || resp.StatusCode != 200 || !bytes.Equal(body, want.Blobs[layer]) {
		t.Fatalf("GET through a broken peer: %v, %d bytes", err, len(body))
	}
	if got := origin.bytesOf(layer) - before; got != size-cut {
		t.Fatalf("the origin sent %d bytes for the resume, want the %d missing", got, size-cut)
	}
	origin.mu.Lock()
	ranges := origin.ranges[layer]
	origin.mu.Unlock()
	if last := ranges[len(ranges)-1]; last != "bytes=1060921-" {
		t.Fatalf("the origin was asked for %q", last)
	}
	st := a.Source.Stats()
	if st.Resumes != 1 || st.Tiers["peer"].Bytes != cut || st.Tiers["origin"].Bytes != uint64(size-cut) {
		t.Fatalf("stats after a resume: %+v", st)
	}
}

// TestOriginDownServesLastAgreedDigest takes the origin away: a tag
// resolves to the digest the site last agreed on, on the node that
// resolved it and on a node that never saw it (its content from a peer);
// a tag never resolved is UNAVAILABLE; when the origin is back, a moved
// tag is followed.
func TestOriginDownServesLastAgreedDigest(t *testing.T) {
	t.Parallel()
	dist := distribution(t, "")
	origin := newOriginProxy(t, dist)
	ns := origin.Addr
	v1img := pushImage(t, ns, "app", "v1", []string{"linux/amd64", "linux/arm64"}, 200_000)
	clock := newClock()
	site := &agreement{tags: map[string]digest.Digest{}}
	org := newOrigin(t, nil)
	a := newNode(t, "a", ns, func(c *Config) {
		c.Upstream = []Tier{org}
		c.OnTagResolved, c.LookupTag = site.resolved, site.lookup
		c.Now = clock.Now
	})
	if got := pullAll(t, a.Mirror, "app", "v1", v1img); got != v1img.Index {
		t.Fatalf("pulled %s", got)
	}
	if d, _ := site.lookup(t.Context(), ns, "app", "v1"); d.String() != v1img.Index.String() {
		t.Fatalf("site agreement holds %q", d)
	}

	// The tag moves at the origin, then the WAN goes down.
	moved := pushImage(t, dist, "app", "v1", []string{"linux/amd64"}, 1000)
	origin.down.Store(true)
	clock.Advance(time.Minute)

	if got := pullAll(t, a.Mirror, "app", "v1", v1img); got != v1img.Index {
		t.Fatalf("offline, node a resolved v1 to %s, want the last agreed %s", got, v1img.Index)
	}
	if a.Source.Stats().TagFallbacks == 0 {
		t.Fatal("no fallback counted")
	}
	c := newNode(t, "c", ns, func(cfg *Config) {
		cfg.Peers = peersFrom(a)
		cfg.Upstream = []Tier{org}
		cfg.OnTagResolved, cfg.LookupTag = site.resolved, site.lookup
		cfg.Now = clock.Now
	})
	if got := pullAll(t, c.Mirror, "app", "v1", v1img); got != v1img.Index {
		t.Fatalf("offline, node c resolved v1 to %s", got)
	}
	pullAll(t, c.Mirror, "app", v1img.Index.String(), v1img)

	resp, body, err := get(t, "GET", "http://"+c.Mirror+"/v2/app/manifests/v2")
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable || ociCode(body) != "UNAVAILABLE" {
		t.Fatalf("a tag never resolved, offline: %v %d %s", err, resp.StatusCode, body)
	}
	resp, body, err = get(t, "GET", "http://"+a.Mirror+"/v2/app/tags/list")
	if err != nil || resp.StatusCode != 200 || !bytes.Contains(body, []byte(`"v1"`)) {
		t.Fatalf("tag list offline: %v %d %s", err, resp.StatusCode, body)
	}

	// Back online: after the TTL the moved tag is followed and agreed.
	origin.down.Store(false)
	clock.Advance(time.Minute)
	if got := pullAll(t, a.Mirror, "app", "v1", moved); got != moved.Index {
		t.Fatalf("online again, v1 resolved to %s, want %s", got, moved.Index)
	}
	if d, _ := site.lookup(t.Context(), ns, "app", "v1"); d.String() != moved.Index.String() {
		t.Fatalf("site agreement holds %q after the move", d)
	}
}

// agreement stands for the tag digests the lead replicates in site Raft.
type agreement struct {
	mu   sync.Mutex
	tags map[string]digest.Digest
}

func (g *agreement) resolved(ns, repo, tag string, d digest.Digest) {
	g.mu.Lock()
	g.tags[ns+"/"+repo+":"+tag] = d
	g.mu.Unlock()
}

func (g *agreement) lookup(_ context.Context, ns, repo, tag string) (digest.Digest, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	d, ok := g.tags[ns+"/"+repo+":"+tag]
	return d, ok
}
