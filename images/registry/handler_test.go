package registry

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// errorCode reads the code of an OCI error body.
func errorCode(t testing.TB, body []byte) string {
	t.Helper()
	var eb errorBody
	if err := json.Unmarshal(body, &eb); err != nil || len(eb.Errors) != 1 || eb.Errors[0].Message == "" {
		t.Fatalf("not an OCI error body: %q (%v)", body, err)
	}
	return eb.Errors[0].Code
}

func basic(token string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte("anyone:"+token))
}

func TestErrorCodes(t *testing.T) {
	t.Parallel()
	push := newServer(t, func(c *Config) {
		c.Push = true
		c.Authorize = tokenAuth
		c.MaxUploadSize = 1 << 20
	})
	auth := []string{"Authorization", basic(testToken)}
	img := pushSampleImage(t, push.URL, "library/app", auth...)
	pull := newServerOn(t, push.Store, nil)
	missing := digest.FromString("not pushed")
	cfgBlob := []byte(`{"architecture":"amd64"}`)
	cfgDigest := pushBlob(t, push.URL, "library/app", cfgBlob, auth...)
	manifestWith := func(layer digest.Digest) []byte {
		m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest,
			Config: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: cfgDigest, Size: int64(len(cfgBlob))},
			Layers: []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: layer, Size: 10}}}
		m.SchemaVersion = 2
		return mustJSON(t, m)
	}
	good := manifestWith(img.LayerDigest)
	ociCT := []string{"Content-Type", ocispec.MediaTypeImageManifest}

	tests := []struct {
		name    string
		srv     *server
		method  string
		path    string
		body    []byte
		hdr     []string
		status  int
		code    string
		wwwAuth bool
	}{
		{name: "name with uppercase", method: "GET", path: "/v2/Library/app/manifests/v1", status: 400, code: "NAME_INVALID"},
		{name: "name escaping a directory", method: "GET", path: "/v2/library/%2E%2E/app/manifests/v1", status: 400, code: "NAME_INVALID"},
		{name: "name with an empty component", method: "GET", path: "/v2/library//app/tags/list", status: 400, code: "NAME_INVALID"},
		{name: "name too long", method: "GET", path: "/v2/" + strings.Repeat("a", 256) + "/tags/list", status: 400, code: "NAME_INVALID"},
		{name: "ns that is no host", method: "GET", path: "/v2/library/app/tags/list?ns=../../x", status: 400, code: "NAME_INVALID"},
		{name: "ns on the base route", method: "GET", path: "/v2/?ns=a/b", status: 400, code: "NAME_INVALID"},
		{name: "malformed blob digest", method: "GET", path: "/v2/library/app/blobs/sha256:zz", status: 400, code: "DIGEST_INVALID"},
		{name: "blob digest of another algorithm", method: "GET", path: "/v2/library/app/blobs/md5:d41d8cd98f00b204e9800998ecf8427e", status: 400, code: "DIGEST_INVALID"},
		{name: "malformed manifest digest", method: "GET", path: "/v2/library/app/manifests/sha256:baddigeststring", status: 400, code: "DIGEST_INVALID"},
		{name: "malformed referrers subject", method: "GET", path: "/v2/library/app/referrers/sha256:nope", status: 400, code: "DIGEST_INVALID"},
		{name: "manifest put with a wrong digest", srv: push, method: "PUT", path: "/v2/library/app/manifests/" + missing.String(), body: good, hdr: append(ociCT, auth...), status: 400, code: "DIGEST_INVALID"},
		{name: "blob unknown", method: "GET", path: "/v2/library/app/blobs/" + missing.String(), status: 404, code: "BLOB_UNKNOWN"},
		{name: "blob of another repository", method: "GET", path: "/v2/library/other/blobs/" + img.LayerDigest.String(), status: 404, code: "BLOB_UNKNOWN"},
		{name: "blob of another registry", method: "GET", path: "/v2/library/app/blobs/" + img.LayerDigest.String() + "?ns=docker.io", status: 404, code: "BLOB_UNKNOWN"},
		{name: "manifest unknown by tag", method: "GET", path: "/v2/library/app/manifests/nope", status: 404, code: "MANIFEST_UNKNOWN"},
		{name: "manifest unknown by digest", method: "GET", path: "/v2/library/app/manifests/" + missing.String(), status: 404, code: "MANIFEST_UNKNOWN"},
		{name: "malformed tag", method: "GET", path: "/v2/library/app/manifests/-x", status: 404, code: "MANIFEST_UNKNOWN"},
		{name: "manifest not JSON", srv: push, method: "PUT", path: "/v2/library/app/manifests/bad", body: []byte("{"), hdr: append(ociCT, auth...), status: 400, code: "MANIFEST_INVALID"},
		{name: "manifest type unsupported", srv: push, method: "PUT", path: "/v2/library/app/manifests/bad", body: []byte(`{"schemaVersion":1}`), hdr: append([]string{"Content-Type", "application/vnd.docker.distribution.manifest.v1+json"}, auth...), status: 400, code: "MANIFEST_INVALID"},
		{name: "manifest type contradicts the body", srv: push, method: "PUT", path: "/v2/library/app/manifests/bad", body: good, hdr: append([]string{"Content-Type", ocispec.MediaTypeImageIndex}, auth...), status: 400, code: "MANIFEST_INVALID"},
		{name: "manifest put with a malformed tag", srv: push, method: "PUT", path: "/v2/library/app/manifests/.bad", body: good, hdr: append(ociCT, auth...), status: 400, code: "MANIFEST_INVALID"},
		{name: "manifest over 4 MiB", srv: push, method: "PUT", path: "/v2/library/app/manifests/big", body: bytes.Repeat([]byte(" "), 4<<20+1), hdr: append(ociCT, auth...), status: 413, code: "MANIFEST_INVALID"},
		{name: "manifest referencing a missing blob", srv: push, method: "PUT", path: "/v2/library/app/manifests/v2", body: manifestWith(missing), hdr: append(ociCT, auth...), status: 400, code: "MANIFEST_BLOB_UNKNOWN"},
		{name: "index referencing a missing manifest", srv: push, method: "PUT", path: "/v2/library/app/manifests/v2", body: mustJSON(t, map[string]any{"schemaVersion": 2, "mediaType": ocispec.MediaTypeImageIndex, "manifests": []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageManifest, Digest: missing, Size: 1}}}), hdr: append([]string{"Content-Type", ocispec.MediaTypeImageIndex}, auth...), status: 400, code: "MANIFEST_BLOB_UNKNOWN"},
		{name: "tags of an unknown repository", method: "GET", path: "/v2/library/none/tags/list", status: 404, code: "NAME_UNKNOWN"},
		{name: "no such route", method: "GET", path: "/v2/library/app/manifests/a/b", status: 404, code: "NAME_UNKNOWN"},
		{name: "not under /v2", method: "GET", path: "/v1/_ping", status: 404, code: "NAME_UNKNOWN"},
		{name: "push without credentials", srv: push, method: "POST", path: "/v2/library/app/blobs/uploads/", status: 401, code: "UNAUTHORIZED", wwwAuth: true},
		{name: "push with an unknown token", srv: push, method: "DELETE", path: "/v2/library/app/manifests/v1", hdr: []string{"Authorization", basic("guess")}, status: 401, code: "UNAUTHORIZED", wwwAuth: true},
		{name: "push with a token without the right", srv: push, method: "PUT", path: "/v2/library/app/manifests/v1", body: good, hdr: append(ociCT, "Authorization", basic("read-only")), status: 403, code: "DENIED"},
		{name: "push to a read-only registry", method: "POST", path: "/v2/library/app/blobs/uploads/", status: 405, code: "UNSUPPORTED"},
		{name: "delete on a read-only registry", method: "DELETE", path: "/v2/library/app/manifests/v1", status: 405, code: "UNSUPPORTED"},
		{name: "push to a mirrored registry", srv: push, method: "POST", path: "/v2/library/app/blobs/uploads/?ns=docker.io", hdr: auth, status: 405, code: "UNSUPPORTED"},
		{name: "method not offered", method: "PATCH", path: "/v2/library/app/manifests/v1", status: 405, code: "UNSUPPORTED"},
		{name: "upload unknown", srv: push, method: "PATCH", path: "/v2/library/app/blobs/uploads/0123", body: []byte("x"), hdr: auth, status: 404, code: "BLOB_UPLOAD_UNKNOWN"},
		{name: "monolithic upload with a wrong digest", srv: push, method: "POST", path: "/v2/library/app/blobs/uploads/?digest=" + missing.String(), body: []byte("other bytes"), hdr: auth, status: 400, code: "DIGEST_INVALID"},
		{name: "upload over the size limit", srv: push, method: "POST", path: "/v2/library/app/blobs/uploads/?digest=" + missing.String(), body: make([]byte, 1<<20+1), hdr: auth, status: 413, code: "SIZE_INVALID"},
		{name: "tag list with a bad n", method: "GET", path: "/v2/library/app/tags/list?n=-1", status: 400, code: "PAGINATION_NUMBER_INVALID"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := tc.srv
			if srv == nil {
				srv = pull
			}
			resp, body := do(t, tc.method, srv.URL+tc.path, tc.body, tc.hdr...)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			if code := errorCode(t, body); code != tc.code {
				t.Fatalf("code %s, want %s", code, tc.code)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			if got := resp.Header.Get("WWW-Authenticate"); tc.wwwAuth != (got != "") || (tc.wwwAuth && got != `Basic realm="outpost"`) {
				t.Errorf("WWW-Authenticate %q", got)
			}
		})
	}
	// A HEAD error has the status and no body.
	resp, body := do(t, http.MethodHead, pull.URL+"/v2/library/app/blobs/"+missing.String(), nil)
	if resp.StatusCode != 404 || len(body) != 0 {
		t.Fatalf("HEAD of a missing blob: %d, %d bytes", resp.StatusCode, len(body))
	}
}

