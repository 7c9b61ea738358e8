//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/outpost-mesh/outpost/e2e/netlab"
	"github.com/outpost-mesh/outpost/internal/pki"
	"github.com/outpost-mesh/outpost/transport"
)

const (
	// linkMbit is the tbf rate on both hosts' eth0.
	linkMbit = 100
	// linkBytesPerSec is that rate in payload-agnostic bytes: what "% of
	// link" divides by (tbf counts each frame's Ethernet, IP and transport
	// headers against it too).
	linkBytesPerSec = linkMbit * 1e6 / 8
	// linkBulk is what each run sends: about 5.4 s at 100 Mbit/s.
	linkBulk = 64 << 20
	// linkRTTs is how many 64-byte round trips each run times.
	linkRTTs = 2000
	// linkPort is the first server port; each run takes the next.
	linkPort = 9400
	// linkTimeout bounds one linkbench client call.
	linkTimeout = 90 * time.Second
)

// linkLine is one linkbench JSON result line.
type linkLine struct {
	Role       string  `json:"role"`
	Proto      string  `json:"proto"`
	GSO        bool    `json:"gso"`
	Bytes      int64   `json:"bytes"`
	Seconds    float64 `json:"seconds"`
	MBPerSec   float64 `json:"mb_per_s"`
	CPUSeconds float64 `json:"cpu_seconds"`
	CPUPerGiB  float64 `json:"cpu_s_per_gib"`
	RTTCount   int     `json:"rtt_count"`
	RTTP50us   float64 `json:"rtt_p50_us"`
	RTTP99us   float64 `json:"rtt_p99_us"`
	RTTMeanus  float64 `json:"rtt_mean_us"`
	Error      string  `json:"error"`
}

// tbfStats are a tbf qdisc's counters since it was set, and its backlog.
type tbfStats struct {
	Bytes   int64 `json:"bytes"`
	Packets int64 `json:"packets"`
	Drops   int64 `json:"drops"`
	Backlog int64 `json:"backlog"`
}

// queueSamples sum the sender's tbf backlog, sampled during the bulk call.
type queueSamples struct {
	n, sum, max int64
}

func (q *queueSamples) add(backlog int64) {
	q.n++
	q.sum += backlog
	q.max = max(q.max, backlog)
}

// ms converts a backlog in bytes to the time it waits in the queue.
func (q queueSamples) ms(backlog int64) float64 { return float64(backlog) / linkBytesPerSec * 1e3 }

func (q queueSamples) meanMS() float64 {
	if q.n == 0 {
		return 0
	}
	return q.ms(q.sum / q.n)
}

// linkRun is one protocol's run and what it measured.
type linkRun struct {
	name  string
	proto string
	noGSO bool

	rtt, client, server linkLine
	// fwd and rev are the bulk phase's tbf counters on the sender's and
	// the receiver's eth0 (data, and acknowledgements).
	fwd, rev tbfStats
	// queue is the sender's tbf backlog during the bulk call.
	queue queueSamples
}

// TestLinkBench measures bulk throughput, CPU seconds per GiB of sender and
// receiver, and 64-byte round trips, for bare quic-go, Outpost's transport
// streams and TCP + TLS 1.3, between two lab hosts whose eth0 is capped at
// 100 Mbit/s (tbf, egress, so both ways). It logs a Markdown table and
// asserts only that every run moved every byte: nothing timed. Each run
// calls the linkbench client twice, round trips then bulk, so the tbf
// counters read between the calls cover the bulk transfer alone.
// scripts/bench.sh (bench_link) runs it and prints the table.
func TestLinkBench(t *testing.T) {
	lab := netlab.New(t, "linkbench") // skips without root
	bin := buildLinkbench(t)
	srv, cli := lab.AddHost("srv"), lab.AddHost("cli")
	srv.LimitRate(linkMbit)
	cli.LimitRate(linkMbit)
	certs := t.TempDir()
	writeLinkCerts(t, certs, srv.IP())

	runs := []*linkRun{
		{name: "bare quic-go, 1 stream", proto: "quic"},
		{name: "Outpost Stream", proto: "outpost"},
		{name: "TCP + TLS 1.3, 1 conn", proto: "tcptls"},
		{name: "bare quic-go, GSO off", proto: "quic", noGSO: true},
		{name: "Outpost Stream, GSO off", proto: "outpost", noGSO: true},
	}
	for i, r := range runs {
		runLink(t, bin, certs, srv, cli, linkPort+i, r)
		t.Logf("%s: %.2f MB/s, client %.3f cpu-s, server %.3f cpu-s, sender tbf %d bytes %d pkts (%.0f bytes each) %d dropped, receiver tbf %d bytes %d pkts, sender queue mean %.1f ms max %.1f ms (%d samples)",
			r.name, r.client.MBPerSec, r.client.CPUSeconds, r.server.CPUSeconds,
			r.fwd.Bytes, r.fwd.Packets, float64(r.fwd.Bytes)/float64(max(r.fwd.Packets, 1)), r.fwd.Drops,
			r.rev.Bytes, r.rev.Packets, r.queue.meanMS(), r.queue.ms(r.queue.max), r.queue.n)
	}
	t.Logf("\n%s", linkTable(qdiscLine(t, srv), runs))
}

