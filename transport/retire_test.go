package transport

import (
	"context"
	"crypto/tls"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
)

// TestRetireConns renews a client's certificate twice against a server
// that, like the hub, accepts only a name's two latest: each renewal moves
// new streams to a new connection, a stream already open keeps working
// through the first renewal, and the second closes the oldest connection.
func TestRetireConns(t *testing.T) {
	t.Parallel()
	ca := newCA(t)
	certs := []*tls.Certificate{
		nodeCert(t, ca, "edge-1", "a", RoleEdge),
		nodeCert(t, ca, "edge-1", "a", RoleEdge),
		nodeCert(t, ca, "edge-1", "a", RoleEdge),
	}
	serial := func(i int) string { return certs[i].Leaf.SerialNumber.Text(16) }
	var mu sync.Mutex
	accepted := []string{serial(0)}
	cfg := testConfig(ca, nodeCert(t, ca, "hub-1", "hub", RoleHub))
	cfg.Revoked = func(p Peer) bool {
		mu.Lock()
		defer mu.Unlock()
		return p.Name == "edge-1" && !slices.Contains(accepted, p.Serial)
	}
	server := start(t, cfg, map[Kind]Handler{
		// Reads the request before it answers, as a callee does: one that
		// closes first may stop the caller's write (STOP_SENDING).
		KindRPC: func(_ context.Context, s *Stream) {
			_, _ = io.Copy(io.Discard, s)
			_, _ = s.Write([]byte(s.Peer().Serial))
		},
		KindBlob: echo,
	})
	var current atomic.Int32
	ccfg := testConfig(ca, nil)
	ccfg.GetCertificate = func() (*tls.Certificate, error) { return certs[current.Load()], nil }
	client := start(t, ccfg, nil)
	addr := server.Addr().String()

	servedAs := func() string {
		t.Helper()
		s, err := client.Dial(t.Context(), addr, KindRPC)
		if err != nil {
			t.Fatal(err)
		}
		got, err := exchange(s, "")
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	renew := func(i int) {
		mu.Lock()
		accepted = append(accepted, serial(i))[max(0, len(accepted)+1-2):]
		mu.Unlock()
		current.Store(int32(i))
		client.RetireConns()
	}

	if got := servedAs(); got != serial(0) {
		t.Fatalf("first stream served as %s, want %s", got, serial(0))
	}
	held, err := client.Dial(t.Context(), addr, KindBlob) // open across the first renewal
	if err != nil {
		t.Fatal(err)
	}
	renew(1)
	if got := servedAs(); got != serial(1) {
		t.Errorf("after the first renewal a stream went as %s, want the new %s", got, serial(1))
	}
	if got, err := exchange(held, "still"); err != nil || got != "blob:still" {
		t.Errorf("a stream open across the first renewal: %q, %v", got, err)
	}
	held, err = client.Dial(t.Context(), addr, KindBlob) // on the second connection
	if err != nil {
		t.Fatal(err)
	}
	if n := client.ConnectionCount(); n != 2 {
		t.Errorf("client has %d connections after one renewal, want 2 (the retired one still open)", n)
	}
	renew(2)
	if got := servedAs(); got != serial(2) {
		t.Errorf("after the second renewal a stream went as %s, want %s", got, serial(2))
	}
	if got, err := exchange(held, "still"); err != nil || got != "blob:still" {
		t.Errorf("a stream on the previous connection, its certificate still accepted: %q, %v", got, err)
	}
	eventually(t, "the first connection to close", func() bool { return client.ConnectionCount() == 2 })
	if n := client.handshakes.Load(); n != 3 {
		t.Errorf("client made %d handshakes, want 3", n)
	}
}
