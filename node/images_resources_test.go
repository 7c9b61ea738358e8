package node_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/crypto/bcrypt"

	imagesapi "github.com/outpost-mesh/outpost/images/api"
	"github.com/outpost-mesh/outpost/node"
)

const imagesAPI = "/apis/images.outpost.dev/v1alpha1"

// resourceJSON is an images.outpost.dev object's wire form.
func resourceJSON(kind, name string, spec any) []byte {
	b, _ := json.Marshal(map[string]any{
		"apiVersion": "images.outpost.dev/v1alpha1", "kind": kind,
		"metadata": map[string]any{"name": name}, "spec": spec,
	})
	return b
}

// distribution is a CNCF Distribution registry (Debian's docker-registry)
// on its own loopback address; stop ends it.
type distribution struct {
	addr string
	stop func()
}

// startDistribution starts docker-registry with extra appended to its
// configuration, or skips the test when it is not installed.
func startDistribution(t *testing.T, extra string) *distribution {
	t.Helper()
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		t.Fatal("CNCF Distribution is not installed: apt-get install -y docker-registry (scripts/test-deps.sh installs it)")
	}
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.%d:0", 20+rand.IntN(200)))
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	dir := t.TempDir()
	cfg := fmt.Sprintf("version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n  secret: outpost-test\n%s",
		filepath.Join(dir, "data"), addr, extra)
	path := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd := exec.Command(bin, "serve", path)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			_ = cmd.Process.Kill()
			<-exited
		})
	}
	t.Cleanup(stop)
	c := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	eventually(t, 20*time.Second, func() error {
		select {
		case <-exited:
			t.Fatalf("docker-registry exited:\n%s", out.String())
		default:
		}
		resp, err := c.Get("http://" + addr + "/v2/")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	})
	return &distribution{addr: addr, stop: stop}
}

// pushImage writes a random image of layers×size bytes to the registry.
func pushImage(t *testing.T, auth authn.Authenticator, ref string, layers int, size int64) v1.Image {
	t.Helper()
	img, err := random.Image(size, int64(layers))
	if err != nil {
		t.Fatal(err)
	}
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img, remote.WithAuth(auth), remote.WithContext(t.Context())); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	return img
}

// TestImageResourcesRejectBadInput checks the resources' validation: field
// paths, unknown fields, names.
func TestImageResourcesRejectBadInput(t *testing.T) {
	t.Parallel()
	hub := startNode(t)
	regs := imagesAPI + "/namespaces/default/registries"
	for _, tc := range []struct {
		name, path, kind, obj string
		spec                  any
		code                  int
		want                  string
	}{
		{"domain with scheme", regs, "Registry", "r1", map[string]any{"domain": "https://registry.example.com"}, 422, "spec.domain"},
		{"domain upper case", regs, "Registry", "r2", map[string]any{"domain": "Registry.Example.com"}, 422, "spec.domain"},
		{"no domain", regs, "Registry", "r3", map[string]any{"provider": "harbor"}, 422, "spec.domain"},
		{"unknown provider", regs, "Registry", "r4", map[string]any{"domain": "r.example.com", "provider": "nope"}, 422, "spec.provider"},
		{"password without user", regs, "Registry", "r5", map[string]any{"domain": "r.example.com", "credentials": map[string]any{"password": "x"}}, 422, "spec.credentials.username"},
		{"unknown field", regs, "Registry", "r6", map[string]any{"domain": "r.example.com", "bogus": true}, 400, "spec.bogus"},
		{"invalid name", regs, "Registry", "Bad_Name", map[string]any{"domain": "r.example.com"}, 422, "metadata.name"},
		{"cluster registry bad port", imagesAPI + "/clusterregistries", "ClusterRegistry", "c1", map[string]any{"domain": "r.example.com:99999"}, 422, "spec.domain"},
		{"repository bad name", imagesAPI + "/namespaces/default/repositories", "Repository", "p1", map[string]any{"registryName": "r", "repositoryName": "Team/App"}, 422, "spec.repositoryName"},
		{"repository no registry", imagesAPI + "/clusterrepositories", "ClusterRepository", "p2", map[string]any{"repositoryName": "team/app"}, 422, "spec.registryName"},
		{"sync no sites", imagesAPI + "/imagesyncs", "ImageSync", "s1", map[string]any{"image": "r.example.com/app:v1"}, 422, "spec.sites"},
		{"sync bad image", imagesAPI + "/imagesyncs", "ImageSync", "s2", map[string]any{"image": "r.example.com/App:v1", "sites": []string{"a"}}, 422, "spec.image"},
		{"sync bad platform", imagesAPI + "/imagesyncs", "ImageSync", "s3", map[string]any{"image": "app:v1", "sites": []string{"a"}, "platforms": []string{"arm64"}}, 422, "spec.platforms[0]"},
		{"sync duplicate site", imagesAPI + "/imagesyncs", "ImageSync", "s4", map[string]any{"image": "app:v1", "sites": []string{"a", "a"}}, 422, "spec.sites[1]"},
		{"stats are read-only", imagesAPI + "/imagestats", "ImageStats", "n1", nil, 405, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := hub.do(t, call{method: http.MethodPost, path: tc.path, body: resourceJSON(tc.kind, tc.obj, tc.spec)})
			if code != tc.code || !strings.Contains(string(body), tc.want) {
				t.Fatalf("POST %s: %d %s, want %d naming %q", tc.kind, code, body, tc.code, tc.want)
			}
		})
	}
}

