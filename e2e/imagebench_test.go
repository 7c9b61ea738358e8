//go:build e2e && imagebench

package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/outpost-mesh/outpost/e2e/netlab"
)

const (
	// The warm-pull image: 8 layers of 128 MiB.
	ibLayers    = 8
	ibLayerSize = 128 << 20
	// ibBlobSize is the one blob fetched from a peer.
	ibBlobSize = 1 << 30
	// The image a whole site pulls cold at once: 4 layers of 64 MiB.
	ibWANLayers    = 4
	ibWANLayerSize = 64 << 20
	// ibSiteNodes is the size of the site.
	ibSiteNodes = 10
	// ibWarmRuns is how many warm pulls each side makes.
	ibWarmRuns = 3
	// ibLinkMbit is the tbf rate of the limited link, on both hosts.
	ibLinkMbit        = 1000
	ibLinkBytesPerSec = ibLinkMbit * 1e6 / 8
	// ibMirror is every node's mirror, in its own namespace.
	ibMirror = "127.0.0.1:5000"
	// ibDistLoopback is Distribution beside node a-1, for the warm pull;
	// ibDistTLSPort its HTTPS instance on a-1's address, ibDistPort the
	// plain one on the hub's address (the direct pulls).
	ibDistLoopback = "127.0.0.2:5000"
	ibDistTLSPort  = 5443
	ibDistPort     = 5000
	// ibPullTimeout bounds one skopeo call, ibGetTimeout one curl.
	ibPullTimeout = 3 * time.Minute
	ibGetTimeout  = 2 * time.Minute
	// ibIndexWait lets a holding reach the site's blob index (reports are
	// debounced by 100 ms and go through the site leader).
	ibIndexWait = 3 * time.Second
	// ibIdleWindow is how long the hub's idle QUIC traffic is sampled.
	ibIdleWindow = 5 * time.Second
)

// imageBench is one run of TestImageBench.
type imageBench struct {
	t *testing.T
	m *mesh
	// ctx ends with the test, or at once on SIGINT or SIGTERM.
	ctx context.Context
	// scratch is where skopeo writes its copies (tmpfs when there is one).
	scratch string

	hub  *meshNode
	site []*meshNode
	// big is the warm-pull image, blob the image whose one layer is the
	// peer-fetched blob, wan the image the site pulls at once.
	big, blob, wan ibImage
	// hubQUIC counts what the hub sends from its QUIC port.
	hubQUIC *ibCounter
	// dist serves big on a-1's loopback, distTLS the same storage over
	// HTTPS on a-1's address, distHub wan on the hub's address.
	dist, distTLS, distHub *netlab.Proc
	tls                    ibTLS

	res ibResults
}

// TestImageBench is `make bench-images`: the image cache against CNCF
// Distribution (Debian's docker-registry), on a hub and a site of ten
// `outpost node` processes in network namespaces, all on this machine.
//
//  1. A warm pull of a 1 GiB image with skopeo through node a-1's mirror
//     (the image in its store) and from Distribution on a-1's loopback.
//  2. One 1 GiB blob that a node lacks, fetched through its mirror from a
//     site peer over QUIC, against an HTTPS GET of it from Distribution on
//     a-1 by the same node: three nodes between namespaces on this host,
//     then three across a 1 Gbit/s tbf link.
//  3. The bytes the hub's QUIC port sends while all ten nodes pull a
//     256 MiB image cold at once, against ten direct pulls from
//     Distribution.
//
// It prints a Markdown table and asserts only that every transfer was
// whole and took the path it measures: nothing timed. On SIGINT or SIGTERM
// it kills what runs in its namespaces, fails, and its cleanup deletes them.
func TestImageBench(t *testing.T) {
	m := newLab(t, topology{hubs: 1, sites: []siteSpec{{"a", ibSiteNodes}}}) // skips without root
	for _, tool := range []string{"skopeo", "docker-registry", "curl", "iptables", "tc"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed: run scripts/test-deps.sh", tool)
		}
	}
	b := &imageBench{t: t, m: m, ctx: ibInterruptible(t, m.lab), scratch: ibScratchDir(t)}
	b.res.cores = runtime.NumCPU()
	b.res.uptime[0] = ibUptime()
	b.res.distVersion = ibDistributionVersion()
	b.hub = m.node("hub-1")
	b.hub.args = []string{"--registry-push"}
	b.site = m.siteNodes("a")

	// The images are written while the mesh forms. If the test fails
	// first, the context ends the writing and the cleanup waits for it.
	var g errgroup.Group
	g.Go(b.writeImages)
	t.Cleanup(func() { _ = g.Wait() })
	m.bootstrap()
	m.waitFormed()
	if err := g.Wait(); err != nil {
		t.Fatalf("write the images: %v", err)
	}
	m.logf("mesh formed; images written: %d, %d and %d bytes", b.big.size, b.blob.size, b.wan.size)
	b.hubQUIC = b.newCounter(b.hub.host, "udp", quicPort)
	b.startRegistries()

	b.warmPulls()
	b.peerFetches()
	b.wanBytes()

	b.res.uptime[1] = ibUptime()
	var out strings.Builder
	b.res.table(&out, b.big, b.blob, b.wan)
	t.Logf("done in %s", time.Since(m.start).Round(time.Second))
	fmt.Print(out.String())
}