// countingReader is an endless body that counts what the handler read.
type countingReader struct {
	mu sync.Mutex
	n  int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range p {
		p[i] = ' '
	}
	c.n += int64(len(p))
	return len(p), nil
}

func TestOversizedManifestNotReadPastTheLimit(t *testing.T) {
	t.Parallel()
	srv := newServer(t, func(c *Config) { c.Push = true })
	for _, declared := range []int64{-1, 5 << 20} {
		body := &countingReader{}
		req := httptest.NewRequest(http.MethodPut, "/v2/a/manifests/big", body)
		req.ContentLength = declared
		req.Header.Set("Content-Type", ocispec.MediaTypeImageManifest)
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		if rec.Code != http.StatusRequestEntityTooLarge || errorCode(t, rec.Body.Bytes()) != "MANIFEST_INVALID" {
			t.Fatalf("Content-Length %d: %d %s", declared, rec.Code, rec.Body)
		}
		limit := int64(4<<20 + 1)
		if declared > 0 {
			limit = 0
		}
		if body.n > limit+32<<10 {
			t.Fatalf("Content-Length %d: read %d bytes of an oversized manifest, limit %d", declared, body.n, limit)
		}
	}
}

func TestBlobRangesAndHead(t *testing.T) {
	t.Parallel()
	srv := newServer(t, func(c *Config) { c.Push = true })
	blob := randomBlob(t, 2048)
	d := pushBlob(t, srv.URL, "a/b/c", blob)
	url := srv.URL + "/v2/a/b/c/blobs/" + d.String()
	tests := []struct {
		rng          string
		status       int
		body         []byte
		contentRange string
	}{
		{"", 200, blob, ""},
		{"bytes=0-0", 206, blob[:1], "bytes 0-0/2048"},
		{"bytes=500-1499", 206, blob[500:1500], "bytes 500-1499/2048"},
		{"bytes=500-", 206, blob[500:], "bytes 500-2047/2048"},
		{"bytes=-500", 206, blob[1548:], "bytes 1548-2047/2048"},
		{"bytes=-5000", 206, blob, "bytes 0-2047/2048"},
		{"bytes=2000-5000", 206, blob[2000:], "bytes 2000-2047/2048"},
		{"bytes=2047-2047", 206, blob[2047:], "bytes 2047-2047/2048"},
		{"bytes=500-0", 416, nil, "bytes */2048"},
		{"bytes=2048-", 416, nil, "bytes */2048"},
		{"bytes=5000-10000", 416, nil, "bytes */2048"},
		{"bytes=-0", 416, nil, "bytes */2048"},
		{"bytes=0-1,5-6", 200, blob, ""},
		{"items=0-1", 200, blob, ""},
		{"bytes=x-y", 200, blob, ""},
	}
	for _, tc := range tests {
		t.Run(tc.rng, func(t *testing.T) {
			var hdr []string
			if tc.rng != "" {
				hdr = []string{"Range", tc.rng}
			}
			resp, body := do(t, http.MethodGet, url, nil, hdr...)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if got := resp.Header.Get("Content-Range"); got != tc.contentRange {
				t.Fatalf("Content-Range %q, want %q", got, tc.contentRange)
			}
			if tc.status == 416 {
				errorCode(t, body)
				return
			}
			if !bytes.Equal(body, tc.body) || resp.Header.Get("Content-Length") != strconv.Itoa(len(tc.body)) {
				t.Fatalf("%d bytes (Content-Length %s), want %d", len(body), resp.Header.Get("Content-Length"), len(tc.body))
			}
			if resp.Header.Get("Docker-Content-Digest") != d.String() {
				t.Fatalf("Docker-Content-Digest %q", resp.Header.Get("Docker-Content-Digest"))
			}
		})
	}
	resp, body := do(t, http.MethodHead, url, nil)
	if resp.StatusCode != 200 || len(body) != 0 || resp.Header.Get("Content-Length") != "2048" ||
		resp.Header.Get("Docker-Content-Digest") != d.String() || resp.Header.Get("Content-Type") != "application/octet-stream" {
		t.Fatalf("HEAD: %d %v", resp.StatusCode, resp.Header)
	}
}

