//go:build e2e && imagebench

package e2e

import (
	"fmt"
	"io"
	"slices"
	"strings"
)

// ibSample is one timed transfer and the CPU it cost.
type ibSample struct {
	bytes   int64
	seconds float64
	// client, server and receiver are CPU seconds: the client (skopeo,
	// curl); the process that served the bytes (the node or registry that
	// held them); and, for a fetch from a peer, the node that fetched
	// them for its client.
	client, server, receiver float64
	// wire is what the sender's eth0 sent during a fetch, wireSeconds when
	// it had sent it (from the start of the request), linkBytes what its
	// tbf let out (frames, headers included) on the limited link; from
	// names the sender.
	wire        int64
	wireSeconds float64
	linkBytes   int64
	from        string
}

func (s ibSample) mbps() float64 { return float64(s.bytes) / 1e6 / s.seconds }

// perGiB converts CPU seconds of this transfer to CPU seconds per GiB.
func (s ibSample) perGiB(cpu float64) float64 { return cpu / (float64(s.bytes) / (1 << 30)) }

func (s ibSample) cpuTotal() float64 { return s.client + s.server + s.receiver }

// wireMBps is the payload rate until the sender had sent the blob.
func (s ibSample) wireMBps() float64 { return float64(s.bytes) / 1e6 / s.wireSeconds }

// ibLinkPct is a payload rate in MB/s as a share of the limited link's.
func ibLinkPct(mbps float64) float64 { return mbps * 1e6 / ibLinkBytesPerSec * 100 }

// framingPct is the blob's bytes as a share of what the sender's tbf let
// out for it: the most of the link a transfer can carry as payload.
func (s ibSample) framingPct() float64 { return float64(s.bytes) / float64(s.linkBytes) * 100 }

// busyPct is what the sender's tbf let out until it had sent the blob,
// as a share of the link's rate.
func (s ibSample) busyPct() float64 {
	return float64(s.linkBytes) / s.wireSeconds / ibLinkBytesPerSec * 100
}

func (s ibSample) String() string {
	out := fmt.Sprintf("%.1f MB/s, CPU-s client %.2f server %.2f", s.mbps(), s.client, s.server)
	if s.receiver > 0 {
		out += fmt.Sprintf(" fetching node %.2f", s.receiver)
	}
	if s.wireSeconds > 0 {
		out += fmt.Sprintf(", from %s (%d bytes off its eth0 in %.2f s: %.1f MB/s)", s.from, s.wire, s.wireSeconds, s.wireMBps())
	}
	if s.linkBytes > 0 {
		out += fmt.Sprintf(", link busy %.1f%%", s.busyPct())
	}
	return out
}

// ibResults is everything the table shows.
type ibResults struct {
	distVersion string
	// warm and warmDist are the warm pulls, in the order they ran.
	// peerLocal and distLocal are the fetches of the blob on this host,
	// peerLink and distLink across the limited link.
	warm, warmDist       []ibSample
	peerLocal, distLocal []ibSample
	peerLink, distLink   []ibSample
	// wanOurs is what the hub's QUIC port sent while every node of the
	// site pulled the image at once; wanDirect what Distribution sent for
	// as many direct pulls; idleRate the hub's QUIC port's idle bytes/s.
	wanOurs, wanDirect int64
	wanSeconds         float64
	idleRate           float64
	// loads are the 1-minute load averages at each phase's start.
	loads  []ibLoad
	uptime [2]string
	cores  int
}

type ibLoad struct {
	phase string
	load  float64
}

// ibMedian is the run of median throughput.
func ibMedian(runs []ibSample) ibSample {
	s := slices.Clone(runs)
	slices.SortFunc(s, func(a, b ibSample) int {
		switch {
		case a.mbps() < b.mbps():
			return -1
		case a.mbps() > b.mbps():
			return 1
		}
		return 0
	})
	return s[len(s)/2]
}

func ibRatio(a, b float64) string {
	if b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f", a/b)
}

func ibMet(ok bool) string {
	if ok {
		return "met"
	}
	return "**not met**"
}

