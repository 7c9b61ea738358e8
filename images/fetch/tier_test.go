package fetch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	"github.com/outpost-mesh/outpost/images/registry"
	"github.com/outpost-mesh/outpost/images/store"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestHTTPTierAnswers drives an HTTP tier against a server that answers
// the ways registries do, and checks what the chain is told.
func TestHTTPTierAnswers(t *testing.T) {
	t.Parallel()
	blob := bytes.Repeat([]byte("0123456789"), 1000)
	var (
		mu     sync.Mutex
		lastNS []string
	)
	addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		lastNS = append(lastNS, fmt.Sprintf("%v:%q", r.URL.Query().Has("ns"), r.URL.Query().Get("ns")))
		mu.Unlock()
		repo, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/v2/"), "/")
		switch repo {
		case "ranged": // honours Range
			http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(blob))
		case "whole": // ignores Range
			w.Header().Set("Content-Length", fmt.Sprint(len(blob)))
			_, _ = w.Write(blob)
		case "wrongrange":
			w.Header().Set("Content-Range", fmt.Sprintf("bytes 0-%d/%d", len(blob)-1, len(blob)))
			w.WriteHeader(http.StatusPartialContent)
			_, _ = w.Write(blob)
		case "unknown":
			w.WriteHeader(404)
			_, _ = w.Write([]byte(`{"errors":[{"code":"BLOB_UNKNOWN","message":"no"}]}`))
		case "plain404":
			w.WriteHeader(404)
		case "locked":
			w.WriteHeader(401)
		case "busy":
			w.WriteHeader(429)
		case "broken":
			w.WriteHeader(500)
		case "huge":
			w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
			_, _ = w.Write(bytes.Repeat([]byte(" "), store.MaxManifestSize+1))
		case "paged":
			if r.URL.Query().Get("last") == "" {
				w.Header().Set("Link", `</v2/paged/tags/list?n=2&last=b&ns=x.io>; rel="next"`)
				_, _ = w.Write([]byte(`{"name":"paged","tags":["a","b"]}`))
				return
			}
			_, _ = w.Write([]byte(`{"name":"paged","tags":["c"]}`))
		}
	}))
	tier := httpTier(t, "peer-x", "http://"+addr)
	ctx := t.Context()
	d := digest.FromBytes(blob)

	for _, repo := range []string{"ranged", "whole"} {
		rc, total, err := tier.Blob(ctx, "docker.io", repo, d, 1234)
		if err != nil {
			t.Fatalf("%s: %v", repo, err)
		}
		got, _ := io.ReadAll(rc)
		rc.Close()
		if total != int64(len(blob)) || !bytes.Equal(got, blob[1234:]) {
			t.Fatalf("%s from offset 1234: total %d, %d bytes", repo, total, len(got))
		}
	}
	if _, _, err := tier.Blob(ctx, "docker.io", "wrongrange", d, 1234); err == nil {
		t.Fatal("a 206 from another offset was accepted")
	}
	for _, tc := range []struct {
		repo string
		want error
	}{
		{"unknown", registry.ErrBlobUnknown},
		{"plain404", registry.ErrBlobUnknown},
		{"locked", registry.ErrDenied},
		{"busy", registry.ErrTooManyRequests},
	} {
		if _, _, err := tier.Blob(ctx, "", tc.repo, d, 0); !errors.Is(err, tc.want) {
			t.Fatalf("%s: %v, want %v", tc.repo, err, tc.want)
		}
	}
	if _, _, err := tier.Blob(ctx, "", "broken", d, 0); err == nil || isAnswer(err) {
		t.Fatalf("a 500 is %v: it must not count as an answer", err)
	}
	if _, err := tier.Manifest(ctx, "", "huge", "v1"); !errors.Is(err, registry.ErrManifestTooLarge) {
		t.Fatalf("a manifest over 4 MiB: %v", err)
	}
	tags, err := tier.Tags(ctx, "x.io", "paged")
	if err != nil || strings.Join(tags, ",") != "a,b,c" {
		t.Fatalf("paged tags: %v %v", tags, err)
	}
	// Every request names its namespace, the hub's own ("") too.
	mu.Lock()
	defer mu.Unlock()
	for _, ns := range lastNS {
		if !strings.HasPrefix(ns, "true:") {
			t.Fatalf("a request without ns: %v", lastNS)
		}
	}
}

