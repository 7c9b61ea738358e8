package transport

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/quic-go/quic-go"
	"golang.org/x/sync/errgroup"

	"github.com/outpost-mesh/outpost/internal/logbridge"
)

// Benchmarks compare Outpost's streams with bare quic-go and with TCP +
// TLS 1.3 on loopback, all in this process: CPU figures count both ends.
// BENCH_WRITE_SIZE (bytes) overrides the bulk write size; run with
// QUIC_GO_DISABLE_GSO=true for the GSO-off figures. DESIGN.md has results.

// bulkOp is the payload of one benchmark op.
const bulkOp = 1 << 20

// benchWriteSize is the size of each Write in the bulk benchmarks.
func benchWriteSize() int {
	if n, err := strconv.Atoi(os.Getenv("BENCH_WRITE_SIZE")); err == nil && n > 0 {
		return n
	}
	return 32 << 10
}

// cpuTime is the process's user plus system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// halfCloser is a stream or connection the sender can half-close.
type halfCloser interface {
	io.Writer
	CloseWrite() error
	Close() error
}

// pair is a connected client and server of one transport: open returns a
// new client stream (or connection); the server side counts what each
// reads to EOF into sunk, or echoes 64-byte messages when echo is set.
type pair struct {
	open    func(ctx context.Context) (halfCloser, io.Reader, error)
	sunk    chan int64
	cleanup func()
}

// serveSink drains r to EOF and reports the count, or echoes 64-byte
// messages until EOF.
func serveSink(r io.Reader, w io.Writer, echo bool, sunk chan<- int64) {
	if echo {
		buf := make([]byte, 64)
		for {
			if _, err := io.ReadFull(r, buf); err != nil {
				return
			}
			if _, err := w.Write(buf); err != nil {
				return
			}
		}
	}
	n, _ := io.Copy(io.Discard, r)
	sunk <- n // buffered for every stream a benchmark opens
}

func benchCerts(b *testing.B) (server, client *tls.Certificate, pool *x509.CertPool) {
	ca := newCA(b)
	return nodeCert(b, ca, "hub-1", "hub", RoleHub), nodeCert(b, ca, "edge-1", "a", RoleEdge), ca.Pool()
}

// benchQUICConfig is the quic.Config of the bare quic-go runs: the same
// windows as Outpost's.
func benchQUICConfig(streamWin, connWin uint64) *quic.Config {
	return &quic.Config{MaxIdleTimeout: 30 * time.Second, MaxStreamReceiveWindow: streamWin, MaxConnectionReceiveWindow: connWin}
}

// bareQUICPair is quic-go with mutual TLS and nothing of Outpost's.
func bareQUICPair(b *testing.B, echo bool, streamWin, connWin uint64) *pair {
	srvCert, cliCert, pool := benchCerts(b)
	ln, err := quic.ListenAddr("127.0.0.1:0", &tls.Config{
		MinVersion: tls.VersionTLS13, NextProtos: []string{alpn}, Certificates: []tls.Certificate{*srvCert},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool,
	}, benchQUICConfig(streamWin, connWin))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	sunk := make(chan int64, 1024)
	var g errgroup.Group
	g.Go(func() error {
		for {
			conn, err := ln.Accept(ctx)
			if err != nil {
				return nil
			}
			g.Go(func() error {
				for {
					s, err := conn.AcceptStream(ctx)
					if err != nil {
						return nil
					}
					g.Go(func() error {
						serveSink(s, s, echo, sunk)
						s.CancelRead(0)
						return s.Close()
					})
				}
			})
		}
	})
	conn, err := quic.DialAddr(ctx, ln.Addr().String(), &tls.Config{
		MinVersion: tls.VersionTLS13, NextProtos: []string{alpn}, Certificates: []tls.Certificate{*cliCert}, RootCAs: pool,
	}, benchQUICConfig(streamWin, connWin))
	if err != nil {
		b.Fatal(err)
	}
	return &pair{
		open: func(ctx context.Context) (halfCloser, io.Reader, error) {
			s, err := conn.OpenStreamSync(ctx)
			if err != nil {
				return nil, nil, err
			}
			return bareStream{s}, s, nil
		},
		sunk: sunk,
		cleanup: func() {
			_ = conn.CloseWithError(0, "")
			cancel()
			_ = ln.Close()
			_ = g.Wait()
		},
	}
}

