package tunnel

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strconv"
	"testing"

	"golang.org/x/sync/errgroup"
)

// BenchmarkTunnelBulk streams b.N bytes from a TCP server behind the agent
// to a client at the hub's port over one connection, all in this process
// (so the CPU is both ends'). e2e/tunnelbench measures across processes and
// links, beside ssh -R and remotedialer.
func BenchmarkTunnelBulk(b *testing.B) {
	l := newLab(b, nil, "hub-1", nil)
	ports := l.bind(b, "edge-a")
	startAgent(b, l.agentConfig("edge-a", backend(b)))
	eventually(b, "the agent to connect", func() bool { return l.hub.State("edge-a").Connected })
	c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(ports.KubernetesAPI)))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	const total = 1 << 40 // more than any run reads
	var req [8]byte
	binary.BigEndian.PutUint64(req[:], total)
	if _, err := c.Write(req[:]); err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 64<<10)
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTunnelRequest times request-response round trips on one kept
// connection, as client-go makes them: an 8-byte request, an answer of
// the size named (64 B as a small GET's, 40 KiB as a LIST of 100
// ConfigMaps', 200 KiB), directly to the server and through the tunnel,
// all in this process. ns/op is the latency of one request; the
// difference between the two paths is what the tunnel adds.
func BenchmarkTunnelRequest(b *testing.B) {
	l := newLab(b, nil, "hub-1", nil)
	ports := l.bind(b, "edge-a")
	server := answeringBackend(b)
	startAgent(b, l.agentConfig("edge-a", server))
	eventually(b, "the agent to connect", func() bool { return l.hub.State("edge-a").Connected })
	tunnel := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports.KubernetesAPI))
	for _, size := range []int{64, 40 << 10, 200 << 10} {
		for _, path := range []struct{ name, addr string }{{"direct", server}, {"tunnel", tunnel}} {
			b.Run(fmt.Sprintf("%s/%dB", path.name, size), func(b *testing.B) {
				c, err := net.Dial("tcp", path.addr)
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				var req [8]byte
				binary.BigEndian.PutUint64(req[:], uint64(size))
				buf := make([]byte, size)
				for b.Loop() {
					if _, err := c.Write(req[:]); err != nil {
						b.Fatal(err)
					}
					if _, err := io.ReadFull(c, buf); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// answeringBackend answers every 8-byte request for n bytes (up to 1 MiB)
// with n bytes, on the same connection, until the client closes it.
func answeringBackend(b *testing.B) string {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	runUntilCleanup(b, func(ctx context.Context) error {
		context.AfterFunc(ctx, func() { ln.Close() })
		var g errgroup.Group
		for {
			c, err := ln.Accept()
			if err != nil {
				break
			}
			stop := context.AfterFunc(ctx, func() { c.Close() })
			g.Go(func() error {
				defer stop()
				defer c.Close()
				out := make([]byte, 1<<20)
				var req [8]byte
				for {
					if _, err := io.ReadFull(c, req[:]); err != nil {
						return nil
					}
					if _, err := c.Write(out[:min(binary.BigEndian.Uint64(req[:]), uint64(len(out)))]); err != nil {
						return nil
					}
				}
			})
		}
		return g.Wait()
	})
	return ln.Addr().String()
}