// writeImages writes the three OCI layouts.
func (b *imageBench) writeImages() error {
	var err error
	dir := filepath.Join(b.m.dir, "layouts")
	if b.big, err = ibWriteImage(b.ctx, filepath.Join(dir, "big"), ibLayers, ibLayerSize); err != nil {
		return err
	}
	if b.blob, err = ibWriteImage(b.ctx, filepath.Join(dir, "blob"), 1, ibBlobSize); err != nil {
		return err
	}
	b.wan, err = ibWriteImage(b.ctx, filepath.Join(dir, "wan"), ibWANLayers, ibWANLayerSize)
	return err
}

// startRegistries pushes the images to the hub's registry, starts the
// three Distribution instances and pushes their images.
func (b *imageBench) startRegistries() {
	creds := "outpost:" + adminToken(b.t, b.m)
	for _, img := range []struct {
		img  ibImage
		repo string
	}{{b.big, "bench/big"}, {b.blob, "bench/blob"}, {b.wan, "bench/wan"}} {
		b.push(b.hub.host, img.img, ibMirror+"/"+img.repo+":v1", creds)
	}
	b.m.logf("pushed bench/big, bench/blob and bench/wan to the hub's registry")

	a1 := b.site[0]
	storage := filepath.Join(b.m.dir, "dist-a1")
	b.dist = b.distribution(a1.host, "dist-a1", ibDistLoopback, storage, nil)
	b.push(a1.host, b.big, ibDistLoopback+"/bench/big:v1", "")
	b.push(a1.host, b.blob, ibDistLoopback+"/bench/blob:v1", "")
	b.tls = b.writeTLS(b.m.dir, a1.host.IP())
	b.distTLS = b.distribution(a1.host, "dist-a1-tls", net.JoinHostPort(a1.host.IP(), strconv.Itoa(ibDistTLSPort)), storage, &b.tls)

	hubAddr := net.JoinHostPort(b.hub.host.IP(), strconv.Itoa(ibDistPort))
	b.distHub = b.distribution(b.hub.host, "dist-hub", hubAddr, filepath.Join(b.m.dir, "dist-hub"), nil)
	b.push(b.hub.host, b.wan, hubAddr+"/bench/wan:v1", "")
	b.m.logf("Distribution serves bench/big and bench/blob on a-1 (%s, https://%s:%d) and bench/wan on %s",
		ibDistLoopback, a1.host.IP(), ibDistTLSPort, hubAddr)
}

// warmPulls fills a-1's store (a cold pull of both images from the hub's
// tier), then alternates warm pulls through a-1's mirror and from
// Distribution on a-1's loopback.
func (b *imageBench) warmPulls() {
	a1 := b.site[0]
	for _, img := range []struct {
		img  ibImage
		repo string
	}{{b.big, "bench/big"}, {b.blob, "bench/blob"}} {
		r := b.mustPull(a1.host, ibMirror+"/"+img.repo+":v1", img.img.size)
		b.m.logf("cold pull of %s through a-1 (from the hub's tier over QUIC): %.1f MB/s", img.repo, float64(img.img.size)/1e6/r.wall.Seconds())
	}
	b.phase("warm pull")
	for i := range ibWarmRuns {
		ours := b.timedPull(a1.host, a1.proc, ibMirror+"/bench/big:v1", b.big.size)
		dist := b.timedPull(a1.host, b.dist, ibDistLoopback+"/bench/big:v1", b.big.size)
		b.res.warm, b.res.warmDist = append(b.res.warm, ours), append(b.res.warmDist, dist)
		b.m.logf("warm pull %d: mirror %s; Distribution %s", i+1, ours, dist)
	}
}

