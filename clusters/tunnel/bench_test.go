package tunnel

import (
	"encoding/binary"
	"io"
	"net"
	"strconv"
	"testing"
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
