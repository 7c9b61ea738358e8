package fetch

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestPullThroughTheChain pulls a two-platform image from a real CNCF
// Distribution origin through a hub node and a site node with
// go-containerregistry's client, then through a second site node whose
// blobs come from the first one as a peer, then with skopeo through a
// third: every byte verified, every blob crossing the origin link once.
func TestPullThroughTheChain(t *testing.T) {
	t.Parallel()
	origin := newOriginProxy(t, distribution(t, ""))
	ns := origin.Addr
	want := pushImage(t, ns, "team/app", "v1", []string{"linux/amd64", "linux/arm64"}, 1<<20, 300_000)
	org := newOrigin(t, nil)

	hub := newNode(t, "hub", ns, func(c *Config) { c.Upstream = []Tier{org} })
	var (
		mu     sync.Mutex
		stored = map[string]bool{}
	)
	a := newNode(t, "a", ns, func(c *Config) {
		c.Upstream = []Tier{hub.HubTier, org}
		c.OnStored = func(d digest.Digest) {
			mu.Lock()
			stored[d.String()] = true
			mu.Unlock()
		}
	})
	if got := pullAll(t, a.Mirror, "team/app", "v1", want); got != want.Index {
		t.Fatalf("pulled index %s, pushed %s", got, want.Index)
	}
	// A blob is committed (and reported) just after its last byte reached
	// the client, so the pull can return a moment before.
	for _, d := range append([]string{want.Index.String(), want.Images[0].String(), want.Images[1].String()}, keys(want.Blobs)...) {
		eventually(t, "OnStored is called for "+d, func() bool {
			mu.Lock()
			defer mu.Unlock()
			return stored[d]
		})
	}
	for d := range want.Blobs {
		if n := origin.gets(d); n != 1 {
			t.Fatalf("blob %s crossed the origin link %d times, want 1", d, n)
		}
		if _, err := a.Store.Stat(d); err != nil {
			t.Fatalf("node a does not hold %s after the pull: %v", d, err)
		}
	}
	st := a.Source.Stats()
	if st.Tiers["hub"].Bytes == 0 || st.Tiers["origin"].Bytes != 0 {
		t.Fatalf("node a's bytes by tier: %+v, want all from the hub", st.Tiers)
	}

	// Node b: the same image, its blobs from node a (a peer), its tag from
	// the hub.
	b := newNode(t, "b", ns, func(c *Config) {
		c.Peers = peersFrom(a)
		c.Upstream = []Tier{hub.HubTier, org}
	})
	gets := origin.totalGets()
	hubBytes := hub.Source.Stats().Tiers["origin"].Bytes
	if got := pullAll(t, b.Mirror, "team/app", "v1", want); got != want.Index {
		t.Fatalf("node b pulled index %s", got)
	}
	st = b.Source.Stats()
	var total uint64
	for _, blob := range want.Blobs {
		total += uint64(len(blob))
	}
	if st.Tiers["peer"].Bytes != total || st.Tiers["hub"].Bytes != 0 {
		t.Fatalf("node b's bytes by tier: %+v, want all %d from the peer", st.Tiers, total)
	}
	if origin.totalGets() != gets || hub.Source.Stats().Tiers["origin"].Bytes != hubBytes {
		t.Fatal("node b's pull reached the origin")
	}

	// A pull by digest of one platform's image.
	pullAll(t, b.Mirror, "team/app", want.Index.String(), want)

	// skopeo through a third node, whose peers are a and b.
	if _, err := exec.LookPath("skopeo"); err != nil {
		t.Log("skopeo is not installed (apt-get install -y skopeo): skipping its part")
		return
	}
	c := newNode(t, "c", ns, func(c *Config) {
		c.Peers = peersFrom(a, b)
		c.Upstream = []Tier{hub.HubTier, org}
	})
	dst := t.TempDir()
	skopeoCopy(t, "copy", "--all", "--src-tls-verify=false", "docker://"+c.Mirror+"/team/app:v1", "oci:"+dst+":v1")
	var top ocispec.Index
	raw, err := os.ReadFile(filepath.Join(dst, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &top); err != nil || len(top.Manifests) != 1 {
		t.Fatalf("skopeo copied %s", raw)
	}
	// skopeo 1.9 writes the index again (it drops the descriptors'
	// artifactType): the platform images must be the ones pushed.
	var idx ocispec.Index
	raw, err = os.ReadFile(filepath.Join(dst, "blobs", "sha256", top.Manifests[0].Digest.Encoded()))
	if err != nil || json.Unmarshal(raw, &idx) != nil || len(idx.Manifests) != len(want.Images) {
		t.Fatalf("skopeo's index: %s, %v", raw, err)
	}
	for i, m := range idx.Manifests {
		if m.Digest.String() != want.Images[i].String() {
			t.Fatalf("skopeo's index names %s, pushed %s", m.Digest, want.Images[i])
		}
	}
	for d, blob := range want.Blobs {
		got, err := os.ReadFile(filepath.Join(dst, "blobs", "sha256", d.Encoded()))
		if err != nil || !bytes.Equal(got, blob) {
			t.Fatalf("skopeo's copy of %s: %v", d, err)
		}
	}
	if st := c.Source.Stats(); st.Tiers["peer"].Bytes != total {
		t.Fatalf("node c's bytes by tier: %+v, want all from peers", st.Tiers)
	}
}

// skopeoCopy runs skopeo with a permissive policy.
func skopeoCopy(t *testing.T, args ...string) string {
	t.Helper()
	policy := filepath.Join(t.TempDir(), "policy.json")
	if err := os.WriteFile(policy, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "skopeo", append([]string{"--policy", policy}, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "TMPDIR="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("skopeo %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestConcurrentPullsShareOneFetch sends many GETs and HEADs for one blob
// to a node at once: one request reaches the origin, every client gets
// the blob whole.
func TestConcurrentPullsShareOneFetch(t *testing.T) {
	t.Parallel()
	origin := newOriginProxy(t, distribution(t, ""))
	ns := origin.Addr
	want := pushImage(t, ns, "big", "v1", []string{"linux/amd64"}, 4<<20)
	a := newNode(t, "a", ns, func(c *Config) { c.Upstream = []Tier{newOrigin(t, nil)} })
	layer := want.Layers[0]
	origin.throttle.Store(int64(2 * time.Millisecond)) // about 32 MB/s: the requests overlap

	const clients = 8
	type result struct {
		status int
		body   []byte
		err    error
	}
	results := make(chan result, clients+2)
	for i := range clients + 2 {
		method := "GET"
		if i >= clients {
			method = "HEAD"
		}
		go func() {
			resp, body, err := get(t, method, "http://"+a.Mirror+"/v2/big/blobs/"+layer.String())
			if err != nil {
				results <- result{err: err}
				return
			}
			if method == "HEAD" {
				if resp.Header.Get("Content-Length") != "" && resp.ContentLength != int64(len(want.Blobs[layer])) {
					t.Errorf("HEAD: Content-Length %d", resp.ContentLength)
				}
				body = want.Blobs[layer]
			}
			results <- result{status: resp.StatusCode, body: body}
		}()
	}
	for range clients + 2 {
		r := <-results
		if r.err != nil || r.status != 200 || !bytes.Equal(r.body, want.Blobs[layer]) {
			t.Fatalf("a client got %d, %d bytes, %v", r.status, len(r.body), r.err)
		}
	}
	if n := origin.gets(layer); n != 1 {
		t.Fatalf("%d requests reached the origin, want 1", n)
	}
	if n := origin.bytesOf(layer); n != int64(len(want.Blobs[layer])) {
		t.Fatalf("%d bytes crossed the origin link, want %d", n, len(want.Blobs[layer]))
	}
}

// TestSiteSharesOneWANFetch has two nodes of a site pull one blob at the
// same time with a SiteFetch hook (the lead backs it with site Raft): the
// node that loses the claim reads from the one that won while its bytes
// arrive, and the blob crosses the WAN once.
func TestSiteSharesOneWANFetch(t *testing.T) {
	t.Parallel()
	origin := newOriginProxy(t, distribution(t, ""))
	ns := origin.Addr
	want := pushImage(t, ns, "big", "v1", []string{"linux/amd64"}, 4<<20)
	layer := want.Layers[0]
	org := newOrigin(t, nil)
	claims := &claimTable{owners: map[digest.Digest]*node{}}
	var a, b *node
	a = newNode(t, "a", ns, func(c *Config) {
		c.Upstream = []Tier{org}
		c.SiteFetch = claims.For(func() *node { return a })
	})
	b = newNode(t, "b", ns, func(c *Config) {
		c.Upstream = []Tier{org}
		c.SiteFetch = claims.For(func() *node { return b })
	})
	origin.throttle.Store(int64(2 * time.Millisecond))

	done := make(chan []byte, 2)
	for _, n := range []*node{a, b} {
		go func() {
			_, body, err := get(t, "GET", "http://"+n.Mirror+"/v2/big/blobs/"+layer.String())
			if err != nil {
				t.Errorf("GET from %s: %v", n.name, err)
			}
			done <- body
		}()
	}
	for range 2 {
		if body := <-done; !bytes.Equal(body, want.Blobs[layer]) {
			t.Fatalf("a node served %d bytes, not the blob", len(body))
		}
	}
	if n := origin.gets(layer); n != 1 {
		t.Fatalf("the blob crossed the WAN %d times, want 1", n)
	}
	sa, sb := a.Source.Stats(), b.Source.Stats()
	if sa.Tiers["peer"].Bytes+sb.Tiers["peer"].Bytes != uint64(len(want.Blobs[layer])) {
		t.Fatalf("peer bytes a %+v b %+v: one node should have read the blob from the other", sa.Tiers, sb.Tiers)
	}
}

// claimTable is an in-memory SiteFetch: the first node to claim a digest
// fetches it, the others read from it. (The lead replaces it with a claim
// in site Raft.)
type claimTable struct {
	mu     sync.Mutex
	owners map[digest.Digest]*node
}

type claimer struct {
	t    *claimTable
	self func() *node
}

// For returns the SiteFetch of the node self returns.
func (c *claimTable) For(self func() *node) SiteFetch { return claimer{t: c, self: self} }

func (c claimer) Claim(_ context.Context, d digest.Digest) (Tier, func(), error) {
	c.t.mu.Lock()
	defer c.t.mu.Unlock()
	if owner, ok := c.t.owners[d]; ok && owner != c.self() {
		return owner.PeerTier, nil, nil
	}
	c.t.owners[d] = c.self()
	return nil, func() {
		c.t.mu.Lock()
		delete(c.t.owners, d)
		c.t.mu.Unlock()
	}, nil
}

func keys(m map[digest.Digest][]byte) []string {
	var out []string
	for d := range m {
		out = append(out, d.String())
	}
	return out
}
