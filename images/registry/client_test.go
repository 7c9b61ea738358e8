package registry

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// do sends one request and returns the response with its body read.
func do(t testing.TB, method, u string, body []byte, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func expectStatus(t testing.TB, resp *http.Response, body []byte, want int) {
	t.Helper()
	if resp.StatusCode != want {
		t.Fatalf("%s %s: status %d, want %d: %s", resp.Request.Method, resp.Request.URL, resp.StatusCode, want, body)
	}
}

// pushBlob uploads b monolithically (POST, then PUT with the digest).
func pushBlob(t testing.TB, base, repo string, b []byte, hdr ...string) digest.Digest {
	t.Helper()
	resp, body := do(t, http.MethodPost, base+"/v2/"+repo+"/blobs/uploads/", nil, hdr...)
	expectStatus(t, resp, body, http.StatusAccepted)
	loc, err := resp.Request.URL.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	d := digest.FromBytes(b)
	q := loc.Query()
	q.Set("digest", d.String())
	loc.RawQuery = q.Encode()
	resp, body = do(t, http.MethodPut, loc.String(), b, append([]string{"Content-Type", "application/octet-stream"}, hdr...)...)
	expectStatus(t, resp, body, http.StatusCreated)
	return d
}

// pushManifest PUTs a manifest under ref and returns its digest.
func pushManifest(t testing.TB, base, repo, ref, mediaType string, body []byte, hdr ...string) digest.Digest {
	t.Helper()
	resp, rb := do(t, http.MethodPut, base+"/v2/"+repo+"/manifests/"+ref, body, append([]string{"Content-Type", mediaType}, hdr...)...)
	expectStatus(t, resp, rb, http.StatusCreated)
	return digest.FromBytes(body)
}

func randomBlob(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sampleImage is what pushSampleImage pushed, as the read-only
// conformance suite wants it listed.
type sampleImage struct {
	Tags      []string
	Manifests []string
	Blobs     []string
	Subjects  []string
	// Index, Image and Referrer are the digests of the index, of its
	// amd64 image and of a signature-like artifact referring to Image.
	Index, Image, Referrer digest.Digest
	Layer                  []byte
	LayerDigest            digest.Digest
}

// imageManifest builds an image manifest of a config and layers pushed
// to repo.
func imageManifest(t testing.TB, base, repo string, layers ...[]byte) []byte {
	t.Helper()
	return imageManifestAuth(t, base, repo, nil, layers...)
}

func imageManifestAuth(t testing.TB, base, repo string, hdr []string, layers ...[]byte) []byte {
	t.Helper()
	cfg := mustJSON(t, map[string]any{"architecture": "amd64", "os": "linux", "rootfs": map[string]any{"type": "layers"}})
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest,
		Config: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: pushBlob(t, base, repo, cfg, hdr...), Size: int64(len(cfg))}}
	m.SchemaVersion = 2
	for _, l := range layers {
		m.Layers = append(m.Layers, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: pushBlob(t, base, repo, l, hdr...), Size: int64(len(l))})
	}
	return mustJSON(t, m)
}

// pushSampleImage pushes a two-platform index (tags v1 and latest), its
// images, and an artifact referring to the amd64 image.
func pushSampleImage(t testing.TB, base, repo string, hdr ...string) sampleImage {
	t.Helper()
	var img sampleImage
	img.Layer = randomBlob(t, 100_000)
	img.LayerDigest = digest.FromBytes(img.Layer)
	amd := imageManifestAuth(t, base, repo, hdr, img.Layer, randomBlob(t, 3000))
	arm := imageManifestAuth(t, base, repo, hdr, randomBlob(t, 2000))
	img.Image = pushManifest(t, base, repo, digest.FromBytes(amd).String(), ocispec.MediaTypeImageManifest, amd, hdr...)
	armD := pushManifest(t, base, repo, digest.FromBytes(arm).String(), ocispec.MediaTypeImageManifest, arm, hdr...)
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{
		{MediaType: ocispec.MediaTypeImageManifest, Digest: img.Image, Size: int64(len(amd)), Platform: &ocispec.Platform{OS: "linux", Architecture: "amd64"}},
		{MediaType: ocispec.MediaTypeImageManifest, Digest: armD, Size: int64(len(arm)), Platform: &ocispec.Platform{OS: "linux", Architecture: "arm64"}},
	}}
	idx.SchemaVersion = 2
	ib := mustJSON(t, idx)
	img.Index = pushManifest(t, base, repo, "v1", ocispec.MediaTypeImageIndex, ib, hdr...)
	pushManifest(t, base, repo, "latest", ocispec.MediaTypeImageIndex, ib, hdr...)

	empty := []byte("{}")
	sigLayer := []byte("signature")
	sig := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, ArtifactType: "application/vnd.example.signature",
		Config:      ocispec.Descriptor{MediaType: ocispec.MediaTypeEmptyJSON, Digest: pushBlob(t, base, repo, empty, hdr...), Size: 2},
		Layers:      []ocispec.Descriptor{{MediaType: "application/vnd.example.signature.v1", Digest: pushBlob(t, base, repo, sigLayer, hdr...), Size: int64(len(sigLayer))}},
		Subject:     &ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: img.Image, Size: int64(len(amd))},
		Annotations: map[string]string{"org.example.signer": "test"}}
	sig.SchemaVersion = 2
	sb := mustJSON(t, sig)
	img.Referrer = pushManifest(t, base, repo, digest.FromBytes(sb).String(), ocispec.MediaTypeImageManifest, sb, hdr...)

	img.Tags = []string{"v1", "latest"}
	for _, d := range []digest.Digest{img.Index, img.Image, armD, img.Referrer} {
		img.Manifests = append(img.Manifests, d.String())
	}
	for _, m := range [][]byte{amd, arm, sb} {
		var man ocispec.Manifest
		if err := json.Unmarshal(m, &man); err != nil {
			t.Fatal(err)
		}
		img.Blobs = append(img.Blobs, man.Config.Digest.String())
		for _, l := range man.Layers {
			img.Blobs = append(img.Blobs, l.Digest.String())
		}
	}
	img.Subjects = []string{img.Image.String()}
	return img
}

// withNS appends an ns query parameter to an API URL.
func withNS(u, ns string) string {
	return fmt.Sprintf("%s?ns=%s", u, url.QueryEscape(ns))
}

func mustParse(t testing.TB, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
