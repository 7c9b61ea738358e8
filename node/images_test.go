package node_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/outpost-mesh/outpost/node"
)

// mirrorAt sets a node's mirror to a free loopback port and returns the
// address.
func mirrorAt(t *testing.T, addr *string) func(*node.Config) {
	*addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t, true)))
	return func(c *node.Config) {
		c.RegistryAddr, c.RegistryAddrSet = *addr, true
	}
}

// imageBlobs returns the digests and total size of an image's blobs: its
// config and layers.
func imageBlobs(t *testing.T, img v1.Image) ([]string, int64) {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	ds := []string{m.Config.Digest.String()}
	size := m.Config.Size
	for _, l := range m.Layers {
		ds = append(ds, l.Digest.String())
		size += l.Size
	}
	return ds, size
}

// pull reads an image through a mirror with go-containerregistry, which
// verifies every digest, and checks it is the image pushed.
func pull(t *testing.T, mirror, repo string, want v1.Image) {
	t.Helper()
	ref, err := name.ParseReference(mirror+"/"+repo, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(ref, remote.WithContext(t.Context()))
	if err != nil {
		t.Fatalf("pull %s: %v", ref, err)
	}
	if err := validate.Image(img); err != nil {
		t.Fatalf("pull %s: %v", ref, err)
	}
	got, _ := img.Digest()
	wantD, _ := want.Digest()
	if got != wantD {
		t.Fatalf("pull %s: digest %s, want %s", ref, got, wantD)
	}
}

// hubMetric reads one sample of a metric from the hub's /metrics.
func hubMetric(t *testing.T, hub *testNode, sample string) float64 {
	t.Helper()
	code, b := hub.do(t, call{method: http.MethodGet, path: "/metrics"})
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", code, b)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("no %s in /metrics", sample)
	return 0
}

// TestImagesThroughTheMesh pushes an image to the hub's own registry with
// an API token, pulls it through a site node's mirror (the hub tier over
// a QUIC blob stream), then through a second node of the site, which must
// get every blob from the first (the site's blob index) and none from the
// hub.
func TestImagesThroughTheMesh(t *testing.T) {
	t.Parallel()
	var hubMirror, mirror1, mirror2 string
	hub := startNode(t, mirrorAt(t, &hubMirror), func(c *node.Config) { c.RegistryPush = true })
	img, err := random.Image(300_000, 3)
	if err != nil {
		t.Fatal(err)
	}
	blobs, blobBytes := imageBlobs(t, img)
	ref, err := name.ParseReference(hubMirror+"/team/app:v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}

	// Refused: no credentials, a token that is not one.
	for _, auth := range []authn.Authenticator{authn.Anonymous, &authn.Basic{Username: "outpost", Password: "at-nope.secret"}} {
		err := remote.Write(ref, img, remote.WithAuth(auth), remote.WithContext(t.Context()))
		var terr *transport.Error
		if !errors.As(err, &terr) || terr.StatusCode != http.StatusUnauthorized {
			t.Fatalf("push with %v: %v, want 401", auth, err)
		}
	}
	if err := remote.Write(ref, img, remote.WithAuth(&authn.Basic{Username: "outpost", Password: hub.token}), remote.WithContext(t.Context())); err != nil {
		t.Fatalf("push with the admin token: %v", err)
	}
	pull(t, hubMirror, "team/app:v1", img) // anonymous pulls on loopback

	token := hub.createToken(t, "a", 0, time.Time{})
	hubAddr := hub.hubQUIC(t)
	// A two-voter group loses its leader on any stall of either node: on
	// a loaded test machine, 100 ms timeouts make elections the test.
	e1 := startEdge(t, hubAddr, token, "a-1", mirrorAt(t, &mirror1), calmRaft)
	e2 := startEdge(t, hubAddr, token, "a-2", mirrorAt(t, &mirror2), calmRaft)
	nodes := []*edgeNode{e1, e2}
	eventually(t, 60*time.Second, func() error {
		l := siteLeader(nodes)
		if l == nil {
			return errors.New("site a has no leader")
		}
		if s := suffrage(l); s["a-1"] == "" || s["a-2"] == "" { // one voter, one non-voter
			return fmt.Errorf("site a's group is %v", s)
		}
		return nil
	})

	// a-1: no ns is the hub's own registry, reached through the hub tier.
	pull(t, mirror1, "team/app:v1", img)
	st1, ok := e1.ImageStats()
	if !ok {
		t.Fatal("a-1 has no image cache")
	}
	if got := st1.Fetch.Tiers["hub"].Bytes; got != uint64(blobBytes) {
		t.Fatalf("a-1 received %d blob bytes from the hub tier, want the image's %d (tiers %+v)", got, blobBytes, st1.Fetch.Tiers)
	}
	sample := `outpost_images_blob_stream_bytes_total{to="site"}`
	if got := hubMetric(t, hub, sample); got != float64(blobBytes) {
		t.Fatalf("the hub sent %v blob bytes to sites, want %d", got, blobBytes)
	}

	// The site's index learns that a-1 holds every blob.
	eventually(t, 30*time.Second, func() error {
		for _, d := range blobs {
			holders, err := e2.ImageHolders(t.Context(), d)
			if err != nil {
				return err
			}
			if !slices.Contains(holders, "a-1") {
				return fmt.Errorf("a-2's index lists %v for %s", holders, d)
			}
		}
		return nil
	})

	// a-2 gets every blob from a-1, none from the hub.
	pull(t, mirror2, "team/app:v1", img)
	st2, _ := e2.ImageStats()
	if got := st2.Fetch.Tiers["peer"].Bytes; got != uint64(blobBytes) {
		t.Fatalf("a-2 received %d blob bytes from peers, want %d (tiers %+v)", got, blobBytes, st2.Fetch.Tiers)
	}
	if got := st2.Fetch.Tiers["hub"].Bytes; got != 0 {
		t.Fatalf("a-2 received %d blob bytes from the hub, want 0", got)
	}
	if st1, _ = e1.ImageStats(); st1.ServedToPeers != uint64(blobBytes) {
		t.Fatalf("a-1 sent %d blob bytes to peers, want %d", st1.ServedToPeers, blobBytes)
	}
	if got := hubMetric(t, hub, sample); got != float64(blobBytes) {
		t.Fatalf("the hub sent %v blob bytes to sites after the second pull, want still %d", got, blobBytes)
	}
	// And a-2 is now a holder too.
	eventually(t, 30*time.Second, func() error {
		holders, err := e1.ImageHolders(t.Context(), blobs[1])
		if err != nil {
			return err
		}
		if !slices.Equal(holders, []string{"a-1", "a-2"}) {
			return fmt.Errorf("index lists %v for %s", holders, blobs[1])
		}
		return nil
	})
	// Both nodes pull a new image at the same moment, cold: the site
	// agrees on one of them fetching each blob, the other reads that copy
	// as it arrives, and the hub sends each blob once.
	img2, err := random.Image(2_000_000, 3)
	if err != nil {
		t.Fatal(err)
	}
	_, blobBytes2 := imageBlobs(t, img2)
	ref2, err := name.ParseReference(hubMirror+"/team/big:v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref2, img2, remote.WithAuth(&authn.Basic{Username: "outpost", Password: hub.token}), remote.WithContext(t.Context())); err != nil {
		t.Fatal(err)
	}
	before := hubMetric(t, hub, sample)
	var wg sync.WaitGroup
	for _, m := range []string{mirror1, mirror2} {
		wg.Go(func() { pull(t, m, "team/big:v1", img2) })
	}
	wg.Wait()
	if got := hubMetric(t, hub, sample) - before; got != float64(blobBytes2) {
		t.Fatalf("two nodes pulling at once made the hub send %v blob bytes, want the image's %d once", got, blobBytes2)
	}
}

// TestImagesConfigNamesFlags checks the image cache's settings are
// validated with the flag in each message.
func TestImagesConfigNamesFlags(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		flag string
		mod  func(*node.Config)
	}{
		{"--registry-addr", func(c *node.Config) { c.RegistryAddr = "5000" }},
		{"--cache-size", func(c *node.Config) { c.CacheSize = -1 }},
		{"--registry-default-ns", func(c *node.Config) { c.RegistryDefaultNS = "Docker.IO/x" }},
		{"--registry-push", func(c *node.Config) { c.RegistryPush, c.RegistryAddr = true, "" }},
	} {
		t.Run(tc.flag, func(t *testing.T) {
			t.Parallel()
			cfg := node.DefaultConfig()
			tc.mod(&cfg)
			if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.flag) {
				t.Fatalf("Validate: %v, want an error naming %s", err, tc.flag)
			}
		})
	}
	cfg := node.DefaultConfig()
	if cfg.RegistryAddr != node.DefaultRegistryAddr || cfg.CacheSize != node.DefaultCacheSize {
		t.Fatalf("defaults: %q %d", cfg.RegistryAddr, cfg.CacheSize)
	}
}

