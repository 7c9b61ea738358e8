//go:build e2e && imagebench

package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/outpost-mesh/outpost/e2e/netlab"
	"github.com/outpost-mesh/outpost/node"
)

const (
	// ibFetchRuns is how many peer fetches (and HTTPS GETs) each link gets,
	// each by a node that lacks the blob.
	ibFetchRuns = 3
	// ibSampleEvery is how often a fetch reads its senders' eth0 counters.
	ibSampleEvery = 20 * time.Millisecond
	// ibWireSlack is what a sender may still send after its last byte of
	// the blob (Raft heartbeats, gossip, acknowledgements) for the blob to
	// count as off the wire.
	ibWireSlack = 256 << 10
)

// ibSender is a host that may send the blob, and the process whose CPU
// counts as the server's.
type ibSender struct {
	name string
	host *netlab.Host
	proc *netlab.Proc
}

// peerFetches fetches the 1 GiB blob through the mirrors of nodes that
// lack it while site peers hold it (the first holder is a-1, then each
// node that fetched it), each followed by an HTTPS GET of the blob from
// Distribution on a-1 by the same node: a-2 to a-4 between namespaces on
// this host, then a-5 to a-7 with every site host's eth0 limited to
// 1 Gbit/s (tbf, egress, so every pair of hosts is).
func (b *imageBench) peerFetches() {
	a1 := b.site[0]
	d := b.blob.layers[0].Digest.String()
	size := b.blob.layers[0].Size
	mirrorURL := "http://" + ibMirror + "/v2/bench/blob/blobs/" + d
	distURL := "https://" + net.JoinHostPort(a1.host.IP(), strconv.Itoa(ibDistTLSPort)) + "/v2/bench/blob/blobs/" + d
	dist := []ibSender{{name: "Distribution on a-1", host: a1.host, proc: b.distTLS}}
	holders := []*meshNode{a1}
	next := 1
	for _, limited := range []bool{false, true} {
		peers, dists := &b.res.peerLocal, &b.res.distLocal
		if limited {
			for _, n := range b.site {
				n.host.LimitRate(ibLinkMbit)
			}
			peers, dists = &b.res.peerLink, &b.res.distLink
			b.phase("peer fetch, 1 Gbit/s")
		} else {
			b.phase("peer fetch, same host")
		}
		for range ibFetchRuns {
			recv := b.site[next]
			next++
			time.Sleep(ibIndexWait) // the last holding reaches the site's blob index
			var senders []ibSender
			for _, h := range holders {
				senders = append(senders, ibSender{name: h.name, host: h.host, proc: h.proc})
			}
			hub0 := b.hubQUIC.read()
			if dir := os.Getenv("IMAGEBENCH_PROFILES"); dir != "" {
				// CPU profiles of the fetching node and the last holder
				// (usually the sender) during the fetch.
				tag := map[bool]string{false: "local", true: "link"}[limited]
				go ibProfile(b.t, recv, filepath.Join(dir, tag+"-"+recv.name+"-receiver.pprof"))
				go ibProfile(b.t, holders[len(holders)-1], filepath.Join(dir, tag+"-"+holders[len(holders)-1].name+"-holder.pprof"))
			}
			peer := b.fetch(recv.host, recv.proc, senders, mirrorURL, "", size, limited)
			if hub := b.hubQUIC.read() - hub0; hub > size/100 {
				b.t.Errorf("the hub's QUIC port sent %d bytes while %s fetched a %d-byte blob its peers hold: not a peer fetch", hub, recv.name, size)
			}
			https := b.fetch(recv.host, nil, dist, distURL, b.tls.cert, size, limited)
			*peers, *dists = append(*peers, peer), append(*dists, https)
			holders = append(holders, recv)
			b.m.logf("%s: peer fetch %s; HTTPS GET %s", recv.name, peer, https)
		}
	}
	for _, n := range b.site {
		n.host.LimitRate(0)
	}
}