// TestOriginNames checks how namespaces and names become registries.
func TestOriginNames(t *testing.T) {
	t.Parallel()
	o := newOrigin(t, func(c *OriginConfig) { c.Insecure = func(ns string) bool { return ns == "plain.example:5000" } })
	for _, tc := range []struct {
		ns, repo, registry, repository, scheme string
	}{
		{"docker.io", "nginx", "index.docker.io", "library/nginx", "https"},
		{"docker.io", "library/nginx", "index.docker.io", "library/nginx", "https"},
		{"ghcr.io", "org/app", "ghcr.io", "org/app", "https"},
		{"plain.example:5000", "app", "plain.example:5000", "app", "http"},
		{"127.0.0.1:5000", "app", "127.0.0.1:5000", "app", "http"},
	} {
		r, err := o.Repository(tc.ns, tc.repo)
		if err != nil {
			t.Fatal(err)
		}
		if r.RegistryStr() != tc.registry || r.RepositoryStr() != tc.repository || r.Scheme() != tc.scheme {
			t.Fatalf("%s + %s: %s %s %s", tc.ns, tc.repo, r.RegistryStr(), r.RepositoryStr(), r.Scheme())
		}
	}
	ctx := t.Context()
	if _, err := o.Manifest(ctx, "", "app", "v1"); !errors.Is(err, ErrNotServed) {
		t.Fatalf("the hub's own registry at the origin: %v", err)
	}
	if _, _, err := o.Blob(ctx, "", "app", digest.FromString("x"), 0); !errors.Is(err, ErrNotServed) {
		t.Fatalf("the hub's own registry at the origin: %v", err)
	}
	for _, tc := range []struct {
		from, to string
		ok       bool
	}{
		{"https://registry.example/v2/x", "https://cdn.example/blob", true},
		{"https://registry.example/v2/x", "http://169.254.169.254/latest", false},
		{"https://registry.example/v2/x", "http://10.0.0.1/x", false},
		{"http://10.0.0.5:5000/v2/x", "http://10.0.0.6/x", true},
	} {
		from, _ := url.Parse(tc.from)
		to, _ := url.Parse(tc.to)
		err := checkRedirect(&http.Request{URL: to}, []*http.Request{{URL: from}})
		if (err == nil) != tc.ok {
			t.Fatalf("redirect %s -> %s: %v", tc.from, tc.to, err)
		}
	}
}

// TestHubOwnRegistry pulls an image pushed to the hub's own registry
// (namespace "") through a site node: the hub tier serves it, the origin
// tier is skipped (it has no origin). It needs no external registry.
func TestHubOwnRegistry(t *testing.T) {
	t.Parallel()
	hubStore, _ := openStore(t)
	rc := registry.DefaultConfig()
	rc.Push, rc.Store = true, hubStore
	hubH, err := registry.New(rc, registry.NewStoreSource(hubStore))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hubH.Close() })
	hubAddr := serve(t, hubH)
	want := pushImage(t, hubAddr, "team/app", "v1", []string{"linux/amd64", "linux/arm64"}, 100_000, 2000)

	a := newNode(t, "a", "", func(c *Config) {
		c.Upstream = []Tier{httpTier(t, "hub", "http://"+hubAddr), newOrigin(t, nil)}
	})
	if got := pullAll(t, a.Mirror, "team/app", "v1", want); got != want.Index {
		t.Fatalf("pulled %s", got)
	}
	st := a.Source.Stats()
	if st.Tiers["origin"].BlobMisses != 0 || st.Tiers["origin"].ManifestMisses != 0 || st.Tiers["hub"].Bytes == 0 {
		t.Fatalf("stats: %+v", st.Tiers)
	}
	// Tags come from the hub.
	r, _ := name.NewRepository(a.Mirror + "/team/app")
	tags, err := remote.List(r, remote.WithTransport(clientTransport(t)))
	if err != nil || strings.Join(tags, ",") != "v1" {
		t.Fatalf("tags: %v %v", tags, err)
	}
	// A peer-facing (store only) source never fetches.
	local, err := New(Config{Store: a.Store, TagTTL: 1, IdleTimeout: 1, MaxSizes: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := local.Blob(context.Background(), "", "team/app", digest.FromString("absent")); !errors.Is(err, registry.ErrBlobUnknown) {
		t.Fatalf("store-only source, absent blob: %v", err)
	}
	if _, err := local.Manifest(context.Background(), "", "team/app", "v1"); err != nil {
		t.Fatalf("store-only source, known tag: %v", err)
	}
	if _, err := local.Manifest(context.Background(), "", "team/app", "v2"); !errors.Is(err, registry.ErrManifestUnknown) {
		t.Fatalf("store-only source, unknown tag: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	st, _ := openStore(t)
	ok := DefaultConfig()
	ok.Store = st
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"no store", func(c *Config) { c.Store = nil }, "Store is required"},
		{"negative ttl", func(c *Config) { c.TagTTL = -1 }, "TagTTL"},
		{"no idle timeout", func(c *Config) { c.IdleTimeout = 0 }, "IdleTimeout"},
		{"no sizes", func(c *Config) { c.MaxSizes = 0 }, "MaxSizes"},
		{"nil tier", func(c *Config) { c.Upstream = []Tier{nil} }, "Upstream[0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.mod(&c)
			if _, err := New(c); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want an error naming %s", err, tc.want)
			}
		})
	}
	if _, err := New(ok); err != nil {
		t.Fatal(err)
	}
	if _, err := NewHTTPTier(HTTPTierConfig{Name: "x", URL: "ftp://x"}); err == nil {
		t.Fatal("an ftp URL was accepted")
	}
}