// TestRegistryPushOnlyOnHub checks an edge node refuses --registry-push.
func TestRegistryPushOnlyOnHub(t *testing.T) {
	t.Parallel()
	hub := startNode(t)
	token := hub.createToken(t, "p", 0, time.Time{})
	cfg := joinConfig(t, hub.hubQUIC(t), token, "p-1", "")
	cfg.RegistryPush = true
	cfg.RegistryAddr, cfg.RegistryAddrSet = net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t, true))), true
	if err := node.Join(t.Context(), cfg, nil); err != nil {
		t.Fatal(err)
	}
	_, err := newNode(t, cfg, nil)
	if err == nil || !strings.Contains(err.Error(), "--registry-push") {
		t.Fatalf("node.New with --registry-push on an edge node: %v", err)
	}
}

// skopeo runs skopeo with a permissive signature policy, or skips the
// test when it is not installed (apt-get install -y skopeo).
func skopeo(t *testing.T, args ...string) (string, error) {
	t.Helper()
	bin, err := exec.LookPath("skopeo")
	if err != nil {
		t.Fatal("skopeo is not installed: apt-get install -y skopeo (scripts/test-deps.sh installs it)")
	}
	policy := filepath.Join(t.TempDir(), "policy.json")
	if err := os.WriteFile(policy, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"--policy", policy}, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "TMPDIR="+t.TempDir())
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestImagesSkopeo pushes with skopeo and an API token to the hub's own
// registry (a wrong token is refused), then copies the image back out
// through a site node's mirror, byte for byte.
func TestImagesSkopeo(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("skopeo"); err != nil {
		t.Fatal("skopeo is not installed: apt-get install -y skopeo (scripts/test-deps.sh installs it)")
	}
	src := t.TempDir()
	// skopeo's oci: transport wants OCI media types (random.Image makes
	// Docker ones).
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	var layers []v1.Layer
	for range 2 {
		l, err := random.Layer(200_000, types.OCILayer)
		if err != nil {
			t.Fatal(err)
		}
		layers = append(layers, l)
	}
	img, err := mutate.AppendLayers(base, layers...)
	if err != nil {
		t.Fatal(err)
	}
	p, err := layout.Write(src, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "v1"})); err != nil {
		t.Fatal(err)
	}
	var hubMirror, mirror string
	hub := startNode(t, mirrorAt(t, &hubMirror), func(c *node.Config) { c.RegistryPush = true })
	dst := "docker://" + hubMirror + "/team/tool:v1"
	if out, err := skopeo(t, "copy", "--dest-tls-verify=false", "--dest-creds", "outpost:at-nope.secret", "oci:"+src+":v1", dst); err == nil || !strings.Contains(strings.ToLower(out), "unauthorized") {
		t.Fatalf("skopeo push with a wrong token: %v\n%q", err, out)
	}
	if out, err := skopeo(t, "copy", "--dest-tls-verify=false", "--dest-creds", "outpost:"+hub.token, "oci:"+src+":v1", dst); err != nil {
		t.Fatalf("skopeo push: %v\n%s", err, out)
	}

	token := hub.createToken(t, "s", 0, time.Time{})
	startEdge(t, hub.hubQUIC(t), token, "s-1", mirrorAt(t, &mirror))
	out, err := skopeo(t, "inspect", "--tls-verify=false", "--raw", "docker://"+mirror+"/team/tool:v1")
	if err != nil {
		t.Fatalf("skopeo inspect through the site's mirror: %v\n%s", err, out)
	}
	raw, _ := img.RawManifest()
	if strings.TrimSpace(out) != strings.TrimSpace(string(raw)) {
		t.Fatalf("manifest through the mirror:\n%s\nwant\n%s", out, raw)
	}
	back := t.TempDir()
	if out, err := skopeo(t, "copy", "--src-tls-verify=false", "docker://"+mirror+"/team/tool:v1", "oci:"+back+":v1"); err != nil {
		t.Fatalf("skopeo copy out through the mirror: %v\n%s", err, out)
	}
	got, err := layout.ImageIndexFromPath(back)
	if err != nil {
		t.Fatal(err)
	}
	m, err := got.IndexManifest()
	if err != nil || len(m.Manifests) != 1 {
		t.Fatalf("copied layout: %v %v", m, err)
	}
	want, _ := img.Digest()
	if m.Manifests[0].Digest != want {
		t.Fatalf("copied %s, want %s", m.Manifests[0].Digest, want)
	}
	pulled, err := got.Image(want)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(pulled); err != nil {
		t.Fatal(err)
	}
}

