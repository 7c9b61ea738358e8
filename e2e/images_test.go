//go:build e2e

package e2e

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"sigs.k8s.io/yaml"

	"github.com/outpost-mesh/outpost/e2e/netlab"
	"github.com/outpost-mesh/outpost/images/store"
)

// skopeoTimeout bounds one skopeo call (a 200 MiB copy takes seconds).
const skopeoTimeout = 3 * time.Minute

// TestImagesSiteCache: a site of four nodes behind a hub whose own
// registry holds a 200 MiB image (pushed with skopeo and an API token).
//
//   - Three nodes pull it at once, cold: the bytes the hub's QUIC port sends
//     (an iptables counter in its namespace) are the image's size once,
//     not three times.
//   - The site is cut off from the hub (its only origin): pulls by tag
//     through every node still succeed, the fourth node's too, which never
//     had the image (it reads it from its peers, and the tag resolves to
//     the digest the site agreed on).
//   - With the link back, a peer's copy of a blob is corrupted on disk: a
//     node that reads it detects the mismatch at the next mark, keeps the
//     intervals before it and fetches the rest of the blob elsewhere
//     and skopeo, which checks every digest, gets the image; the corrupt
//     copy is deleted from the peer.
func TestImagesSiteCache(t *testing.T) {
	if _, err := exec.LookPath("skopeo"); err != nil {
		t.Fatal("skopeo is not installed: run scripts/test-deps.sh")
	}
	m := newLab(t, topology{hubs: 1, sites: []siteSpec{{"a", 4}}})
	hub := m.node("hub-1")
	hub.args = []string{"--registry-push"}
	m.bootstrap()
	m.waitFormed()
	site := m.siteNodes("a")
	token := adminToken(t, m)

	big := writeLayout(t, filepath.Join(m.dir, "big"), 50<<20, 4)
	bigSize := imageSize(t, big)
	push(t, m, hub, token, filepath.Join(m.dir, "big"), "e2e/big:v1")
	m.logf("pushed e2e/big:v1 (%d MiB) to the hub's registry", bigSize>>20)

	sent := newUDPCounter(t, hub.host, quicPort)
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i, n := range site[:3] {
		wg.Go(func() { errs[i] = pullThrough(t, n, "e2e/big:v1") })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	hubBytes := sent.read(t)
	m.logf("3 nodes pulled the image at once; the hub sent %d bytes for %d bytes of image (%.3f×)", hubBytes, bigSize, float64(hubBytes)/float64(bigSize))
	if hubBytes < bigSize || float64(hubBytes) > 1.1*float64(bigSize) {
		t.Fatalf("the hub sent %d bytes for three cold pulls of a %d-byte image; want the image once (at most 1.1×)", hubBytes, bigSize)
	}

	// Cut off: the hub is the site's only way out.
	for _, n := range site {
		n.host.Block(hub.host)
	}
	m.logf("site a cut off from the hub")
	for _, n := range site {
		m.eventually(2*time.Minute, "a pull through "+n.name+" while cut off", func() error {
			return pullThrough(t, n, "e2e/big:v1")
		})
		m.logf("%s served e2e/big:v1 while cut off", n.name)
	}
	for _, n := range site {
		n.host.Unblock(hub.host)
	}
	m.logf("cut lifted")

	// A corrupt peer copy: its layer spans two and a half marks, and the
	// damage is in the second interval.
	small := writeLayout(t, filepath.Join(m.dir, "small"), 20<<20, 1)
	push(t, m, hub, token, filepath.Join(m.dir, "small"), "e2e/small:v1")
	holder, reader := site[0], site[1]
	m.eventually(waitLong, "a pull of e2e/small:v1 through "+holder.name, func() error {
		return pullThrough(t, holder, "e2e/small:v1")
	})
	layers, err := small.Layers()
	if err != nil {
		t.Fatal(err)
	}
	ld, err := layers[0].Digest()
	if err != nil {
		t.Fatal(err)
	}
	blob := filepath.Join(holder.dataDir, "images", "blobs", "sha256", ld.Hex[:2], ld.Hex)
	time.Sleep(2 * time.Second) // the site's blob index learns that holder has it
	corrupt(t, blob)
	m.logf("corrupted %s's copy of %s", holder.name, ld)
	before := sent.read(t)
	if err := pullThrough(t, reader, "e2e/small:v1"); err != nil {
		t.Fatalf("a pull past a corrupt peer copy: %v", err)
	}
	// The reader kept the interval before the damage (its mark matched)
	// and took the rest from the hub.
	layerSize, _ := layers[0].Size()
	if got := sent.read(t) - before; got < layerSize-store.MarkInterval || got >= layerSize {
		t.Fatalf("the hub sent %d bytes after the corrupt copy was found; want the %d bytes of the layer after its first mark", got, layerSize-store.MarkInterval)
	}
	m.eventually(waitLong, holder.name+" deletes its corrupt copy", func() error {
		if _, err := os.Stat(blob); err == nil {
			return fmt.Errorf("%s still exists", blob)
		}
		return nil
	})

	// An OTA write of a 100 MiB file to every node of the site, its
	// content from the cache: the file crosses the hub link once.
	payload := filepath.Join(m.dir, "payload.bin")
	writeRandomFile(t, payload, 100<<20)
	out, err := m.run(hub.host, "--config", m.admin[hub.name], "blob", "push", payload)
	if err != nil {
		t.Fatal(err)
	}
	var from otaContentFrom
	if err := yaml.Unmarshal([]byte(out), &struct {
		ContentFrom *otaContentFrom `json:"contentFrom"`
	}{&from}); err != nil || from.Size != 100<<20 {
		t.Fatalf("outpost blob push printed %q (%v)", out, err)
	}
	dest := filepath.Join(m.dir, "written", "payload.bin")
	before = sent.read(t)
	m.otaApply(hub, newOTATask("payload", otaSpec{Steps: []otaStep{{Name: "install", Type: "write", Path: dest, ContentFrom: &from}}}))
	m.otaWaitPhase(hub, "payload", "Succeeded", otaWait)
	got := sent.read(t) - before
	m.logf("a 100 MiB contentFrom write on the site's 4 nodes: the hub sent %d bytes (%.3f× the file)", got, float64(got)/float64(from.Size))
	if got < from.Size || float64(got) > 1.1*float64(from.Size) {
		t.Fatalf("the hub sent %d bytes for a %d-byte contentFrom written on 4 nodes; want the file once (at most 1.1×)", got, from.Size)
	}
	if sum := fileSHA256(t, dest); "sha256:"+sum != from.Blob {
		t.Fatalf("written file has sha256 %s, want %s", sum, from.Blob)
	}
}

func writeRandomFile(t *testing.T, path string, size int64) {
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.CopyN(f, rand.Reader, size); err != nil {
		t.Fatal(err)
	}
}

func fileSHA256(t *testing.T, path string) string {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// adminToken reads the API token of hub-1's admin.yaml.
func adminToken(t *testing.T, m *mesh) string {
	cfg, err := readYAML(filepath.Join(m.node("hub-1").dataDir, "admin.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := cfg["token"].(string)
	if tok == "" {
		t.Fatal("admin.yaml has no token")
	}
	return tok
}

// writeLayout writes a random OCI image of n layers of size bytes each as
// an OCI layout with the tag "v1", and returns it.
func writeLayout(t *testing.T, dir string, size, n int64) v1.Image {
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	for range n {
		l, err := random.Layer(size, types.OCILayer)
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			t.Fatal(err)
		}
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "v1"})); err != nil {
		t.Fatal(err)
	}
	return img
}

// imageSize is the bytes of an image's blobs (layers and config).
func imageSize(t *testing.T, img v1.Image) int64 {
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, l := range layers {
		s, err := l.Size()
		if err != nil {
			t.Fatal(err)
		}
		total += s
	}
	raw, err := img.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	return total + int64(len(raw))
}

// push copies the layout in dir to the hub's registry with skopeo, from
// the hub's own namespace.
func push(t *testing.T, m *mesh, hub *meshNode, token, dir, ref string) {
	out, err := skopeoOn(t, hub.host, "copy", "--dest-tls-verify=false", "--dest-creds", "outpost:"+token,
		"oci:"+dir+":v1", "docker://127.0.0.1:5000/"+ref)
	if err != nil {
		t.Fatalf("push %s: %v\n%s", ref, err, out)
	}
}

// pullThrough copies ref from n's mirror (127.0.0.1:5000 in its namespace;
// no ns: the hub's own registry) to a directory, which skopeo checks
// against every digest, and removes the copy.
func pullThrough(t *testing.T, n *meshNode, ref string) error {
	dir, err := os.MkdirTemp("", "pull-"+n.name+"-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	out, err := skopeoOn(t, n.host, "copy", "--src-tls-verify=false", "docker://127.0.0.1:5000/"+ref, "dir:"+dir)
	if err != nil {
		return fmt.Errorf("pull %s through %s: %w: %s", ref, n.name, err, lastLine(out))
	}
	return nil
}

func skopeoOn(t *testing.T, h *netlab.Host, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(t.Context(), skopeoTimeout)
	defer cancel()
	out, err := h.Command(ctx, "skopeo", append([]string{"--insecure-policy"}, args...)...).CombinedOutput()
	return string(out), err
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// corrupt flips bytes in the middle of a file, keeping its size.
func corrupt(t *testing.T, path string) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	off := st.Size() / 2
	if _, err := f.ReadAt(buf, off); err != nil {
		t.Fatal(err)
	}
	for i := range buf {
		buf[i] ^= 0xff
	}
	if _, err := f.WriteAt(buf, off); err != nil {
		t.Fatal(err)
	}
}

// udpCounter counts the bytes a host sends from a UDP port, with an
// iptables rule in its namespace (no target: it only counts).
type udpCounter struct {
	h    *netlab.Host
	port int
}

func newUDPCounter(t *testing.T, h *netlab.Host, port int) *udpCounter {
	c := &udpCounter{h: h, port: port}
	if out, err := h.Command(t.Context(), "iptables", "-w", "5", "-A", "OUTPUT", "-p", "udp", "--sport", strconv.Itoa(port)).CombinedOutput(); err != nil {
		t.Fatalf("iptables on %s: %v: %s", h.Name(), err, out)
	}
	return c
}

// read returns the bytes counted so far.
func (c *udpCounter) read(t *testing.T) int64 {
	out, err := c.h.Command(t.Context(), "iptables", "-w", "5", "-L", "OUTPUT", "-v", "-x", "-n").CombinedOutput()
	if err != nil {
		t.Fatalf("iptables -L on %s: %v: %s", c.h.Name(), err, out)
	}
	want := "udp spt:" + strconv.Itoa(c.port)
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) > 2 && strings.HasSuffix(strings.TrimSpace(line), want) {
			n, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				t.Fatalf("iptables counter %q: %v", line, err)
			}
			return n
		}
	}
	t.Fatalf("no counter for %s on %s:\n%s", want, c.h.Name(), out)
	return 0
}
