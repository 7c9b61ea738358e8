package fetch

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	"github.com/outpost-mesh/outpost/images/registry"
	"github.com/outpost-mesh/outpost/images/store"
	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves a goroutine running. A
// server connection that closes after a request body it did not read
// (an upload over the limit) lingers 500 ms in closeWriteAndWait, longer
// than goleak retries: it ends by itself and is not a leak.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("net/http.(*conn).closeWriteAndWait"))
}

// openStore opens a store in a temp dir over a small on-disk Badger.
func openStore(t testing.TB) (*store.Store, string) {
	t.Helper()
	db, err := badger.Open(badger.DefaultOptions(t.TempDir()).WithLogger(nil).
		WithMemTableSize(8 << 20).WithValueThreshold(64 << 10).WithValueLogFileSize(32 << 20).
		WithBlockCacheSize(1 << 20).WithIndexCacheSize(1 << 20))
	if err != nil {
		t.Fatal(err)
	}
	cfg := store.DefaultConfig()
	cfg.Dir = t.TempDir()
	st, err := store.New(cfg, db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		st.Close()
		db.Close()
	})
	return st, cfg.Dir
}

// serve runs h on 127.0.0.1 until the test ends.
func serve(t testing.TB, h http.Handler) (addr string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return ln.Addr().String()
}

// run runs src until the test ends.
func run(t testing.TB, src *Source) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// node is one Outpost node as the images subsystem sees it: a store, the
// full chain behind its local mirror, and a peer endpoint that serves only
// what the store holds.
type node struct {
	name   string
	Dir    string // the store's directory
	Store  *store.Store
	Source *Source
	Mirror string // host:port of the mirror (the full chain)
	// PeerTier reaches this node's peer endpoint, as another node's
	// PeerFinder would hand it out.
	PeerTier *HTTPTier
	// HubTier reaches this node's mirror, as a site reaches the hub.
	HubTier *HTTPTier
}

// newNode starts a node; mod adjusts its chain's config (Store is set),
// defaultNS is the mirror's DefaultNamespace (the origin's ns, so that
// plain clients pull through it).
func newNode(t testing.TB, name, defaultNS string, mod func(*Config)) *node {
	t.Helper()
	st, dir := openStore(t)
	cfg := DefaultConfig()
	cfg.Store = st
	cfg.Self = name
	if mod != nil {
		mod(&cfg)
	}
	src, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	run(t, src)
	rc := registry.DefaultConfig()
	rc.DefaultNamespace = defaultNS
	mirror, err := registry.New(rc, src)
	if err != nil {
		t.Fatal(err)
	}
	lcfg := DefaultConfig()
	lcfg.Store = st
	local, err := New(lcfg)
	if err != nil {
		t.Fatal(err)
	}
	run(t, local)
	peerH, err := registry.New(registry.DefaultConfig(), local)
	if err != nil {
		t.Fatal(err)
	}
	n := &node{name: name, Dir: dir, Store: st, Source: src, Mirror: serve(t, mirror)}
	n.PeerTier = httpTier(t, name, "http://"+serve(t, peerH))
	n.HubTier = httpTier(t, "hub", "http://"+n.Mirror)
	return n
}

// httpTier returns an HTTP tier with its own transport, closed at the end.
func httpTier(t testing.TB, name, u string) *HTTPTier {
	t.Helper()
	tr := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(tr.CloseIdleConnections)
	tier, err := NewHTTPTier(HTTPTierConfig{Name: name, URL: u, Client: &http.Client{Transport: tr}})
	if err != nil {
		t.Fatal(err)
	}
	return tier
}