// bareStream gives a quic.Stream the halfCloser shape.
type bareStream struct{ *quic.Stream }

func (s bareStream) CloseWrite() error { return s.Stream.Close() }
func (s bareStream) Close() error {
	s.CancelRead(0)
	return s.Stream.Close()
}

// outpostPair is two Endpoints, the client dialing KindBlob streams.
func outpostPair(b *testing.B, echo bool, streamWin, connWin uint64) *pair {
	ca := newCA(b)
	sunk := make(chan int64, 1024)
	scfg := testConfig(ca, nodeCert(b, ca, "hub-1", "hub", RoleHub))
	scfg.MaxStreamReceiveWindow, scfg.MaxConnectionReceiveWindow = streamWin, connWin
	server, err := New(scfg)
	if err != nil {
		b.Fatal(err)
	}
	server.Handle(KindBlob, func(_ context.Context, s *Stream) { serveSink(s, s, echo, sunk) })
	ccfg := testConfig(ca, nodeCert(b, ca, "edge-1", "a", RoleEdge))
	ccfg.MaxStreamReceiveWindow, ccfg.MaxConnectionReceiveWindow = streamWin, connWin
	client, err := New(ccfg)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var g errgroup.Group
	g.Go(func() error { return server.Run(ctx) })
	g.Go(func() error { return client.Run(ctx) })
	addr := server.Addr().String()
	return &pair{
		open: func(ctx context.Context) (halfCloser, io.Reader, error) {
			s, err := client.Dial(ctx, addr, KindBlob)
			return s, s, err
		},
		sunk: sunk,
		cleanup: func() {
			cancel()
			if err := g.Wait(); err != nil {
				b.Error(err)
			}
		},
	}
}

// tcpTLSPair is TCP with TLS 1.3 and mutual authentication, one
// connection per open.
func tcpTLSPair(b *testing.B, echo bool) *pair {
	srvCert, cliCert, pool := benchCerts(b)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{*srvCert},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool,
	})
	if err != nil {
		b.Fatal(err)
	}
	sunk := make(chan int64, 1024)
	var g errgroup.Group
	g.Go(func() error {
		for {
			c, err := ln.Accept()
			if err != nil {
				return nil
			}
			g.Go(func() error {
				serveSink(c, c, echo, sunk)
				return c.Close()
			})
		}
	})
	var conns []net.Conn
	return &pair{
		open: func(ctx context.Context) (halfCloser, io.Reader, error) {
			d := tls.Dialer{Config: &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{*cliCert}, RootCAs: pool}}
			c, err := d.DialContext(ctx, "tcp", ln.Addr().String())
			if err != nil {
				return nil, nil, err
			}
			conns = append(conns, c)
			return c.(*tls.Conn), c, nil
		},
		sunk: sunk,
		cleanup: func() {
			for _, c := range conns {
				_ = c.Close()
			}
			_ = ln.Close()
			_ = g.Wait()
		},
	}
}