// runLink runs one protocol: a server on srv, then the client on cli for
// the round trips and again for the bulk transfer.
func runLink(t *testing.T, bin, certs string, srv, cli *netlab.Host, port int, r *linkRun) {
	t.Helper()
	addr := net.JoinHostPort(srv.IP(), strconv.Itoa(port))
	common := []string{"-proto", r.proto, "-addr", addr, "-certs", certs}
	if r.noGSO {
		common = append(common, "-no-gso")
	}
	p := srv.Start(bin, append([]string{"server"}, common...)...)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.Log(), "linkbench: serving") {
		if !p.Running() || time.Now().After(deadline) {
			t.Fatalf("%s: the server did not start:\n%s", r.name, p.Tail(20))
		}
		time.Sleep(50 * time.Millisecond)
	}

	r.rtt = linkClient(t, cli, bin, append(common, "-bytes", "0", "-rtt-count", strconv.Itoa(linkRTTs)), nil)
	fwd0, rev0 := tbfCounters(t, srv), tbfCounters(t, cli)
	r.client = linkClient(t, cli, bin, append(common, "-bytes", strconv.Itoa(linkBulk), "-rtt-count", "0"),
		func() { r.queue.add(tbfCounters(t, cli).Backlog) })
	fwd1, rev1 := tbfCounters(t, srv), tbfCounters(t, cli)
	// The client sends: its eth0 carries the data, the server's the acks.
	r.fwd, r.rev = rev1.minus(rev0), fwd1.minus(fwd0)

	var found bool
	for _, line := range strings.Split(p.Log(), "\n") {
		if strings.HasPrefix(line, "{") {
			if err := json.Unmarshal([]byte(line), &r.server); err != nil {
				t.Fatalf("%s: server result %q: %v", r.name, line, err)
			}
			found = true
			break
		}
	}
	if err := p.Stop(); err != nil {
		t.Errorf("%s: server: %v\n%s", r.name, err, p.Tail(20))
	}
	switch {
	case !found:
		t.Fatalf("%s: the server printed no result:\n%s", r.name, p.Tail(20))
	case r.server.Error != "" || r.server.Bytes != linkBulk:
		t.Errorf("%s: the server received %d of %d bytes (%s)", r.name, r.server.Bytes, linkBulk, r.server.Error)
	case r.client.Bytes != linkBulk:
		t.Errorf("%s: the client had %d of %d bytes acknowledged", r.name, r.client.Bytes, linkBulk)
	}
}