// newOrigin returns an origin tier with its own transport.
func newOrigin(t testing.TB, mod func(*OriginConfig)) *Origin {
	t.Helper()
	tr := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(tr.CloseIdleConnections)
	cfg := OriginConfig{Transport: tr}
	if mod != nil {
		mod(&cfg)
	}
	o, err := NewOrigin(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// distribution starts CNCF Distribution (Debian's docker-registry) on its
// own loopback address, or skips the test when it is not installed.
// extra is appended to its config file.
func distribution(t testing.TB, extra string) string {
	t.Helper()
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		t.Fatal("CNCF Distribution is not installed: apt-get install -y docker-registry (scripts/test-deps.sh installs it)")
	}
	n, _ := rand.Int(rand.Reader, big.NewInt(200))
	ip := fmt.Sprintf("127.0.0.%d", 20+n.Int64())
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	dir := t.TempDir()
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
  secret: outpost-test
%s`, filepath.Join(dir, "data"), addr, extra)
	path := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd := exec.Command(bin, "serve", path)
	cmd.Stdout, cmd.Stderr = &out, &out
	dieWithTest(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	c := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	eventually(t, "docker-registry answers on "+addr, func() bool {
		select {
		case <-exited:
			t.Fatalf("docker-registry exited:\n%s", out.String())
		default:
		}
		resp, err := c.Get("http://" + addr + "/v2/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200 || resp.StatusCode == 401
	})
	return addr
}

// originProxy sits in front of an origin registry, counts the blob
// requests and bytes it passes, can throttle them, and can go down (it
// then drops every connection, as an unreachable WAN does).
type originProxy struct {
	Addr string // host:port: the ns clients use for this origin
	down atomic.Bool
	// throttle, if set, pauses this long after every 64 KiB of a blob.
	throttle atomic.Int64

	mu        sync.Mutex
	blobGets  map[digest.Digest]int
	blobBytes map[digest.Digest]int64
	ranges    map[digest.Digest][]string
	manifests int
}

func newOriginProxy(t testing.TB, target string) *originProxy {
	t.Helper()
	p := &originProxy{blobGets: map[digest.Digest]int{}, blobBytes: map[digest.Digest]int64{}, ranges: map[digest.Digest][]string{}}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(tr.CloseIdleConnections)
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: target})
	rp.Transport = tr
	rp.ErrorLog = nil
	p.Addr = serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p.down.Load() {
			if hj, ok := w.(http.Hijacker); ok {
				if conn, _, err := hj.Hijack(); err == nil {
					conn.Close()
					return
				}
			}
			http.Error(w, "down", http.StatusBadGateway)
			return
		}
		if strings.Contains(r.URL.Path, "/manifests/") {
			p.mu.Lock()
			p.manifests++
			p.mu.Unlock()
		}
		i := strings.LastIndex(r.URL.Path, "/blobs/")
		if i < 0 || r.Method != http.MethodGet || strings.Contains(r.URL.Path, "/uploads") {
			rp.ServeHTTP(w, r)
			return
		}
		d := digest.Digest(r.URL.Path[i+len("/blobs/"):])
		p.mu.Lock()
		p.blobGets[d]++
		p.ranges[d] = append(p.ranges[d], r.Header.Get("Range"))
		p.mu.Unlock()
		rp.ServeHTTP(&countingWriter{ResponseWriter: w, p: p, d: d}, r)
	}))
	return p
}

func (p *originProxy) gets(d digest.Digest) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.blobGets[d]
}

func (p *originProxy) bytesOf(d digest.Digest) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.blobBytes[d]
}

func (p *originProxy) totalGets() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, k := range p.blobGets {
		n += k
	}
	return n
}

type countingWriter struct {
	http.ResponseWriter
	p *originProxy
	d digest.Digest
}

func (w *countingWriter) Write(b []byte) (int, error) {
	written := 0
	for len(b) > 0 {
		chunk := b[:min(len(b), 64<<10)]
		n, err := w.ResponseWriter.Write(chunk)
		written += n
		w.p.mu.Lock()
		w.p.blobBytes[w.d] += int64(n)
		w.p.mu.Unlock()
		if err != nil {
			return written, err
		}
		b = b[n:]
		if d := time.Duration(w.p.throttle.Load()); d > 0 {
			if f, ok := w.ResponseWriter.(http.Flusher); ok {
				f.Flush()
			}
			time.Sleep(d)
		}
	}
	return written, nil
}

func (w *countingWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// clientTransport is a transport for test clients, closed at the end.
func clientTransport(t testing.TB) *http.Transport {
	t.Helper()
	tr := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

// testImage is what pushImage pushed.
type testImage struct {
	Ref    name.Reference
	Index  v1.Hash
	Images []v1.Hash
	// Blobs are every layer and config, by digest, with their bytes.
	Blobs map[digest.Digest][]byte
	// Layers lists the layer digests, biggest first.
	Layers []digest.Digest
}

// pushImage pushes an OCI index of one image per platform (linux/amd64,
// linux/arm64, ...), each with layers of the given sizes, to
// registry/repo:tag with go-containerregistry.
func pushImage(t testing.TB, registryAddr, repo, tag string, platforms []string, layerSizes ...int64) testImage {
	t.Helper()
	return pushImageAuth(t, authn.Anonymous, registryAddr, repo, tag, platforms, layerSizes...)
}

// pushImageAuth is pushImage with credentials.
func pushImageAuth(t testing.TB, auth authn.Authenticator, registryAddr, repo, tag string, platforms []string, layerSizes ...int64) testImage {
	t.Helper()
	ref, err := name.ParseReference(registryAddr+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img := testImage{Ref: ref, Blobs: map[digest.Digest][]byte{}}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, plat := range platforms {
		goos, arch, _ := strings.Cut(plat, "/")
		im := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
		for _, size := range layerSizes {
			l, err := random.Layer(size, types.OCILayer)
			if err != nil {
				t.Fatal(err)
			}
			if im, err = mutate.AppendLayers(im, l); err != nil {
				t.Fatal(err)
			}
		}
		cf, err := im.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		cf = cf.DeepCopy()
		cf.OS, cf.Architecture = goos, arch
		if im, err = mutate.ConfigFile(im, cf); err != nil {
			t.Fatal(err)
		}
		h, err := im.Digest()
		if err != nil {
			t.Fatal(err)
		}
		img.Images = append(img.Images, h)
		layers, _ := im.Layers()
		for _, l := range layers {
			b := readAllT(t, l.Compressed)
			d := digest.FromBytes(b)
			img.Blobs[d] = b
			img.Layers = append(img.Layers, d)
		}
		cfg, _ := im.RawConfigFile()
		img.Blobs[digest.FromBytes(cfg)] = cfg
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: im, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: goos, Architecture: arch}}})
	}
	for i := range img.Layers {
		for j := i + 1; j < len(img.Layers); j++ {
			if len(img.Blobs[img.Layers[j]]) > len(img.Blobs[img.Layers[i]]) {
				img.Layers[i], img.Layers[j] = img.Layers[j], img.Layers[i]
			}
		}
	}
	if img.Index, err = idx.Digest(); err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(ref, idx, remote.WithTransport(clientTransport(t)), remote.WithAuth(auth)); err != nil {
		t.Fatal(err)
	}
	return img
}

func readAllT(t testing.TB, open func() (io.ReadCloser, error)) []byte {
	t.Helper()
	rc, err := open()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// pullAll pulls ref's index and every platform's image through a mirror
// with go-containerregistry, reading every layer (remote verifies each
// digest), and checks the bytes against want. It returns the index digest.
func pullAll(t testing.TB, mirror, repo, ref string, want testImage) v1.Hash {
	t.Helper()
	sep := ":"
	if strings.Contains(ref, ":") {
		sep = "@"
	}
	r, err := name.ParseReference(mirror + "/" + repo + sep + ref)
	if err != nil {
		t.Fatal(err)
	}
	opts := []remote.Option{remote.WithTransport(clientTransport(t)), remote.WithContext(context.Background())}
	idx, err := remote.Index(r, opts...)
	if err != nil {
		t.Fatalf("pull index %s: %v", r, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, desc := range im.Manifests {
		img, err := idx.Image(desc.Digest)
		if err != nil {
			t.Fatalf("pull image %s: %v", desc.Digest, err)
		}
		cfg, err := img.RawConfigFile()
		if err != nil {
			t.Fatalf("pull config of %s: %v", desc.Digest, err)
		}
		checkBlob(t, want, cfg)
		layers, err := img.Layers()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range layers {
			checkBlob(t, want, readAllT(t, l.Compressed))
		}
	}
	h, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func checkBlob(t testing.TB, want testImage, b []byte) {
	t.Helper()
	if want.Blobs == nil {
		return
	}
	d := digest.FromBytes(b)
	if w, ok := want.Blobs[d]; !ok || !bytes.Equal(w, b) {
		t.Fatalf("pulled a blob %s that was not pushed", d)
	}
}

// get sends a GET (or HEAD) and returns the status, headers and body; a
// transfer that breaks returns err.
func get(t testing.TB, method, u string, hdr ...string) (*http.Response, []byte, error) {
	t.Helper()
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := (&http.Client{Transport: clientTransport(t)}).Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

// ociCode returns the first OCI error code of a body.
func ociCode(b []byte) string {
	var body struct {
		Errors []struct {
			Code string `json:"code"`
		} `json:"errors"`
	}
	if json.Unmarshal(b, &body) != nil || len(body.Errors) == 0 {
		return ""
	}
	return body.Errors[0].Code
}

// eventually polls cond until it holds or a few seconds pass.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// peersFrom is a PeerFinder over other nodes' stores, as the site's blob
// index would answer: every node that holds (or is writing) d.
func peersFrom(nodes ...*node) PeerFinder {
	return PeerFinderFunc(func(_ context.Context, d digest.Digest) []Tier {
		var out []Tier
		for _, n := range nodes {
			if _, err := n.Store.Stat(d); err == nil {
				out = append(out, n.PeerTier)
			} else if _, err := n.Store.ManifestByDigest(d); err == nil {
				out = append(out, n.PeerTier)
			}
		}
		return out
	})
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *fakeClock { return &fakeClock{now: time.Unix(1_800_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// errBroken is what a breaking tier's body fails with.
var errBroken = errors.New("connection reset by peer (test)")
