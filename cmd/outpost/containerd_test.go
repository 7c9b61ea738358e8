package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// TestMirrorWithContainerd: containerd (Debian's package, started here
// with its root, state and socket in temporary directories) pulls an image
// of an origin registry through the node's mirror, configured by the
// hosts.toml files that `outpost images mirror-config --write` writes.
// containerd itself never reaches the origin: every request there comes
// from the node's fetch chain.
func TestMirrorWithContainerd(t *testing.T) {
	for _, tool := range []string{"containerd", "ctr"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed: run scripts/test-deps.sh (apt-get install containerd)", tool)
		}
	}
	bin := outpostBinary(t)

	// The origin records who asks it for what.
	var mu sync.Mutex
	agents := map[string]int{}
	reg := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/blobs/") && r.Method == http.MethodGet {
			mu.Lock()
			agents[r.UserAgent()]++
			mu.Unlock()
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(origin.Close)
	originHost := strings.TrimPrefix(origin.URL, "http://")
	img, err := random.Image(300_000, 2)
	if err != nil {
		t.Fatal(err)
	}
	ref := originHost + "/library/app:v1"
	pref, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(pref, img, remote.WithContext(t.Context())); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	clear(agents) // the push's own requests
	mu.Unlock()

	mirror := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t, "tcp")))
	d := startDaemon(t, bin, t.TempDir(), "--registry-addr", mirror)
	hosts := t.TempDir()
	d.ok(t, "", "images", "mirror-config", "--runtime", "containerd", "--write", "--hosts-dir", hosts, "--registry-addr", mirror)

	sock := startContainerd(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ctr", "--address", sock, "images", "pull", "--hosts-dir", hosts, ref).CombinedOutput()
	if err != nil {
		t.Fatalf("ctr images pull %s through the mirror: %v\n%s", ref, err, out)
	}
	digest, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	out, err = exec.CommandContext(ctx, "ctr", "--address", sock, "images", "ls").CombinedOutput()
	if err != nil || !strings.Contains(string(out), digest.String()) {
		t.Fatalf("ctr images ls (want %s): %v\n%s", digest, err, out)
	}
	mu.Lock()
	defer mu.Unlock()
	var fromChain int
	for ua, n := range agents {
		if strings.Contains(ua, "containerd") {
			t.Errorf("containerd fetched %d blobs from the origin itself (%q)", n, ua)
		} else {
			fromChain += n
		}
	}
	if fromChain == 0 {
		t.Fatalf("the origin served no blob to the node: %v", agents)
	}
}

// startContainerd runs containerd with everything in a temporary directory
// (a short one: the socket path must fit in 108 bytes) and returns its
// socket. It is stopped on cleanup.
func startContainerd(t *testing.T) string {
	dir, err := os.MkdirTemp("", "ctrd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "c.sock")
	cfg := filepath.Join(dir, "config.toml")
	// No CRI: the test needs the content and image services only.
	conf := fmt.Sprintf("version = 2\nroot = %q\nstate = %q\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = %q\n",
		filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock)
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	cmd := exec.Command("containerd", "--config", cfg)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("containerd printed:\n%s", logs.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			t.Fatalf("containerd exited: %s", logs.String())
		default:
		}
		if exec.Command("ctr", "--address", sock, "version").Run() == nil {
			return sock
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("containerd not ready within 30s:\n%s", logs.String())
	return ""
}