// linkClient runs the linkbench client on h and returns its result line;
// while it runs, sample (if not nil) is called every 100 ms.
func linkClient(t *testing.T, h *netlab.Host, bin string, args []string, sample func()) linkLine {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), linkTimeout)
	defer cancel()
	cmd := h.Command(ctx, bin, append([]string{"client"}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("linkbench client: %v", err)
	}
	done := make(chan error, 1) // buffered: the waiter never blocks
	var g errgroup.Group
	g.Go(func() error {
		done <- cmd.Wait()
		return nil
	})
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var err error
	for waiting := true; waiting; {
		select {
		case err = <-done:
			waiting = false
		case <-tick.C:
			if sample != nil {
				sample()
			}
		}
	}
	_ = g.Wait()
	if err != nil {
		t.Fatalf("linkbench client %s: %v\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	var res linkLine
	if err := json.Unmarshal(bytes.TrimSpace(stdout.Bytes()), &res); err != nil {
		t.Fatalf("linkbench client output %q: %v\n%s", stdout.String(), err, stderr.String())
	}
	if s := strings.TrimSpace(stderr.String()); s != "" {
		t.Logf("linkbench client %s stderr: %s", args[1], s)
	}
	return res
}

// buildLinkbench builds the linkbench command into a temporary directory.
func buildLinkbench(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "linkbench")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/outpost-mesh/outpost/e2e/linkbench").CombinedOutput()
	if err != nil {
		t.Fatalf("go build ./e2e/linkbench: %v\n%s", err, out)
	}
	return bin
}

// writeLinkCerts writes a mesh CA and two node certificates into dir, as
// linkbench -certs expects them: the server's (hub-1, with serverIP as a
// SAN, which TCP + TLS verifies) and the client's (edge-1).
func writeLinkCerts(t *testing.T, dir, serverIP string) {
	t.Helper()
	ca, err := pki.LoadOrCreate(dir, "linkbench CA") // writes ca.crt and ca.key
	if err != nil {
		t.Fatal(err)
	}
	server, err := transport.IssueNodeCert(ca, "hub-1", "hub", transport.RoleHub, []net.IP{net.ParseIP(serverIP)}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	client, err := transport.IssueNodeCert(ca, "edge-1", "a", transport.RoleEdge, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]tls.Certificate{"server": server, "client": client} {
		var chain []byte
		for _, der := range c.Certificate {
			chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
		}
		key, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name+".crt"), chain, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name+".key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// tbfCounters reads the counters of the tbf on h's eth0.
func tbfCounters(t *testing.T, h *netlab.Host) tbfStats {
	t.Helper()
	out, err := h.Command(t.Context(), "tc", "-s", "-j", "qdisc", "show", "dev", "eth0").Output()
	if err != nil {
		t.Fatalf("tc -s -j qdisc show on %s: %v", h.Name(), err)
	}
	var qdiscs []struct {
		Kind string `json:"kind"`
		tbfStats
	}
	if err := json.Unmarshal(out, &qdiscs); err != nil {
		t.Fatalf("tc -s -j qdisc show on %s: %v\n%s", h.Name(), err, out)
	}
	for _, q := range qdiscs {
		if q.Kind == "tbf" {
			return q.tbfStats
		}
	}
	t.Fatalf("no tbf on %s's eth0:\n%s", h.Name(), out)
	return tbfStats{}
}

// minus is the traffic between two readings; Backlog is the later one.
func (a tbfStats) minus(b tbfStats) tbfStats {
	return tbfStats{Bytes: a.Bytes - b.Bytes, Packets: a.Packets - b.Packets, Drops: a.Drops - b.Drops, Backlog: a.Backlog}
}

// qdiscLine is the first line of `tc qdisc show dev eth0` on h: the tbf's
// parameters as the kernel holds them.
func qdiscLine(t *testing.T, h *netlab.Host) string {
	t.Helper()
	out, err := h.Command(t.Context(), "tc", "qdisc", "show", "dev", "eth0").Output()
	if err != nil {
		t.Fatalf("tc qdisc show on %s: %v", h.Name(), err)
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}

// linkTable formats the runs as a Markdown table; every line that
// bench_link prints starts with "|" or "link: ".
func linkTable(qdisc string, runs []*linkRun) string {
	var b strings.Builder
	fmt.Fprintf(&b, "link: %d Mbit/s each way, on both hosts' eth0: %s\n", linkMbit, qdisc)
	fmt.Fprintf(&b, "link: %d MiB per run in 32 KiB writes, %d round trips of 64 bytes\n\n", linkBulk>>20, linkRTTs)
	b.WriteString("| protocol | MB/s | % of link | sender cpu-s/GiB | receiver cpu-s/GiB | 64-byte RTT p50 µs | RTT p99 µs | link busy % | wire bytes / payload | acks, % of payload | queue under load, mean ms | tbf drops |\n")
	b.WriteString("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, r := range runs {
		busy := float64(r.fwd.Bytes) / (r.client.Seconds * linkBytesPerSec) * 100
		fmt.Fprintf(&b, "| %s | %.2f | %.1f | %.2f | %.2f | %.0f | %.0f | %.1f | %.4f | %.2f | %.1f | %d |\n",
			r.name, r.client.MBPerSec, r.client.MBPerSec*1e6/linkBytesPerSec*100,
			r.client.CPUPerGiB, r.server.CPUPerGiB, r.rtt.RTTP50us, r.rtt.RTTP99us,
			busy, float64(r.fwd.Bytes)/linkBulk, float64(r.rev.Bytes)/linkBulk*100, r.queue.meanMS(), r.fwd.Drops)
	}
	fmt.Fprintf(&b, "\nlink: MB/s is 10^6 bytes/s of payload, timed by the sender from its first write to the receiver's count; %% of link = MB/s / %.1f.\n", linkBytesPerSec/1e6)
	b.WriteString("link: link busy % = bytes tbf let out of the sender's eth0 (frames: Ethernet, IP and transport headers included) / transfer time / rate.\n")
	b.WriteString("link: wire bytes / payload and acks are tbf byte counts on the sender's and the receiver's eth0 over the bulk call (its handshake included).\n")
	b.WriteString("link: queue under load = the sender's tbf backlog, sampled every 100 ms during the bulk call, / rate: what a packet behind the transfer waits.\n")
	b.WriteString("link: cpu-s/GiB is each process's own getrusage (user + system); kernel work in softirq context lands on whichever process runs, or on none.\n")
	return b.String()
}