// runBulk sends b.N MiB over streams parallel streams and reports MB/s and
// CPU seconds per GiB (both ends).
func runBulk(b *testing.B, p *pair, streams int) {
	defer p.cleanup()
	ctx := context.Background()
	writers := make([]halfCloser, streams)
	for i := range writers {
		w, _, err := p.open(ctx)
		if err != nil {
			b.Fatal(err)
		}
		writers[i] = w
	}
	size := benchWriteSize()
	buf := make([]byte, size)
	total := int64(b.N) * bulkOp
	b.SetBytes(bulkOp)
	b.ResetTimer()
	cpu0 := cpuTime()
	var g errgroup.Group
	for i, w := range writers {
		share := total / int64(streams)
		if i == 0 {
			share += total % int64(streams)
		}
		g.Go(func() error {
			for left := share; left > 0; {
				n := min(int64(size), left)
				if _, err := w.Write(buf[:n]); err != nil {
					return err
				}
				left -= n
			}
			return w.CloseWrite()
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatal(err)
	}
	var got int64
	for range streams {
		got += <-p.sunk
	}
	b.StopTimer()
	cpu := cpuTime() - cpu0
	if got != total {
		b.Fatalf("received %d bytes, sent %d", got, total)
	}
	b.ReportMetric(cpu.Seconds()/(float64(total)/(1<<30)), "cpu-s/GiB")
	for _, w := range writers {
		_ = w.Close()
	}
}

func BenchmarkBulk(b *testing.B) {
	cases := []struct {
		name    string
		pair    func(*testing.B) *pair
		streams int
	}{
		{"quic-bare-1stream", func(b *testing.B) *pair { return bareQUICPair(b, false, 0, 0) }, 1},
		{"quic-bare-8streams", func(b *testing.B) *pair { return bareQUICPair(b, false, 0, 0) }, 8},
		{"outpost-stream-1", func(b *testing.B) *pair { return outpostPair(b, false, 0, 0) }, 1},
		{"outpost-stream-8", func(b *testing.B) *pair { return outpostPair(b, false, 0, 0) }, 8},
		{"tcp-tls13-1conn", func(b *testing.B) *pair { return tcpTLSPair(b, false) }, 1},
		{"tcp-tls13-8conns", func(b *testing.B) *pair { return tcpTLSPair(b, false) }, 8},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) { runBulk(b, tc.pair(b), tc.streams) })
	}
}

// BenchmarkBulkTuning varies what might lower quic-go's CPU per byte on one
// Outpost stream: flow-control windows (write size: BENCH_WRITE_SIZE).
func BenchmarkBulkTuning(b *testing.B) {
	cases := []struct {
		name               string
		streamWin, connWin uint64
	}{
		{"window-default-6m-15m", 0, 0},
		{"window-1m-2m", 1 << 20, 2 << 20},
		{"window-16m-32m", 16 << 20, 32 << 20},
		{"window-64m-128m", 64 << 20, 128 << 20},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) { runBulk(b, outpostPair(b, false, tc.streamWin, tc.connWin), 1) })
	}
}

// runRTT times 64-byte request/response round trips on one stream.
func runRTT(b *testing.B, p *pair) {
	defer p.cleanup()
	w, r, err := p.open(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	msg, reply := make([]byte, 64), make([]byte, 64)
	b.ResetTimer()
	for range b.N {
		if _, err := w.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(r, reply); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/rtt")
}

func BenchmarkRTT64(b *testing.B) {
	b.Run("quic-bare", func(b *testing.B) { runRTT(b, bareQUICPair(b, true, 0, 0)) })
	b.Run("outpost-stream", func(b *testing.B) { runRTT(b, outpostPair(b, true, 0, 0)) })
	b.Run("tcp-tls13", func(b *testing.B) { runRTT(b, tcpTLSPair(b, true)) })
}

// tcpRaftTransports returns n of raft's own TCP transports on loopback.
func tcpRaftTransports(b *testing.B, n int) []raft.Transport {
	var trans []raft.Transport
	for range n {
		tr, err := raft.NewTCPTransportWithLogger("127.0.0.1:0", nil, 3, 2*time.Second, logbridge.HCLog(nil))
		if err != nil {
			b.Fatal(err)
		}
		trans = append(trans, tr)
	}
	return trans
}

// runRaftApply applies b.N entries one after another on the leader of a
// 3-server group and reports applies/s and the p50/p99 latency.
func runRaftApply(b *testing.B, trans []raft.Transport) {
	members := startRaft(b, trans, time.Second) // Raft's default timing: a busy machine must not cost the lease
	l := leader(b, members)
	var cmd [8]byte
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		binary.BigEndian.PutUint64(cmd[:], uint64(i))
		t0 := time.Now()
		if err := l.Apply(cmd[:], 5*time.Second).Error(); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "applies/s")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

func BenchmarkRaftApply(b *testing.B) {
	b.Run("quic-streamlayer", func(b *testing.B) { runRaftApply(b, quicRaftTransports(b, 3)) })
	b.Run("tcp-transport", func(b *testing.B) { runRaftApply(b, tcpRaftTransports(b, 3)) })
}