// TestRegistryCredentialsNeverEchoed checks a registry's password is not
// returned by create, get, list or update, and is not on disk in the
// clear (sealed before it reaches Raft), while the user name is.
func TestRegistryCredentialsNeverEchoed(t *testing.T) {
	t.Parallel()
	hub := startNode(t)
	const secret = "pw-9f1c2e7a-never-echoed"
	path := imagesAPI + "/clusterregistries"
	spec := map[string]any{"domain": "registry.example.com", "provider": "harbor",
		"credentials": map[string]any{"username": "robot-puller", "password": secret}}
	code, body := hub.do(t, call{method: http.MethodPost, path: path, body: resourceJSON("ClusterRegistry", "corp", spec)})
	if code != http.StatusCreated || strings.Contains(string(body), secret) || !strings.Contains(string(body), "robot-puller") {
		t.Fatalf("create: %d %s", code, body)
	}
	// An update without the password keeps it; its answer has none.
	delete(spec["credentials"].(map[string]any), "password")
	spec["insecure"] = true
	var cur object
	hub.mustDo(t, call{method: http.MethodGet, path: path + "/corp"}, http.StatusOK, &cur)
	upd, _ := json.Marshal(map[string]any{"apiVersion": "images.outpost.dev/v1alpha1", "kind": "ClusterRegistry",
		"metadata": map[string]any{"name": "corp", "resourceVersion": cur.Metadata.ResourceVersion}, "spec": spec})
	code, body = hub.do(t, call{method: http.MethodPut, path: path + "/corp", body: upd})
	if code != http.StatusOK || strings.Contains(string(body), secret) {
		t.Fatalf("update: %d %s", code, body)
	}
	for _, p := range []string{path + "/corp", path} {
		code, body := hub.do(t, call{method: http.MethodGet, path: p})
		if code != http.StatusOK || strings.Contains(string(body), secret) || strings.Contains(string(body), `"password"`) {
			t.Fatalf("GET %s: %d %s", p, code, body)
		}
	}
	// Sealed at rest: the data dir never holds the password in the clear.
	found := map[string]bool{}
	err := filepath.Walk(hub.dir, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return nil // files come and go while the node runs
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil
		}
		for _, s := range []string{secret, "robot-puller"} {
			if bytes.Contains(b, []byte(s)) {
				found[s] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if found[secret] {
		t.Fatal("the registry password is stored in the clear in the data dir")
	}
	if !found["robot-puller"] {
		t.Fatal("the user name is not in the data dir either: the check reads nothing")
	}
}

// TestAuthenticatedOriginThroughMirror pulls from a registry that requires
// credentials (docker-registry with htpasswd) through a site node's
// mirror: refused without a ClusterRegistry and with a wrong password,
// served once the password is right; then the ClusterRepository's status
// shows the pull, aggregated from the node's figures.
func TestAuthenticatedOriginThroughMirror(t *testing.T) {
	t.Parallel()
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	htpasswd := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(htpasswd, []byte("puller:"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dist := startDistribution(t, fmt.Sprintf("auth:\n  htpasswd:\n    realm: outpost-test\n    path: %s\n", htpasswd))
	img := pushImage(t, &authn.Basic{Username: "puller", Password: "s3cret"}, dist.addr+"/private/app:v1", 2, 200_000)
	_, blobBytes := imageBlobs(t, img)

	hub := startNode(t)
	var mirror string
	e := startEdge(t, hub.hubQUIC(t), hub.createToken(t, "c", 0, time.Time{}), "c-1", mirrorAt(t, &mirror),
		func(c *node.Config) { c.RegistryDefaultNS = dist.addr })
	tryPull := func() error {
		ref, _ := name.ParseReference(mirror+"/private/app:v1", name.Insecure)
		_, err := remote.Image(ref, remote.WithContext(t.Context()))
		return err
	}
	// The registry's address is not one go-containerregistry reaches over
	// plain HTTP by itself: spec.insecure says so. (A pull before the
	// ClusterRegistry exists would try HTTPS, fail to reach it, and mark
	// the tag down for the tag TTL.)
	regs := imagesAPI + "/clusterregistries"
	spec := map[string]any{"domain": dist.addr, "insecure": true}
	hub.mustDo(t, call{method: http.MethodPost, path: regs, body: resourceJSON("ClusterRegistry", "private", spec)}, http.StatusCreated, nil)
	if err := tryPull(); err == nil || !strings.Contains(err.Error(), "DENIED") {
		t.Fatalf("pull without credentials: %v, want DENIED", err)
	}
	patch := func(password string) {
		hub.mustDo(t, call{method: http.MethodPatch, path: regs + "/private", contentType: "application/merge-patch+json",
			body: []byte(`{"spec":{"credentials":{"username":"puller","password":"` + password + `"}}}`)}, http.StatusOK, nil)
	}
	patch("wrong")
	if err := tryPull(); err == nil || !strings.Contains(err.Error(), "DENIED") || !strings.Contains(err.Error(), "credentials") {
		t.Fatalf("pull with a wrong password: %v, want DENIED naming the credentials", err)
	}
	patch("s3cret")
	pull(t, mirror, "private/app:v1", img)
	st, _ := e.ImageStats()
	if got := st.Fetch.Tiers["hub"].Bytes; got != uint64(blobBytes) {
		t.Fatalf("c-1 received %d blob bytes from the hub tier, want %d (tiers %+v)", got, blobBytes, st.Fetch.Tiers)
	}
	if o := st.Fetch.Tiers["origin"]; o.Bytes != 0 {
		t.Fatalf("c-1 received bytes from the origin itself: %+v", o)
	}

	// Figures: the node's pull reaches the ClusterRepository's status.
	hub.mustDo(t, call{method: http.MethodPost, path: imagesAPI + "/clusterrepositories",
		body: resourceJSON("ClusterRepository", "app", map[string]any{"registryName": "private", "repositoryName": "private/app"})}, http.StatusCreated, nil)
	eventually(t, 60*time.Second, func() error {
		var o struct {
			Status imagesapi.RepositoryStatus `json:"status"`
		}
		hub.mustDo(t, call{method: http.MethodGet, path: imagesAPI + "/clusterrepositories/app"}, http.StatusOK, &o)
		if o.Status.PullCount != 1 || o.Status.SizeBytes < blobBytes || o.Status.Nodes < 1 || o.Status.LastPulled == nil || o.Status.ArtifactCount != 1 {
			return fmt.Errorf("status %+v", o.Status)
		}
		return nil
	})
	var stats struct {
		Status imagesapi.ImageStatsStatus `json:"status"`
	}
	hub.mustDo(t, call{method: http.MethodGet, path: imagesAPI + "/imagestats/c-1"}, http.StatusOK, &stats)
	if stats.Status.Site != "c" || stats.Status.BytesFromHub != uint64(blobBytes) {
		t.Fatalf("ImageStats c-1: %+v", stats.Status)
	}
}

// TestRegistryFinalizer deletes a Registry: its Repositories go first,
// and it stays (with a message) while an ImageSync of its domain is
// pending, then goes when that sync is deleted.
func TestRegistryFinalizer(t *testing.T) {
	t.Parallel()
	hub := startNode(t)
	hub.createSite(t, "far", nil, nil) // a site with no node: its sync stays pending
	regs := imagesAPI + "/namespaces/default/registries"
	repos := imagesAPI + "/namespaces/default/repositories"
	hub.mustDo(t, call{method: http.MethodPost, path: regs, body: resourceJSON("Registry", "corp", map[string]any{"domain": "registry.example.com"})}, http.StatusCreated, nil)
	for _, r := range []string{"app", "tool"} {
		hub.mustDo(t, call{method: http.MethodPost, path: repos, body: resourceJSON("Repository", r, map[string]any{"registryName": "corp", "repositoryName": "team/" + r})}, http.StatusCreated, nil)
	}
	hub.mustDo(t, call{method: http.MethodPost, path: imagesAPI + "/imagesyncs", body: resourceJSON("ImageSync", "warm", map[string]any{"image": "registry.example.com/team/app:v1", "sites": []string{"far"}})}, http.StatusCreated, nil)
	eventually(t, 30*time.Second, func() error {
		var o struct {
			Metadata struct{ Finalizers []string } `json:"metadata"`
			Status   imagesapi.RegistryStatus      `json:"status"`
		}
		hub.mustDo(t, call{method: http.MethodGet, path: regs + "/corp"}, http.StatusOK, &o)
		if len(o.Metadata.Finalizers) != 1 || o.Status.Repositories != 2 {
			return fmt.Errorf("registry %+v", o)
		}
		return nil
	})
	hub.mustDo(t, call{method: http.MethodDelete, path: regs + "/corp"}, http.StatusOK, nil)
	eventually(t, 30*time.Second, func() error {
		if code, _ := hub.do(t, call{method: http.MethodGet, path: repos + "/app"}); code != http.StatusNotFound {
			return fmt.Errorf("repository app: %d", code)
		}
		var o struct {
			Status imagesapi.RegistryStatus `json:"status"`
		}
		hub.mustDo(t, call{method: http.MethodGet, path: regs + "/corp"}, http.StatusOK, &o)
		if !strings.Contains(o.Status.Message, "held until ImageSync warm ends") {
			return fmt.Errorf("registry status %+v", o.Status)
		}
		return nil
	})
	var list struct{ Items []object }
	hub.mustDo(t, call{method: http.MethodGet, path: repos}, http.StatusOK, &list)
	if len(list.Items) != 0 {
		t.Fatalf("repositories left: %+v", list.Items)
	}
	hub.mustDo(t, call{method: http.MethodDelete, path: imagesAPI + "/imagesyncs/warm"}, http.StatusOK, nil)
	eventually(t, 30*time.Second, func() error {
		if code, b := hub.do(t, call{method: http.MethodGet, path: regs + "/corp"}); code != http.StatusNotFound {
			return fmt.Errorf("registry corp: %d %s", code, b)
		}
		return nil
	})
}