func TestManifestGetAndHead(t *testing.T) {
	t.Parallel()
	srv := newServer(t, func(c *Config) { c.Push = true })
	img := pushSampleImage(t, srv.URL, "library/app")
	idx, err := srv.Store.ManifestByDigest(img.Index)
	if err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{"v1", "latest", img.Index.String()} {
		for _, method := range []string{http.MethodGet, http.MethodHead} {
			resp, body := do(t, method, srv.URL+"/v2/library/app/manifests/"+ref, nil, "Accept", ocispec.MediaTypeImageIndex)
			if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != ocispec.MediaTypeImageIndex ||
				resp.Header.Get("Content-Length") != strconv.Itoa(len(idx.Body)) || resp.Header.Get("Docker-Content-Digest") != img.Index.String() {
				t.Fatalf("%s %s: %d %v", method, ref, resp.StatusCode, resp.Header)
			}
			if method == http.MethodGet && !bytes.Equal(body, idx.Body) {
				t.Fatalf("GET %s: body differs from what was pushed", ref)
			}
			if method == http.MethodHead && len(body) != 0 {
				t.Fatalf("HEAD %s returned a body", ref)
			}
		}
	}
	resp, body := do(t, http.MethodGet, srv.URL+"/v2/", nil)
	if resp.StatusCode != 200 || string(body) != "{}" || resp.Header.Get("Docker-Distribution-API-Version") != "registry/2.0" {
		t.Fatalf("GET /v2/: %d %q", resp.StatusCode, body)
	}
}