// TestImagesOriginThroughHub pulls an image of an origin registry through
// a site node whose --registry-default-ns names that registry (as Docker's
// registry-mirrors sends no ns): the site node asks the hub tier, the hub
// fetches from the origin, and the site node never reaches the origin.
func TestImagesOriginThroughHub(t *testing.T) {
	t.Parallel()
	origin := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(origin.Close)
	originHost := strings.TrimPrefix(origin.URL, "http://")
	img, err := random.Image(250_000, 2)
	if err != nil {
		t.Fatal(err)
	}
	_, blobBytes := imageBlobs(t, img)
	ref, err := name.ParseReference(originHost+"/library/app:v2", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img, remote.WithContext(t.Context())); err != nil {
		t.Fatal(err)
	}

	hub := startNode(t)
	token := hub.createToken(t, "o", 0, time.Time{})
	var mirror string
	e := startEdge(t, hub.hubQUIC(t), token, "o-1", mirrorAt(t, &mirror), func(c *node.Config) { c.RegistryDefaultNS = originHost })
	pull(t, mirror, "library/app:v2", img)
	st, _ := e.ImageStats()
	if got := st.Fetch.Tiers["hub"].Bytes; got != uint64(blobBytes) {
		t.Fatalf("o-1 received %d blob bytes from the hub tier, want %d (tiers %+v)", got, blobBytes, st.Fetch.Tiers)
	}
	if o := st.Fetch.Tiers["origin"]; o.Bytes != 0 || o.BlobHits != 0 || o.ManifestHits != 0 {
		t.Fatalf("o-1 went to the origin itself: %+v", o)
	}
	if got := hubMetric(t, hub, `outpost_images_fetch_tier_bytes_total{tier="origin"}`); got != float64(blobBytes) {
		t.Fatalf("the hub received %v blob bytes from the origin, want %d", got, blobBytes)
	}
}