// hangingTier sends the first n bytes of a blob, then nothing, until its
// context is canceled.
type hangingTier struct {
	Tier
	n int64
}

func (t hangingTier) Name() string { return "hanging" }

func (t hangingTier) Blob(ctx context.Context, ns, repo string, d digest.Digest, offset int64) (io.ReadCloser, int64, error) {
	rc, size, err := t.Tier.Blob(ctx, ns, repo, d, offset)
	if err != nil {
		return nil, 0, err
	}
	return struct {
		io.Reader
		io.Closer
	}{io.MultiReader(io.LimitReader(rc, t.n), ctxReader{ctx}), rc}, size, nil
}

type ctxReader struct{ ctx context.Context }

func (r ctxReader) Read([]byte) (int, error) {
	<-r.ctx.Done()
	return 0, r.ctx.Err()
}

// TestIdleSourceAbandoned: a source that stops sending is given up after
// IdleTimeout and the next one resumes where it stopped; the metrics
// show it.
func TestIdleSourceAbandoned(t *testing.T) {
	t.Parallel()
	hubStore, _ := openStore(t)
	rc := registry.DefaultConfig()
	rc.Push, rc.Store = true, hubStore
	hubH, err := registry.New(rc, registry.NewStoreSource(hubStore))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hubH.Close() })
	hubAddr := serve(t, hubH)
	want := pushImage(t, hubAddr, "app", "v1", []string{"linux/amd64"}, 500_000)
	hub := httpTier(t, "hub", "http://"+hubAddr)
	a := newNode(t, "a", "", func(c *Config) {
		c.Upstream = []Tier{hangingTier{Tier: hub, n: 100_000}, hub}
		c.IdleTimeout = 200 * time.Millisecond
	})
	layer := want.Layers[0]
	resp, body, err := get(t, "GET", "http://"+a.Mirror+"/v2/app/blobs/"+layer.String())
	if err != nil || resp.StatusCode != 200 || !bytes.Equal(body, want.Blobs[layer]) {
		t.Fatalf("GET: %v, %d bytes", err, len(body))
	}
	st := a.Source.Stats()
	if st.Resumes != 1 || st.Tiers["hanging"].Bytes != 100_000 || st.Tiers["hub"].Bytes != uint64(len(body)-100_000) {
		t.Fatalf("stats: %+v", st)
	}
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(a.Source.Collector()); err != nil {
		t.Fatal(err)
	}
	n, err := testutil.GatherAndCount(reg, "outpost_images_fetch_tier_bytes_total", "outpost_images_fetch_resumes_total")
	if err != nil || n != 3 {
		t.Fatalf("gathered %d series: %v", n, err)
	}
}