func TestTagsPagination(t *testing.T) {
	t.Parallel()
	srv := newServer(t, func(c *Config) { c.Push = true })
	manifest := imageManifest(t, srv.URL, "p/q", randomBlob(t, 10))
	for _, tag := range []string{"e", "b", "d", "a", "c"} {
		pushManifest(t, srv.URL, "p/q", tag, ocispec.MediaTypeImageManifest, manifest)
	}
	list := func(query string) ([]string, string) {
		t.Helper()
		resp, body := do(t, http.MethodGet, srv.URL+"/v2/p/q/tags/list"+query, nil)
		expectStatus(t, resp, body, 200)
		var tl tagList
		if err := json.Unmarshal(body, &tl); err != nil || tl.Name != "p/q" || tl.Tags == nil {
			t.Fatalf("tag list %s: %q", query, body)
		}
		return tl.Tags, resp.Header.Get("Link")
	}
	tests := []struct {
		query string
		want  string
		link  string
	}{
		{"", "a,b,c,d,e", ""},
		{"?n=2", "a,b", `</v2/p/q/tags/list?last=b&n=2>; rel="next"`},
		{"?n=2&last=b", "c,d", `</v2/p/q/tags/list?last=d&n=2>; rel="next"`},
		{"?n=2&last=d", "e", ""},
		{"?last=c", "d,e", ""},
		{"?last=bb", "c,d,e", ""},
		{"?last=e", "", ""},
		{"?n=0", "", ""},
		{"?n=5", "a,b,c,d,e", ""},
		{"?n=2&ns=", "a,b", `</v2/p/q/tags/list?last=b&n=2&ns=>; rel="next"`},
	}
	for _, tc := range tests {
		tags, link := list(tc.query)
		if strings.Join(tags, ",") != tc.want || link != tc.link {
			t.Errorf("%s: %v %q, want %s %q", tc.query, tags, link, tc.want, tc.link)
		}
	}
	// Following the links walks every tag once.
	var all []string
	next := "/v2/p/q/tags/list?n=2"
	for next != "" {
		tags, link := list(strings.TrimPrefix(next, "/v2/p/q/tags/list"))
		all = append(all, tags...)
		next = ""
		if link != "" {
			next = link[1:strings.Index(link, ">")]
		}
	}
	if strings.Join(all, ",") != "a,b,c,d,e" {
		t.Fatalf("paged walk %v", all)
	}
}

func TestReferrers(t *testing.T) {
	t.Parallel()
	srv := newServer(t, func(c *Config) { c.Push = true })
	img := pushSampleImage(t, srv.URL, "library/app")
	get := func(query string) (ocispec.Index, http.Header) {
		t.Helper()
		resp, body := do(t, http.MethodGet, srv.URL+"/v2/library/app/referrers/"+img.Image.String()+query, nil)
		expectStatus(t, resp, body, 200)
		if ct := resp.Header.Get("Content-Type"); ct != ocispec.MediaTypeImageIndex {
			t.Fatalf("Content-Type %q", ct)
		}
		var idx ocispec.Index
		if err := json.Unmarshal(body, &idx); err != nil || idx.SchemaVersion != 2 || idx.MediaType != ocispec.MediaTypeImageIndex || idx.Manifests == nil {
			t.Fatalf("referrers body %q", body)
		}
		return idx, resp.Header
	}
	idx, hdr := get("")
	if len(idx.Manifests) != 1 || hdr.Get("OCI-Filters-Applied") != "" {
		t.Fatalf("referrers %+v", idx.Manifests)
	}
	r := idx.Manifests[0]
	if r.Digest != img.Referrer || r.ArtifactType != "application/vnd.example.signature" || r.MediaType != ocispec.MediaTypeImageManifest || r.Annotations["org.example.signer"] != "test" {
		t.Fatalf("referrer %+v", r)
	}
	idx, hdr = get("?artifactType=application/vnd.example.signature")
	if len(idx.Manifests) != 1 || hdr.Get("OCI-Filters-Applied") != "artifactType" {
		t.Fatalf("filtered: %+v %v", idx.Manifests, hdr)
	}
	idx, hdr = get("?artifactType=application/vnd.example.sbom")
	if len(idx.Manifests) != 0 || hdr.Get("OCI-Filters-Applied") != "artifactType" {
		t.Fatalf("filtered out: %+v %v", idx.Manifests, hdr)
	}
	resp, body := do(t, http.MethodGet, srv.URL+"/v2/library/none/referrers/"+digest.FromString("x").String(), nil)
	expectStatus(t, resp, body, 200)
	// The push of the referrer answered with its subject.
	sig, _ := srv.Store.ManifestByDigest(img.Referrer)
	resp, body = do(t, http.MethodPut, srv.URL+"/v2/library/app/manifests/"+img.Referrer.String(), sig.Body, "Content-Type", ocispec.MediaTypeImageManifest)
	expectStatus(t, resp, body, 201)
	if resp.Header.Get("OCI-Subject") != img.Image.String() {
		t.Fatalf("OCI-Subject %q", resp.Header.Get("OCI-Subject"))
	}
}

