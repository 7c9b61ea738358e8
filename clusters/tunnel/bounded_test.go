package tunnel

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// countingBackend stands for an edge service that streams what it is
// asked for as fast as the tunnel takes it, counting what its writes have
// handed to the kernel; it returns its address and the counter.
func countingBackend(t *testing.T) (string, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var sent atomic.Int64
	runUntilCleanup(t, func(ctx context.Context) error {
		context.AfterFunc(ctx, func() { ln.Close() })
		c, err := ln.Accept()
		if err != nil {
			return nil
		}
		defer c.Close()
		context.AfterFunc(ctx, func() { c.Close() })
		var req [8]byte
		if _, err := io.ReadFull(c, req[:]); err != nil {
			return nil
		}
		for n := int64(binary.BigEndian.Uint64(req[:])); n > 0; {
			w, err := c.Write(chunk[:min(n, int64(len(chunk)))])
			sent.Add(int64(w))
			if err != nil {
				return nil
			}
			n -= int64(w)
		}
		return nil
	})
	return ln.Addr().String(), &sent
}

// TestStalledReaderBoundsBuffers: a client that asks for 1 GiB and reads
// nothing makes the edge service stop after a bounded amount: what the
// kernel's socket buffers and one QUIC stream window hold, not the whole
// answer. The tunnel buffers no more than its windows.
func TestStalledReaderBoundsBuffers(t *testing.T) {
	t.Parallel()
	const asked = 1 << 30
	l := newLab(t, nil, "hub-1", nil)
	ports := l.bind(t, "edge-a")
	api, sent := countingBackend(t)
	startAgent(t, l.agentConfig("edge-a", api))
	eventually(t, "the agent to connect", func() bool { return l.hub.State("edge-a").Connected })
	c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(ports.KubernetesAPI)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.(*net.TCPConn).SetReadBuffer(64 << 10)
	var req [8]byte
	binary.BigEndian.PutUint64(req[:], asked)
	if _, err := c.Write(req[:]); err != nil {
		t.Fatal(err)
	}
	// Wait until the service's writes stop moving (the path is full);
	// with unbounded buffering they would run to the whole GiB.
	last, still := int64(-1), 0
	eventually(t, "the edge service's writes to stop", func() bool {
		n := sent.Load()
		if n == last && n > 0 {
			still++
		} else {
			last, still = n, 0
		}
		return still >= 50 || n >= asked // 50 polls, 10 ms apart
	})
	// The kernel's socket buffers may autotune to a few MiB each (four
	// sockets on the way); the tunnel adds one stream window (6 MiB at
	// most) and two 64 KiB copy buffers.
	const bound = 64 << 20
	if n := sent.Load(); n >= bound {
		t.Fatalf("the edge service sent %d MiB to a client that reads nothing; want under %d MiB", n>>20, bound>>20)
	} else {
		t.Logf("held on the way to a stalled client: %.1f MiB", float64(n)/(1<<20))
	}
	// Reading resumes the flow: more than was held arrives.
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.CopyN(io.Discard, c, sent.Load()+(8<<20)); err != nil {
		t.Fatalf("reading after the stall: %v", err)
	}
}

// TestPlatformTarget: a connection to a cluster's platform port reaches
// the agent's platform service, and one to its API port the API server;
// an agent with no platform service refuses platform connections.
func TestPlatformTarget(t *testing.T) {
	t.Parallel()
	l := newLab(t, nil, "hub-1", nil)
	ports := l.bind(t, "edge-a")
	platform, sent := countingBackend(t)
	cfg := l.agentConfig("edge-a", backend(t))
	cfg.PlatformAddr = platform
	startAgent(t, cfg)
	eventually(t, "the agent to connect", func() bool { return l.hub.State("edge-a").Connected })
	if n, err := request(net.JoinHostPort("127.0.0.1", strconv.Itoa(ports.PlatformAPI)), 1<<20); err != nil || n != 1<<20 {
		t.Fatalf("through the platform port: %d bytes, %v", n, err)
	}
	if got := sent.Load(); got != 1<<20 {
		t.Errorf("the platform service sent %d bytes, want %d", got, 1<<20)
	}
	if n, err := request(net.JoinHostPort("127.0.0.1", strconv.Itoa(ports.KubernetesAPI)), 1<<10); err != nil || n != 1<<10 {
		t.Errorf("through the API port: %d bytes, %v", n, err)
	}
	st := l.hub.Stats()
	if st.Targets["platform-api"].Carried != 1 || st.Targets["kube-api"].Carried != 1 {
		t.Errorf("carried: platform %d, kube %d; want 1 each", st.Targets["platform-api"].Carried, st.Targets["kube-api"].Carried)
	}

	// Without a platform service the agent closes such a stream at once.
	bare := newLab(t, nil, "hub-2", nil)
	bp := bare.bind(t, "edge-b")
	startAgent(t, bare.agentConfig("edge-b", backend(t)))
	eventually(t, "the agent to connect", func() bool { return bare.hub.State("edge-b").Connected })
	if n, _ := request(net.JoinHostPort("127.0.0.1", strconv.Itoa(bp.PlatformAPI)), 1<<10); n != 0 {
		t.Errorf("a platform connection to an agent without a platform service got %d bytes", n)
	}
}