// table writes the Markdown table and the notes under it.
func (r *ibResults) table(w io.Writer, big, blob, wan ibImage) {
	const gib = 1 << 30
	warm, warmDist := ibMedian(r.warm), ibMedian(r.warmDist)
	fmt.Fprintf(w, "\n| measure | Outpost | CNCF Distribution %s | Outpost / Distribution | goal |\n", r.distVersion)
	fmt.Fprintln(w, "|---|--:|--:|--:|---|")
	fmt.Fprintf(w, "| warm pull of a %.2f GiB image (%d layers), skopeo → `dir:`, loopback: MB/s, median of %d | %.0f | %.0f | %.3f | ≥ 1.00: %s |\n",
		float64(big.size)/gib, len(big.layers), len(r.warm), warm.mbps(), warmDist.mbps(), warm.mbps()/warmDist.mbps(), ibMet(warm.mbps() >= warmDist.mbps()))
	fmt.Fprintf(w, "| ↳ CPU-s per GiB: skopeo + node mirror / skopeo + registry | %.2f + %.2f = %.2f | %.2f + %.2f = %.2f | %s | |\n",
		warm.perGiB(warm.client), warm.perGiB(warm.server), warm.perGiB(warm.cpuTotal()),
		warmDist.perGiB(warmDist.client), warmDist.perGiB(warmDist.server), warmDist.perGiB(warmDist.cpuTotal()),
		ibRatio(warm.perGiB(warm.cpuTotal()), warmDist.perGiB(warmDist.cpuTotal())))
	fetchCPU := func(p, d ibSample) {
		fmt.Fprintf(w, "| ↳ CPU-s per GiB: curl + fetching node + sending peer / curl + registry | %.2f + %.2f + %.2f = %.2f | %.2f + %.2f = %.2f | %s | |\n",
			p.perGiB(p.client), p.perGiB(p.receiver), p.perGiB(p.server), p.perGiB(p.cpuTotal()),
			d.perGiB(d.client), d.perGiB(d.server), d.perGiB(d.cpuTotal()),
			ibRatio(p.perGiB(p.cpuTotal()), d.perGiB(d.cpuTotal())))
	}
	pl, dl := ibMedian(r.peerLocal), ibMedian(r.distLocal)
	fmt.Fprintf(w, "| one %.2f GiB blob, same host (veth, no limit): from a site peer over QUIC through the node's mirror / HTTPS GET: MB/s, median of %d | %.0f | %.0f | %.2f | report (QUIC is CPU-bound here) |\n",
		float64(blob.layers[0].Size)/gib, len(r.peerLocal), pl.mbps(), dl.mbps(), pl.mbps()/dl.mbps())
	fmt.Fprintf(w, "| ↳ until the sender's last byte: MB/s | %.0f | %.0f | %.2f | |\n", pl.wireMBps(), dl.wireMBps(), pl.wireMBps()/dl.wireMBps())
	fetchCPU(pl, dl)
	pk, dk := ibMedian(r.peerLink), ibMedian(r.distLink)
	fmt.Fprintf(w, "| the same blob across a %d Mbit/s `tbf` link: MB/s (%% of link), median of %d | %.1f (%.1f%%) | %.1f (%.1f%%) | %.3f | ≥ 95%% of the link: %s; level (≥ 0.98×): %s |\n",
		ibLinkMbit, len(r.peerLink), pk.mbps(), ibLinkPct(pk.mbps()), dk.mbps(), ibLinkPct(dk.mbps()), pk.mbps()/dk.mbps(),
		ibMet(ibLinkPct(pk.mbps()) >= 95), ibMet(pk.mbps() >= 0.98*dk.mbps()))
	fmt.Fprintf(w, "| ↳ until the sender's last byte: MB/s (%% of link); link busy; payload per byte on the link | %.1f (%.1f%%); %.1f%%; %.1f%% | %.1f (%.1f%%); %.1f%%; %.1f%% | %.2f | |\n",
		pk.wireMBps(), ibLinkPct(pk.wireMBps()), pk.busyPct(), pk.framingPct(), dk.wireMBps(), ibLinkPct(dk.wireMBps()), dk.busyPct(), dk.framingPct(), pk.wireMBps()/dk.wireMBps())
	fetchCPU(pk, dk)
	fmt.Fprintf(w, "| WAN bytes: %d nodes of a site pulling a %.0f MiB image cold at once (the hub's QUIC port) / %d direct pulls from Distribution | %.1f MB = %.3f× the image | %.1f MB = %.2f× | %.2f | 1.0× (≤ 1.10×): %s |\n",
		ibSiteNodes, float64(wan.size)/(1<<20), ibSiteNodes, float64(r.wanOurs)/1e6, float64(r.wanOurs)/float64(wan.size),
		float64(r.wanDirect)/1e6, float64(r.wanDirect)/float64(wan.size), float64(r.wanOurs)/float64(r.wanDirect),
		ibMet(float64(r.wanOurs) <= 1.1*float64(wan.size)))

	fmt.Fprintln(w)
	fmt.Fprintf(w, "imagebench: %d cores; uptime at the start: %s; at the end: %s\n", r.cores, r.uptime[0], r.uptime[1])
	var loads []string
	for _, l := range r.loads {
		loads = append(loads, fmt.Sprintf("%s %.2f", l.phase, l.load))
	}
	fmt.Fprintf(w, "imagebench: 1-minute load average at the start of each phase: %s\n", strings.Join(loads, ", "))
	fmt.Fprintf(w, "imagebench: MB/s = 10^6 bytes/s; the image is %d bytes (manifest, config, layers), the blob %d bytes, the WAN image %d bytes.\n", big.size, blob.layers[0].Size, wan.size)
	fmt.Fprintf(w, "imagebench: warm pulls alternate between the two (each %d times); skopeo writes to tmpfs, the node serves from its store on disk, Distribution from its filesystem storage (both in the page cache).\n", len(r.warm))
	fmt.Fprintln(w, "imagebench: warm pull MB/s per run: Outpost "+ibRates(r.warm)+"; Distribution "+ibRates(r.warmDist)+".")
	fmt.Fprintln(w, "imagebench: fetch MB/s per run, same host: peer "+ibRates(r.peerLocal)+"; HTTPS "+ibRates(r.distLocal)+"; limited link: peer "+ibRates(r.peerLink)+"; HTTPS "+ibRates(r.distLink)+".")
	fmt.Fprintln(w, "imagebench: a peer fetch is timed by curl in the fetching node's namespace reading its mirror (127.0.0.1:5000) until the last byte; the node passes each 8 MiB of a peer's bytes on once it matches the peer's mark, and the last byte once it has verified the blob and made it durable (fsync) in its store; Distribution's HTTPS GET (TLS 1.3, HTTP/1.1, self-signed certificate) is curl to /dev/null.")
	fmt.Fprintf(w, "imagebench: each peer fetch is by a node that lacks the blob, from whichever holder the site's index gave it (median runs: %s, %s); the hub's QUIC port sent under 1%% of the blob during each; the HTTPS GETs are by the same nodes.\n", pl.from, pk.from)
	fmt.Fprintln(w, "imagebench: \"until the sender's last byte\" ends when the sender's eth0 counter (/proc/PID/net/dev, sampled every 20 ms) had sent all but 256 KiB of what it sent during the fetch; the rest of a peer fetch is the fetching node's verification and fsync.")
	fmt.Fprintf(w, "imagebench: %% of link = payload MB/s / %.0f; link busy = bytes the sender's tbf let out (frames, headers included) / time until its last byte / rate; payload per byte on the link = blob bytes / bytes the tbf let out, the most of the link a transfer can carry: QUIC's packets (quic-go sends at most 1452 bytes of UDP payload, about 36 of them headers and AEAD tag, in a 1494-byte frame) cap it near 94.8%%, TCP's near 95.5%%.\n", ibLinkBytesPerSec/1e6)
	fmt.Fprintln(w, "imagebench: CPU-s = utime + stime of each process from /proc/PID/stat (clients: their rusage); softirq work lands on whichever process runs, or none.")
	fmt.Fprintf(w, "imagebench: the %d cold pulls took %.1f s together; the hub's QUIC port sends %.0f bytes/s when idle (not taken off); bytes are IP packets counted by iptables on the hub's eth0.\n", ibSiteNodes, r.wanSeconds, r.idleRate)
}

func ibRates(runs []ibSample) string {
	var s []string
	for _, r := range runs {
		s = append(s, fmt.Sprintf("%.0f", r.mbps()))
	}
	return strings.Join(s, ", ")
}