func TestNamespaces(t *testing.T) {
	t.Parallel()
	st := openStore(t)
	pusher := newServerOn(t, st, func(c *Config) { c.Push = true })
	img := pushSampleImage(t, pusher.URL, "library/nginx")
	copyNamespace(t, st, "library/nginx", "docker.io", img)
	own := newServerOn(t, st, nil)
	docker := newServerOn(t, st, func(c *Config) { c.DefaultNamespace = "docker.io" })
	path := "/v2/library/nginx/manifests/v1"
	tests := []struct {
		srv    *server
		query  string
		status int
	}{
		{own, "", 200},              // no ns: the hub's own registry
		{own, "?ns=docker.io", 200}, // containerd's ns
		{own, "?ns=ghcr.io", 404},   // another registry holds nothing
		{docker, "", 200},           // Docker's registry-mirrors: docker.io
		{docker, "?ns=", 200},       // explicitly the hub's own
		{docker, "?ns=quay.io", 404},
	}
	for _, tc := range tests {
		resp, body := do(t, http.MethodGet, tc.srv.URL+path+tc.query, nil)
		if resp.StatusCode != tc.status {
			t.Errorf("%s%s: %d, want %d: %s", tc.srv.Addr, tc.query, resp.StatusCode, tc.status, body)
		}
	}
	// Remove the hub's own copy: only the docker.io namespace has it now.
	resp, body := do(t, http.MethodDelete, pusher.URL+"/v2/library/nginx/manifests/v1", nil)
	expectStatus(t, resp, body, 202)
	if resp, _ := do(t, http.MethodGet, own.URL+path, nil); resp.StatusCode != 404 {
		t.Errorf("own registry after delete: %d", resp.StatusCode)
	}
	if resp, _ := do(t, http.MethodGet, docker.URL+path, nil); resp.StatusCode != 200 {
		t.Errorf("docker.io mirror after the own registry's delete: %d", resp.StatusCode)
	}
	// A Location keeps the request's ns.
	resp, body = do(t, http.MethodPost, withNS(pusher.URL+"/v2/library/nginx/blobs/uploads/", ""), nil)
	expectStatus(t, resp, body, 202)
	if loc := resp.Header.Get("Location"); !strings.HasSuffix(loc, "?ns=") {
		t.Errorf("Location %q lost the ns parameter", loc)
	}
}

func TestParsePath(t *testing.T) {
	t.Parallel()
	tests := []struct {
		rest      string
		kind      int
		name, arg string
		ok        bool
	}{
		{"library/nginx/manifests/latest", routeManifest, "library/nginx", "latest", true},
		{"a/b/c/blobs/sha256:ab", routeBlob, "a/b/c", "sha256:ab", true},
		{"a/blobs/uploads/", routeUpload, "a", "", true},
		{"a/blobs/uploads", routeUpload, "a", "", true},
		{"a/blobs/uploads/123", routeUpload, "a", "123", true},
		{"a/tags/list", routeTags, "a", "", true},
		{"a/referrers/sha256:ab", routeReferrers, "a", "sha256:ab", true},
		// Markers inside a name: the last one decides.
		{"a/manifests/b/manifests/latest", routeManifest, "a/manifests/b", "latest", true},
		{"tags/list/manifests/x", routeManifest, "tags/list", "x", true},
		{"a/manifests/tags/list", routeTags, "a/manifests", "", true},
		{"blobs/uploads/blobs/sha256:ab", routeBlob, "blobs/uploads", "sha256:ab", true},
		{"a/blobs/uploads/manifests/v1", routeManifest, "a/blobs/uploads", "v1", true},
		{"a/referrers/x/blobs/uploads/", routeUpload, "a/referrers/x", "", true},
		{"a/manifests/", 0, "", "", false},
		{"a/manifests/x/y", 0, "", "", false},
		{"manifests/x", 0, "", "", false},
		{"a/tags/list/x", 0, "", "", false},
		{"a", 0, "", "", false},
	}
	for _, tc := range tests {
		kind, name, arg, ok := parsePath(tc.rest)
		if ok != tc.ok || (ok && (kind != tc.kind || name != tc.name || arg != tc.arg)) {
			t.Errorf("%q: %d %q %q %v, want %d %q %q %v", tc.rest, kind, name, arg, ok, tc.kind, tc.name, tc.arg, tc.ok)
		}
	}
}