// timedPull pulls ref with skopeo on h and measures the CPU of server.
func (b *imageBench) timedPull(h *netlab.Host, server *netlab.Proc, ref string, size int64) ibSample {
	c0 := b.cpu(server)
	r := b.mustPull(h, ref, size)
	c1 := b.cpu(server)
	return ibSample{bytes: size, seconds: r.wall.Seconds(), client: r.cpu, server: c1[0] - c0[0], from: server.String()}
}

// wanBytes counts what leaves the hub while every node of the site pulls
// the wan image cold at once through its mirror, then while as many
// skopeo pulls take it straight from Distribution on the hub's address.
func (b *imageBench) wanBytes() {
	direct := b.newCounter(b.hub.host, "tcp", ibDistPort)
	b.phase("WAN bytes")
	q0 := b.hubQUIC.read()
	select {
	case <-time.After(ibIdleWindow):
	case <-b.ctx.Done():
		b.t.Fatal(b.ctx.Err())
	}
	q1 := b.hubQUIC.read()
	b.res.idleRate = float64(q1-q0) / ibIdleWindow.Seconds()

	start := time.Now()
	b.pullAll(func(n *meshNode) string { return ibMirror + "/bench/wan:v1" })
	b.res.wanSeconds = time.Since(start).Seconds()
	b.res.wanOurs = b.hubQUIC.read() - q1
	b.m.logf("%d nodes pulled bench/wan cold at once in %.1f s: the hub's QUIC port sent %d bytes for a %d-byte image",
		len(b.site), b.res.wanSeconds, b.res.wanOurs, b.wan.size)

	d0 := direct.read()
	hubAddr := net.JoinHostPort(b.hub.host.IP(), strconv.Itoa(ibDistPort))
	b.pullAll(func(n *meshNode) string { return hubAddr + "/bench/wan:v1" })
	b.res.wanDirect = direct.read() - d0
	b.m.logf("%d direct pulls from Distribution: it sent %d bytes", len(b.site), b.res.wanDirect)
}

// pullAll pulls the wan image with skopeo on every node of the site at
// once, from ref(node), and fails the test if any pull fails.
func (b *imageBench) pullAll(ref func(*meshNode) string) {
	b.t.Helper()
	errs := make([]error, len(b.site))
	var wg sync.WaitGroup
	for i, n := range b.site {
		wg.Go(func() { _, errs[i] = b.pull(n.host, ref(n), b.wan.size) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		b.t.Fatal(err)
	}
}

// phase records the load average as a phase starts.
func (b *imageBench) phase(name string) {
	l := ibLoadavg()
	b.res.loads = append(b.res.loads, ibLoad{phase: name, load: l})
	b.m.logf("phase %s (load average %.2f)", name, l)
}

// ibInterruptible returns a context that ends with the test, or at once on
// SIGINT or SIGTERM. A signal also kills every process in the lab's
// namespaces (only the bench's own run there), so the test fails at its
// next step and its cleanup deletes the lab.
func ibInterruptible(t *testing.T, lab *netlab.Lab) context.Context {
	ctx, cancel := context.WithCancel(t.Context())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	var g errgroup.Group
	g.Go(func() error {
		select {
		case sig := <-sigs:
			cancel()
			for _, h := range lab.Hosts() {
				ibKillNamespace(h.Namespace())
			}
			fmt.Fprintf(os.Stderr, "imagebench: %v: stopped the lab's processes; cleaning up\n", sig)
		case <-ctx.Done():
		}
		return nil
	})
	t.Cleanup(func() {
		signal.Stop(sigs)
		cancel()
		_ = g.Wait()
	})
	return ctx
}

// ibKillNamespace sends SIGKILL to every process in the namespace ns.
func ibKillNamespace(ns string) {
	out, err := exec.Command("ip", "netns", "pids", ns).Output()
	if err != nil {
		return
	}
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 1 && pid != os.Getpid() {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// ibScratchDir is a directory on tmpfs (/dev/shm) when there is one, else
// under the test's temporary directory, removed at the end.
func ibScratchDir(t *testing.T) string {
	dir, err := os.MkdirTemp("/dev/shm", "imagebench-")
	if err != nil {
		return t.TempDir()
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// ibUptime is the output of uptime(1), trimmed.
func ibUptime() string {
	out, err := exec.Command("uptime").Output()
	if err != nil {
		return "(uptime: " + err.Error() + ")"
	}
	return strings.TrimSpace(string(out))
}

// ibDistributionVersion is docker-registry's version, e.g. 2.8.2+ds1.
func ibDistributionVersion() string {
	out, err := exec.Command("docker-registry", "--version").Output()
	if err != nil {
		return ""
	}
	f := strings.Fields(string(out))
	if len(f) == 0 {
		return ""
	}
	return f[len(f)-1]
}
