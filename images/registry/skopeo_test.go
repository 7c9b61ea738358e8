package registry

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// skopeo runs the skopeo binary with a permissive policy, or skips the
// test when it is not installed (apt-get install skopeo).
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
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"--policy", policy}, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "TMPDIR="+t.TempDir())
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func mustSkopeo(t *testing.T, args ...string) string {
	t.Helper()
	out, err := skopeo(t, args...)
	if err != nil {
		t.Fatalf("skopeo %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// ociLayout writes an OCI image layout holding a two-platform index tagged
// tag, with real gzipped tar layers, and returns the index's digest.
func ociLayout(t *testing.T, dir, tag string) digest.Digest {
	t.Helper()
	blobs := filepath.Join(dir, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(b []byte) digest.Digest {
		d := digest.FromBytes(b)
		if err := os.WriteFile(filepath.Join(blobs, d.Encoded()), b, 0o644); err != nil {
			t.Fatal(err)
		}
		return d
	}
	layer := func(name string, content []byte) []byte {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		tw := tar.NewWriter(zw)
		_ = tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)})
		_, _ = tw.Write(content)
		_ = tw.Close()
		_ = zw.Close()
		return buf.Bytes()
	}
	var idx ocispec.Index
	idx.SchemaVersion = 2
	idx.MediaType = ocispec.MediaTypeImageIndex
	for _, arch := range []string{"amd64", "arm64"} {
		l := layer("hello-"+arch, randomBlob(t, 200_000))
		cfg := mustJSON(t, ocispec.Image{Platform: ocispec.Platform{OS: "linux", Architecture: arch},
			RootFS: ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{digest.FromBytes(gunzip(t, l))}}})
		m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest,
			Config: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: write(cfg), Size: int64(len(cfg))},
			Layers: []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: write(l), Size: int64(len(l))}}}
		m.SchemaVersion = 2
		mb := mustJSON(t, m)
		idx.Manifests = append(idx.Manifests, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: write(mb), Size: int64(len(mb)),
			Platform: &ocispec.Platform{OS: "linux", Architecture: arch}})
	}
	ib := mustJSON(t, idx)
	id := write(ib)
	top := ocispec.Index{Manifests: []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageIndex, Digest: id, Size: int64(len(ib)),
		Annotations: map[string]string{ocispec.AnnotationRefName: tag}}}}
	top.SchemaVersion = 2
	if err := os.WriteFile(filepath.Join(dir, "index.json"), mustJSON(t, top), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	return id
}

func gunzip(t *testing.T, b []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if _, err := out.ReadFrom(zr); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// TestSkopeoRoundTrip copies a multi-platform image into the push
// registry with skopeo (Basic credentials carrying an API token) and back
// out, byte for byte, then pulls it through a Docker-style mirror and
// deletes it.
func TestSkopeoRoundTrip(t *testing.T) {
	if _, err := exec.LookPath("skopeo"); err != nil {
		t.Fatal("skopeo is not installed: apt-get install -y skopeo (scripts/test-deps.sh installs it)")
	}
	t.Parallel()
	srv := newServer(t, func(c *Config) {
		c.Push = true
		c.Authorize = tokenAuth
	})
	src := t.TempDir()
	want := ociLayout(t, src, "v1")
	ref := "docker://" + srv.Addr + "/team/app:v1"

	// Without credentials the push is refused.
	if out, err := skopeo(t, "copy", "--all", "--dest-tls-verify=false", "oci:"+src+":v1", ref); err == nil {
		t.Fatalf("push without credentials succeeded:\n%s", out)
	}
	mustSkopeo(t, "copy", "--all", "--dest-tls-verify=false", "--dest-creds", "outpost:"+testToken, "oci:"+src+":v1", ref)

	// The registry holds the index byte for byte.
	resp, body := do(t, http.MethodGet, srv.URL+"/v2/team/app/manifests/v1", nil, "Accept", ocispec.MediaTypeImageIndex)
	expectStatus(t, resp, body, 200)
	if got := digest.FromBytes(body); got != want || resp.Header.Get("Docker-Content-Digest") != want.String() {
		t.Fatalf("pushed index is %s, want %s", got, want)
	}
	out := mustSkopeo(t, "inspect", "--raw", "--tls-verify=false", ref)
	if digest.FromString(out) != want {
		t.Fatalf("skopeo inspect --raw: %s", out)
	}
	tags := mustSkopeo(t, "list-tags", "--tls-verify=false", "docker://"+srv.Addr+"/team/app")
	if !strings.Contains(tags, `"v1"`) {
		t.Fatalf("list-tags: %s", tags)
	}

	// Copy back out: every blob arrives and verifies.
	dst := t.TempDir()
	mustSkopeo(t, "copy", "--all", "--src-tls-verify=false", ref, "oci:"+dst+":v1")
	var top ocispec.Index
	b, err := os.ReadFile(filepath.Join(dst, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &top); err != nil || len(top.Manifests) != 1 || top.Manifests[0].Digest != want {
		t.Fatalf("copied back: %s", b)
	}
	srcBlobs, _ := os.ReadDir(filepath.Join(src, "blobs", "sha256"))
	for _, e := range srcBlobs {
		a, _ := os.ReadFile(filepath.Join(src, "blobs", "sha256", e.Name()))
		c, err := os.ReadFile(filepath.Join(dst, "blobs", "sha256", e.Name()))
		if err != nil || !bytes.Equal(a, c) {
			t.Fatalf("blob %s did not come back intact: %v", e.Name(), err)
		}
	}

	// A Docker-style mirror (no ns, DefaultNamespace docker.io) serves
	// what is stored under docker.io.
	img := sampleImage{Tags: []string{"v1"}, Index: want}
	for _, e := range srcBlobs {
		d := digest.NewDigestFromEncoded(digest.SHA256, e.Name())
		if _, err := srv.Store.ManifestByDigest(d); err == nil {
			img.Manifests = append(img.Manifests, d.String())
		} else {
			img.Blobs = append(img.Blobs, d.String())
		}
	}
	// Children first: put them before the index.
	for i, m := range img.Manifests {
		if m == want.String() {
			img.Manifests = append(append(img.Manifests[:i:i], img.Manifests[i+1:]...), m)
			break
		}
	}
	for i, j := 0, len(img.Manifests)-1; i < j; i, j = i+1, j-1 {
		img.Manifests[i], img.Manifests[j] = img.Manifests[j], img.Manifests[i]
	}
	copyNamespace(t, srv.Store, "library/app", "docker.io", img)
	mirror := newServerOn(t, srv.Store, func(c *Config) { c.DefaultNamespace = "docker.io" })
	mustSkopeo(t, "copy", "--src-tls-verify=false", "--override-arch", "arm64", "docker://"+mirror.Addr+"/library/app:v1", "oci:"+t.TempDir()+":v1")

	// Delete by digest, as skopeo does.
	mustSkopeo(t, "delete", "--tls-verify=false", "--creds", "outpost:"+testToken, ref)
	resp, body = do(t, http.MethodGet, srv.URL+"/v2/team/app/manifests/"+want.String(), nil)
	expectStatus(t, resp, body, 404)
}