func TestToken(t *testing.T) {
	t.Parallel()
	tests := []struct {
		auth string
		want string
		ok   bool
	}{
		{basic("tok"), "tok", true},
		{"Basic " + base64.StdEncoding.EncodeToString([]byte(":tok:with:colons")), "tok:with:colons", true},
		{"bearer tok", "tok", true},
		{"Basic " + base64.StdEncoding.EncodeToString([]byte("user:")), "", false},
		{"Basic !!!", "", false},
		{"Digest x", "", false},
		{"", "", false},
	}
	for _, tc := range tests {
		r := httptest.NewRequest(http.MethodGet, "/v2/", nil)
		if tc.auth != "" {
			r.Header.Set("Authorization", tc.auth)
		}
		if got, ok := Token(r); got != tc.want || ok != tc.ok {
			t.Errorf("%q: %q %v", tc.auth, got, ok)
		}
	}
}

func TestPullCounting(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	pulls := map[string]int{}
	st := openStore(t)
	pusher := newServerOn(t, st, func(c *Config) { c.Push = true })
	img := pushSampleImage(t, pusher.URL, "library/app")
	single := imageManifest(t, pusher.URL, "library/single", randomBlob(t, 10))
	pushManifest(t, pusher.URL, "library/single", "v1", ocispec.MediaTypeImageManifest, single)
	srv := newServerOn(t, st, func(c *Config) {
		c.OnPull = func(ns, repo string) {
			mu.Lock()
			pulls[ns+"/"+repo]++
			mu.Unlock()
		}
	})
	get := func(method, repo, ref string) {
		resp, body := do(t, method, srv.URL+"/v2/"+repo+"/manifests/"+ref, nil)
		expectStatus(t, resp, body, 200)
	}
	// containerd pulling a multi-platform image: HEAD by tag, GET the
	// index by digest, GET the platform manifest by digest.
	get(http.MethodHead, "library/app", "v1")
	get(http.MethodGet, "library/app", img.Index.String())
	get(http.MethodGet, "library/app", img.Image.String())
	// Docker pulling a single-platform image: GET by tag.
	get(http.MethodGet, "library/single", "v1")
	// containerd pulling it: HEAD by tag, GET by digest.
	get(http.MethodHead, "library/single", "v1")
	get(http.MethodGet, "library/single", digest.FromBytes(single).String())
	mu.Lock()
	defer mu.Unlock()
	if pulls["/library/app"] != 1 || pulls["/library/single"] != 2 {
		t.Fatalf("pulls %v, want 1 of app and 2 of single", pulls)
	}
}