// fetch GETs url with curl on client and measures it: the CPU of client,
// receiver (the fetching node, or nil) and the sender, the sender being
// whichever of senders sent the most from its eth0; when the blob left
// the sender; and, on a limited link, what the sender's tbf let out.
func (b *imageBench) fetch(client *netlab.Host, receiver *netlab.Proc, senders []ibSender, url, cacert string, size int64, limited bool) ibSample {
	b.t.Helper()
	var procs []*netlab.Proc
	var pids []int
	var tbf0 []tbfStats
	for _, s := range senders {
		procs = append(procs, s.proc)
		pids = append(pids, s.proc.PID())
		if limited {
			tbf0 = append(tbf0, tbfCounters(b.t, s.host))
		}
	}
	if receiver != nil {
		procs = append(procs, receiver)
	}
	c0 := b.cpu(procs...)
	sampler := b.sampleTx(pids)
	r := b.get(client, url, cacert, size)
	tx, err := sampler.stop()
	if err != nil {
		b.t.Fatalf("sample the senders' eth0: %v", err)
	}
	c1 := b.cpu(procs...)
	best := 0
	for i := range senders {
		if tx.sent(i) > tx.sent(best) {
			best = i
		}
	}
	s := ibSample{bytes: size, seconds: r.wall.Seconds(), client: r.cpu, server: c1[best] - c0[best],
		from: senders[best].name, wire: tx.sent(best), wireSeconds: tx.doneAt(best, ibWireSlack).Seconds()}
	if receiver != nil {
		s.receiver = c1[len(c1)-1] - c0[len(c0)-1]
	}
	if limited {
		s.linkBytes = tbfCounters(b.t, senders[best].host).minus(tbf0[best]).Bytes
	}
	if s.wire < size {
		b.t.Errorf("GET %s: the senders' eth0 sent at most %d bytes (%s) for a %d-byte blob", url, s.wire, s.from, size)
	}
	return s
}

// ibTxSeries are eth0 transmit counters sampled over a transfer.
type ibTxSeries struct {
	// at is each sample's time since the sampling began; tx[i][k] is what
	// the i-th process's eth0 had sent at sample k.
	at []time.Duration
	tx [][]int64
}

// sent is what the i-th process's eth0 sent while sampled.
func (s *ibTxSeries) sent(i int) int64 { return s.tx[i][len(s.tx[i])-1] - s.tx[i][0] }

// doneAt is when the i-th process's eth0 had sent all but slack of what
// it sent while sampled.
func (s *ibTxSeries) doneAt(i int, slack int64) time.Duration {
	last := s.tx[i][len(s.tx[i])-1]
	for k, v := range s.tx[i] {
		if v >= last-slack {
			return s.at[k]
		}
	}
	return s.at[len(s.at)-1]
}

// ibTxSampler samples the eth0 counters of processes every
// ibSampleEvery until stopped.
type ibTxSampler struct {
	cancel context.CancelFunc
	g      errgroup.Group
	series ibTxSeries
}

// sampleTx starts sampling the eth0 of the namespace each of pids runs in.
func (b *imageBench) sampleTx(pids []int) *ibTxSampler {
	ctx, cancel := context.WithCancel(b.ctx)
	sm := &ibTxSampler{cancel: cancel, series: ibTxSeries{tx: make([][]int64, len(pids))}}
	start := time.Now()
	sample := func() error {
		at := time.Since(start)
		for i, pid := range pids {
			v, err := ibEth0Tx(pid)
			if err != nil {
				return err
			}
			sm.series.tx[i] = append(sm.series.tx[i], v)
		}
		sm.series.at = append(sm.series.at, at)
		return nil
	}
	sm.g.Go(func() error {
		if err := sample(); err != nil {
			return err
		}
		tick := time.NewTicker(ibSampleEvery)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return sample()
			case <-tick.C:
				if err := sample(); err != nil {
					return err
				}
			}
		}
	})
	return sm
}

// stop takes a last sample and returns the series.
func (sm *ibTxSampler) stop() (ibTxSeries, error) {
	sm.cancel()
	err := sm.g.Wait()
	return sm.series, err
}

// ibEth0Tx reads what eth0 has sent (bytes) in the network namespace of
// process pid, from /proc/PID/net/dev: no process to start, so it can be
// sampled often.
func ibEth0Tx(pid int) (int64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/dev", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "eth0:"); ok {
			// Receive: bytes packets errs drop fifo frame compressed
			// multicast; then Transmit: bytes ...
			f := strings.Fields(rest)
			if len(f) < 9 {
				break
			}
			return strconv.ParseInt(f[8], 10, 64)
		}
	}
	return 0, fmt.Errorf("no eth0 in /proc/%d/net/dev", pid)
}

// ibProfile saves a 5 s CPU profile of n, taken from its control socket.
func ibProfile(t *testing.T, n *meshNode, path string) {
	sock := filepath.Join(n.dataDir, node.SocketName)
	c := http.Client{Timeout: time.Minute, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	resp, err := c.Get("http://outpost/debug/pprof/profile?seconds=5")
	if err != nil {
		t.Logf("profile of %s: %v", n.name, err)
		return
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil {
		err = os.WriteFile(path, b, 0o644)
	}
	if err != nil {
		t.Logf("profile of %s: %v", n.name, err)
	}
}