func TestChunkedUploadAndMount(t *testing.T) {
	t.Parallel()
	srv := newServer(t, func(c *Config) { c.Push = true })
	blob := randomBlob(t, 10_000)
	d := digest.FromBytes(blob)
	resp, body := do(t, http.MethodPost, srv.URL+"/v2/src/repo/blobs/uploads/", nil)
	expectStatus(t, resp, body, 202)
	loc := resp.Request.URL.ResolveReference(mustParse(t, resp.Header.Get("Location"))).String()
	if resp.Header.Get("Range") != "0-0" || resp.Header.Get("Docker-Upload-UUID") == "" {
		t.Fatalf("POST headers %v", resp.Header)
	}
	patch := func(from, to int, status int) *http.Response {
		resp, body := do(t, http.MethodPatch, loc, blob[from:to], "Content-Range", fmt.Sprintf("%d-%d", from, to-1), "Content-Type", "application/octet-stream")
		expectStatus(t, resp, body, status)
		return resp
	}
	resp = patch(0, 4000, 202)
	if resp.Header.Get("Range") != "0-3999" {
		t.Fatalf("Range %q", resp.Header.Get("Range"))
	}
	// Out of order: refused with 416, the session keeps what it had.
	resp = patch(5000, 6000, 416)
	if resp.Header.Get("Range") != "0-3999" || resp.Header.Get("Location") == "" {
		t.Fatalf("416 headers %v", resp.Header)
	}
	resp, body = do(t, http.MethodGet, loc, nil)
	expectStatus(t, resp, body, 204)
	if resp.Header.Get("Range") != "0-3999" {
		t.Fatalf("status Range %q", resp.Header.Get("Range"))
	}
	patch(4000, 8000, 202)
	// The last chunk rides on the PUT.
	put := mustParse(t, loc)
	q := put.Query()
	q.Set("digest", d.String())
	put.RawQuery = q.Encode()
	resp, body = do(t, http.MethodPut, put.String(), blob[8000:], "Content-Range", "8000-9999")
	expectStatus(t, resp, body, 201)
	if resp.Header.Get("Location") != "/v2/src/repo/blobs/"+d.String() || resp.Header.Get("Docker-Content-Digest") != d.String() {
		t.Fatalf("PUT headers %v", resp.Header)
	}
	// The session has ended.
	resp, body = do(t, http.MethodGet, loc, nil)
	expectStatus(t, resp, body, 404)

	// Mount from the repository that holds it, or from anywhere.
	resp, body = do(t, http.MethodPost, srv.URL+"/v2/dst/one/blobs/uploads/?mount="+d.String()+"&from=src/repo", nil)
	expectStatus(t, resp, body, 201)
	resp, body = do(t, http.MethodPost, srv.URL+"/v2/dst/two/blobs/uploads/?mount="+d.String(), nil)
	expectStatus(t, resp, body, 201)
	// From a repository that does not hold it: a session instead.
	resp, body = do(t, http.MethodPost, srv.URL+"/v2/dst/three/blobs/uploads/?mount="+d.String()+"&from=dst/none", nil)
	expectStatus(t, resp, body, 202)
	for _, repo := range []string{"src/repo", "dst/one", "dst/two"} {
		resp, body := do(t, http.MethodGet, srv.URL+"/v2/"+repo+"/blobs/"+d.String(), nil)
		expectStatus(t, resp, body, 200)
		if !bytes.Equal(body, blob) {
			t.Fatalf("%s: wrong bytes", repo)
		}
	}
	if st := srv.Store.Stats(); st.Blobs != 1 {
		t.Fatalf("%d blobs stored for one pushed to three repositories", st.Blobs)
	}
	// Deleting from all three removes the content.
	for _, repo := range []string{"src/repo", "dst/one", "dst/two"} {
		resp, body := do(t, http.MethodDelete, srv.URL+"/v2/"+repo+"/blobs/"+d.String(), nil)
		expectStatus(t, resp, body, 202)
	}
	if st := srv.Store.Stats(); st.Blobs != 0 {
		t.Fatalf("%d blobs left after deleting from every repository", st.Blobs)
	}
	resp, body = do(t, http.MethodDelete, srv.URL+"/v2/src/repo/blobs/"+d.String(), nil)
	expectStatus(t, resp, body, 404)
}

func TestUploadLimits(t *testing.T) {
	t.Parallel()
	srv := newServer(t, func(c *Config) {
		c.Push = true
		c.MaxUploads = 1
		c.MaxUploadSize = 100
	})
	resp, body := do(t, http.MethodPost, srv.URL+"/v2/a/blobs/uploads/", nil)
	expectStatus(t, resp, body, 202)
	first := resp.Request.URL.ResolveReference(mustParse(t, resp.Header.Get("Location"))).String()
	resp, body = do(t, http.MethodPost, srv.URL+"/v2/a/blobs/uploads/", nil)
	expectStatus(t, resp, body, 429)
	if errorCode(t, body) != "TOOMANYREQUESTS" {
		t.Fatal(errorCode(t, body))
	}
	// Past the size limit the session is dropped.
	resp, body = do(t, http.MethodPatch, first, make([]byte, 101))
	expectStatus(t, resp, body, 413)
	resp, body = do(t, http.MethodGet, first, nil)
	expectStatus(t, resp, body, 404)
	// The slot is free again; cancelling a session frees it too.
	resp, body = do(t, http.MethodPost, srv.URL+"/v2/a/blobs/uploads/", nil)
	expectStatus(t, resp, body, 202)
	second := resp.Request.URL.ResolveReference(mustParse(t, resp.Header.Get("Location"))).String()
	resp, body = do(t, http.MethodDelete, second, nil)
	expectStatus(t, resp, body, 204)
	resp, body = do(t, http.MethodPost, srv.URL+"/v2/a/blobs/uploads/", nil)
	expectStatus(t, resp, body, 202)
	// A session of another repository is unknown here.
	third := resp.Request.URL.ResolveReference(mustParse(t, resp.Header.Get("Location"))).String()
	resp, body = do(t, http.MethodGet, strings.Replace(third, "/v2/a/", "/v2/b/", 1), nil)
	expectStatus(t, resp, body, 404)
	if st := srv.Store.Stats(); st.Writes != 1 {
		t.Fatalf("%d writes open, want the one session", st.Writes)
	}
}

func TestIdleUploadsExpire(t *testing.T) {
	t.Parallel()
	srv := newServer(t, func(c *Config) {
		c.Push = true
		c.UploadIdleTimeout = 1 // nanosecond: every other session is idle
	})
	resp, body := do(t, http.MethodPost, srv.URL+"/v2/a/blobs/uploads/", nil)
	expectStatus(t, resp, body, 202)
	old := resp.Request.URL.ResolveReference(mustParse(t, resp.Header.Get("Location"))).String()
	resp, body = do(t, http.MethodPost, srv.URL+"/v2/a/blobs/uploads/", nil)
	expectStatus(t, resp, body, 202)
	resp, body = do(t, http.MethodPatch, old, []byte("x"))
	expectStatus(t, resp, body, 404)
	if errorCode(t, body) != "BLOB_UPLOAD_UNKNOWN" {
		t.Fatal(errorCode(t, body))
	}
	if st := srv.Store.Stats(); st.Writes != 1 {
		t.Fatalf("%d writes open after expiry, want 1", st.Writes)
	}
}

func TestStreamWhileArriving(t *testing.T) {
	t.Parallel()
	st := openStore(t)
	src := &arrivingSource{StoreSource: NewStoreSource(st)}
	h, err := New(DefaultConfig(), src)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	for _, abort := range []bool{false, true} {
		blob := randomBlob(t, 1<<20)
		d := digest.FromBytes(blob)
		w, err := st.Begin(d, int64(len(blob)))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(blob[:1000]); err != nil {
			t.Fatal(err)
		}
		type result struct {
			body []byte
			err  error
			resp *http.Response
		}
		got := make(chan result, 1)
		go func() {
			resp, err := http.Get(srv.URL + "/v2/a/blobs/" + d.String())
			if err != nil {
				got <- result{err: err}
				return
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			got <- result{b, err, resp}
		}()
		if _, err := w.Write(blob[1000:500_000]); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the GET follows the write", func() bool { return st.Stats().Readers == 1 })
		if abort {
			w.Abort(fmt.Errorf("origin went away"))
			r := <-got
			if r.err == nil {
				t.Fatalf("an aborted fetch was served as a whole body of %d bytes", len(r.body))
			}
			continue
		}
		if _, err := w.Write(blob[500_000:]); err != nil {
			t.Fatal(err)
		}
		if err := w.Commit(); err != nil {
			t.Fatal(err)
		}
		r := <-got
		if r.err != nil || r.resp.StatusCode != 200 || !bytes.Equal(r.body, blob) || r.resp.Header.Get("Content-Length") != strconv.Itoa(len(blob)) {
			t.Fatalf("served while arriving: %v, %d bytes", r.err, len(r.body))
		}
	}
}

// arrivingSource serves blobs from the store whether committed or still
// being written, as a fetch chain does.
type arrivingSource struct{ *StoreSource }

func (s *arrivingSource) Blob(ctx context.Context, ns, repo string, d digest.Digest) (Blob, error) {
	r, err := s.st.Open(ctx, d)
	if err != nil {
		return Blob{}, notFound(err, ErrBlobUnknown)
	}
	return Blob{Size: r.Size(), Content: r}, nil
}

// failingSource answers every call with err.
type failingSource struct{ err error }

func (s failingSource) Manifest(context.Context, string, string, string) (Manifest, error) {
	return Manifest{}, s.err
}
func (s failingSource) Blob(context.Context, string, string, digest.Digest) (Blob, error) {
	return Blob{}, s.err
}
func (s failingSource) StatBlob(context.Context, string, string, digest.Digest) (int64, error) {
	return 0, s.err
}
func (s failingSource) Tags(context.Context, string, string) ([]string, error) { return nil, s.err }
func (s failingSource) Referrers(context.Context, string, string, digest.Digest) ([]ocispec.Descriptor, error) {
	return nil, s.err
}

func TestSourceErrorsMapped(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err    error
		status int
		code   string
	}{
		{fmt.Errorf("origin docker.io: %w", ErrUnavailable), 503, "UNAVAILABLE"},
		{fmt.Errorf("docker.io said 429: %w", ErrTooManyRequests), 429, "TOOMANYREQUESTS"},
		{fmt.Errorf("upstream: %w", ErrUnauthorized), 401, "UNAUTHORIZED"},
		{fmt.Errorf("policy: %w", ErrDenied), 403, "DENIED"},
		{fmt.Errorf("no such repository upstream: %w", ErrNameUnknown), 404, "NAME_UNKNOWN"},
		{fmt.Errorf("secret internal detail /var/lib/x"), 500, "UNKNOWN"},
	}
	for _, tc := range tests {
		h, err := New(DefaultConfig(), failingSource{tc.err})
		if err != nil {
			t.Fatal(err)
		}
		for _, path := range []string{"/v2/a/manifests/v1", "/v2/a/blobs/" + digest.FromString("x").String(), "/v2/a/tags/list", "/v2/a/referrers/" + digest.FromString("x").String()} {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
			if rec.Code != tc.status || errorCode(t, rec.Body.Bytes()) != tc.code {
				t.Errorf("%v on %s: %d %s", tc.err, path, rec.Code, rec.Body)
			}
			if tc.status == 500 && strings.Contains(rec.Body.String(), "secret") {
				t.Errorf("an internal error's text was sent: %s", rec.Body)
			}
		}
	}
}
