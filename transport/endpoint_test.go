package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"golang.org/x/sync/errgroup"
)

func TestEveryKindExchangesData(t *testing.T) {
	t.Parallel()
	ca := newCA(t)
	var seen [maxKind + 1]atomic.Pointer[Peer]
	server := start(t, testConfig(ca, nodeCert(t, ca, "hub-1", "hub", RoleHub)), allKinds(func(ctx context.Context, s *Stream) {
		p := s.Peer()
		seen[s.Kind()].Store(&p)
		echo(ctx, s)
	}))
	client := start(t, testConfig(ca, nodeCert(t, ca, "edge-1", "a", RoleEdge)), nil)

	for _, k := range []Kind{KindRaft, KindRPC, KindTunnel, KindBlob, KindJoin} {
		t.Run(k.String(), func(t *testing.T) {
			t.Parallel()
			s, err := client.Dial(t.Context(), server.Addr().String(), k)
			if err != nil {
				t.Fatal(err)
			}
			if got := s.Peer(); got.Name != "hub-1" || got.Site != "hub" || got.Role != RoleHub || got.Serial == "" {
				t.Errorf("client sees peer %+v, want hub-1@hub (hub) with a serial", got)
			}
			if s.Kind() != k {
				t.Errorf("Kind() = %v, want %v", s.Kind(), k)
			}
			got, err := exchange(s, "hello "+k.String())
			if err != nil {
				t.Fatal(err)
			}
			if want := k.String() + ":hello " + k.String(); got != want {
				t.Errorf("reply %q, want %q", got, want)
			}
			p := seen[k].Load()
			if p == nil || p.Name != "edge-1" || p.Site != "a" || p.Role != RoleEdge || p.Addr == nil {
				t.Errorf("server saw peer %+v, want edge-1@a (edge) with an address", p)
			}
		})
	}
}

func TestDialReusesOneConnection(t *testing.T) {
	t.Parallel()
	ca := newCA(t)
	server := start(t, testConfig(ca, nodeCert(t, ca, "hub-1", "hub", RoleHub)), allKinds(echo))
	client := start(t, testConfig(ca, nodeCert(t, ca, "edge-1", "a", RoleEdge)), nil)
	addr := server.Addr().String()

	// Concurrent dials share one handshake.
	var g errgroup.Group
	for i := range 8 {
		g.Go(func() error {
			s, err := client.Dial(t.Context(), addr, KindRPC)
			if err != nil {
				return err
			}
			got, err := exchange(s, fmt.Sprint(i))
			if err != nil {
				return err
			}
			if want := fmt.Sprintf("rpc:%d", i); got != want {
				return fmt.Errorf("reply %q, want %q", got, want)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	// And a later one reuses it too.
	s, err := client.Dial(t.Context(), addr, KindBlob)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := exchange(s, "x"); err != nil {
		t.Fatal(err)
	}
	if n := client.handshakes.Load(); n != 1 {
		t.Errorf("client made %d handshakes, want 1", n)
	}
	if n := client.ConnectionCount(); n != 1 {
		t.Errorf("client has %d connections, want 1", n)
	}
	eventually(t, "server to count one connection", func() bool { return server.ConnectionCount() == 1 })

	// A dead connection is replaced.
	client.mu.Lock()
	conn := client.outbound[addr].conn
	client.mu.Unlock()
	_ = conn.CloseWithError(0, "test")
	s, err = client.Dial(t.Context(), addr, KindRPC)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := exchange(s, "again"); err != nil || got != "rpc:again" {
		t.Fatalf("after replacing the connection: %q, %v", got, err)
	}
	if n := client.handshakes.Load(); n != 2 {
		t.Errorf("client made %d handshakes, want 2 (one replacement)", n)
	}
}

// refusedRead opens a stream, writes and reads, and returns the read error.
func refusedRead(t *testing.T, s *Stream) error {
	t.Helper()
	defer s.Close()
	_, _ = s.Write([]byte("hello"))
	_ = s.CloseWrite()
	_, err := io.ReadAll(s)
	return err
}

func TestWithoutCertificateOnlyJoin(t *testing.T) {
	t.Parallel()
	ca := newCA(t)
	server := start(t, testConfig(ca, nodeCert(t, ca, "hub-1", "hub", RoleHub)), allKinds(func(ctx context.Context, s *Stream) {
		if s.Peer().Name != "" {
			_, _ = s.Write([]byte("unexpected peer " + s.Peer().Name))
			return
		}
		echo(ctx, s)
	}))
	addr := server.Addr().String()

	t.Run("DialPinned", func(t *testing.T) {
		t.Parallel()
		s, caCert, err := DialPinned(t.Context(), addr, ca.Fingerprint(), KindJoin)
		if err != nil {
			t.Fatal(err)
		}
		if !caCert.Equal(ca.Cert) {
			t.Errorf("DialPinned returned CA %q, want the mesh CA", caCert.Subject.CommonName)
		}
		if s.Peer().Name != "hub-1" {
			t.Errorf("peer %+v, want hub-1", s.Peer())
		}
		if got, err := exchange(s, "token"); err != nil || got != "join:token" {
			t.Fatalf("join exchange: %q, %v", got, err)
		}
		for _, k := range []Kind{KindRPC, KindRaft} {
			s, _, err := DialPinned(t.Context(), addr, ca.Fingerprint(), k)
			if err != nil {
				t.Fatal(err)
			}
			if err := refusedRead(t, s); !errors.Is(err, ErrCertificateRequired) {
				t.Errorf("%s stream without a certificate: read error %v, want ErrCertificateRequired", k, err)
			}
		}
	})
	t.Run("endpoint without certificate", func(t *testing.T) {
		t.Parallel()
		client := start(t, testConfig(ca, nil), nil)
		s, err := client.Dial(t.Context(), addr, KindJoin)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := exchange(s, "token"); err != nil || got != "join:token" {
			t.Fatalf("join exchange: %q, %v", got, err)
		}
		s, err = client.Dial(t.Context(), addr, KindRPC)
		if err != nil {
			t.Fatal(err)
		}
		if err := refusedRead(t, s); !errors.Is(err, ErrCertificateRequired) {
			t.Errorf("rpc stream without a certificate: read error %v, want ErrCertificateRequired", err)
		}
	})
}

func TestAuthorizeRefusesOtherSite(t *testing.T) {
	t.Parallel()
	ca := newCA(t)
	cfg := testConfig(ca, nodeCert(t, ca, "b-1", "b", RoleEdge))
	var asked atomic.Int32
	cfg.Authorize = func(p Peer, k Kind) error {
		asked.Add(1)
		if p.Site != "b" {
			return fmt.Errorf("site %q may not open %s streams here", p.Site, k)
		}
		return nil
	}
	server := start(t, cfg, allKinds(echo))
	addr := server.Addr().String()

	fromA := start(t, testConfig(ca, nodeCert(t, ca, "a-1", "a", RoleEdge)), nil)
	s, err := fromA.Dial(t.Context(), addr, KindRaft)
	if err != nil {
		t.Fatal(err)
	}
	if err := refusedRead(t, s); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("site a raft stream: read error %v, want ErrUnauthorized", err)
	}

	fromB := start(t, testConfig(ca, nodeCert(t, ca, "b-2", "b", RoleEdge)), nil)
	s, err = fromB.Dial(t.Context(), addr, KindRaft)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := exchange(s, "hi"); err != nil || got != "raft:hi" {
		t.Errorf("site b raft stream: %q, %v", got, err)
	}
	if n := asked.Load(); n != 2 {
		t.Errorf("Authorize called %d times, want 2", n)
	}
}

// dialAndRead dials and exchanges one message, returning the first error.
func dialAndRead(ctx context.Context, e *Endpoint, addr string, k Kind) error {
	s, err := e.Dial(ctx, addr, k)
	if err != nil {
		return err
	}
	defer s.Close()
	_, _ = s.Write([]byte("x"))
	_ = s.CloseWrite()
	_, err = io.ReadAll(s)
	return err
}

func TestRevokedPeerRefused(t *testing.T) {
	t.Parallel()
	ca := newCA(t)
	var revokeLate atomic.Bool
	cfg := testConfig(ca, nodeCert(t, ca, "hub-1", "hub", RoleHub))
	cfg.Revoked = func(p Peer) bool {
		return p.Name == "stolen" || (p.Name == "late" && revokeLate.Load())
	}
	server := start(t, cfg, allKinds(echo))
	addr := server.Addr().String()

	t.Run("at handshake", func(t *testing.T) {
		t.Parallel()
		client := start(t, testConfig(ca, nodeCert(t, ca, "stolen", "a", RoleEdge)), nil)
		if err := dialAndRead(t.Context(), client, addr, KindRPC); err == nil {
			t.Fatal("a revoked certificate opened a stream")
		}
	})
	t.Run("on a later stream", func(t *testing.T) {
		t.Parallel()
		client := start(t, testConfig(ca, nodeCert(t, ca, "late", "a", RoleEdge)), nil)
		if err := dialAndRead(t.Context(), client, addr, KindRPC); err != nil {
			t.Fatal(err)
		}
		revokeLate.Store(true)
		if err := dialAndRead(t.Context(), client, addr, KindRPC); !errors.Is(err, ErrRevoked) {
			t.Errorf("stream after revocation: %v, want ErrRevoked", err)
		}
	})
	t.Run("server revoked", func(t *testing.T) {
		t.Parallel()
		badServer := start(t, testConfig(ca, nodeCert(t, ca, "stolen", "hub", RoleHub)), allKinds(echo))
		client := start(t, cfg, nil)
		if err := dialAndRead(t.Context(), client, badServer.Addr().String(), KindRPC); err == nil || !errors.Is(err, ErrRevoked) {
			t.Errorf("dial to a revoked server: %v, want ErrRevoked", err)
		}
	})
}

func TestCloseRevoked(t *testing.T) {
	t.Parallel()
	ca := newCA(t)
	var revoked atomic.Bool
	cfg := testConfig(ca, nodeCert(t, ca, "hub-1", "hub", RoleHub))
	cfg.Revoked = func(p Peer) bool { return p.Name == "edge-1" && revoked.Load() }
	server := start(t, cfg, allKinds(echo))
	client := start(t, testConfig(ca, nodeCert(t, ca, "edge-1", "a", RoleEdge)), nil)
	other := start(t, testConfig(ca, nodeCert(t, ca, "edge-2", "a", RoleEdge)), nil)
	for _, c := range []*Endpoint{client, other} {
		if err := dialAndRead(t.Context(), c, server.Addr().String(), KindRPC); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "two connections", func() bool { return server.ConnectionCount() == 2 })
	if n := server.CloseRevoked(); n != 0 {
		t.Errorf("CloseRevoked() closed %d connections before any revocation", n)
	}
	revoked.Store(true)
	if n := server.CloseRevoked(); n != 1 {
		t.Errorf("CloseRevoked() = %d, want 1", n)
	}
	eventually(t, "the revoked peer's connection to go", func() bool { return server.ConnectionCount() == 1 })
	eventually(t, "the client to see it closed", func() bool { return client.ConnectionCount() == 0 })
}

func TestOtherCARefusedAtHandshake(t *testing.T) {
	t.Parallel()
	ca, other := newCA(t), newCA(t)
	server := start(t, testConfig(ca, nodeCert(t, ca, "hub-1", "hub", RoleHub)), allKinds(echo))
	var accepted atomic.Int32
	foreignServer := start(t, testConfig(other, nodeCert(t, other, "hub-x", "hub", RoleHub)), allKinds(func(ctx context.Context, s *Stream) {
		accepted.Add(1)
		echo(ctx, s)
	}))

	t.Run("client from another CA", func(t *testing.T) {
		t.Parallel()
		// It trusts our CA (so only the server's check is tested) but
		// presents a certificate from the other one.
		cfg := testConfig(ca, nodeCert(t, other, "intruder", "a", RoleEdge))
		client := start(t, cfg, nil)
		err := dialAndRead(t.Context(), client, server.Addr().String(), KindRPC)
		if err == nil {
			t.Fatal("a certificate from another CA opened a stream")
		}
		if !strings.Contains(err.Error(), "certificate") {
			t.Errorf("error %q does not mention the certificate", err)
		}
		if server.ConnectionCount() != 0 {
			t.Errorf("server kept a connection from a foreign certificate")
		}
	})
	t.Run("server from another CA", func(t *testing.T) {
		t.Parallel()
		client := start(t, testConfig(ca, nodeCert(t, ca, "edge-1", "a", RoleEdge)), nil)
		if _, err := client.Dial(t.Context(), foreignServer.Addr().String(), KindRPC); err == nil {
			t.Fatal("dialed a server whose certificate is from another CA")
		}
		if accepted.Load() != 0 {
			t.Error("the foreign server accepted a stream")
		}
	})
}

func TestDialPinnedWrongFingerprint(t *testing.T) {
	t.Parallel()
	ca, other := newCA(t), newCA(t)
	server := start(t, testConfig(ca, nodeCert(t, ca, "hub-1", "hub", RoleHub)), allKinds(echo))
	_, _, err := DialPinned(t.Context(), server.Addr().String(), other.Fingerprint(), KindJoin)
	if !errors.Is(err, ErrFingerprintMismatch) {
		t.Fatalf("error %v, want ErrFingerprintMismatch", err)
	}
	if !strings.Contains(err.Error(), "hub certificate does not match the CA fingerprint in the token") {
		t.Errorf("error %q lacks the operator's message", err)
	}
	if _, _, err := DialPinned(t.Context(), server.Addr().String(), "abc", KindJoin); err == nil || !strings.Contains(err.Error(), "64 hex digits") {
		t.Errorf("malformed fingerprint: %v", err)
	}
}

func TestHandshakeRateLimit(t *testing.T) {
	t.Parallel()
	ca := newCA(t)
	cfg := testConfig(ca, nodeCert(t, ca, "hub-1", "hub", RoleHub))
	cfg.HandshakesPerSecondPerSource = 0.001
	cfg.HandshakeBurstPerSource = 2
	server := start(t, cfg, allKinds(echo))
	cert := nodeCert(t, ca, "edge-1", "a", RoleEdge)
	for i := range 3 {
		client := start(t, testConfig(ca, cert), nil) // a new socket, so a new connection
		err := dialAndRead(t.Context(), client, server.Addr().String(), KindRPC)
		if i < 2 && err != nil {
			t.Fatalf("connection %d within the burst: %v", i, err)
		}
		if i == 2 && err == nil {
			t.Fatal("connection over the burst was accepted")
		}
	}
}

func TestStreamCloseFreesStreamCredit(t *testing.T) {
	t.Parallel()
	server, client := limitedStreams(t, 4)
	for i := range 40 {
		s, err := client.Dial(t.Context(), server.Addr().String(), KindRPC)
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 { // half of them closed before the reply is read
			_, _ = s.Write([]byte("partial"))
			_ = s.Close()
			continue
		}
		if got, err := exchange(s, "x"); err != nil || got != "rpc:x" {
			t.Fatalf("stream %d: %q, %v", i, got, err)
		}
	}
}

func TestStreamCloseUnblocksRead(t *testing.T) {
	t.Parallel()
	ca := newCA(t)
	server := start(t, testConfig(ca, nodeCert(t, ca, "hub-1", "hub", RoleHub)), allKinds(func(ctx context.Context, s *Stream) {
		<-ctx.Done() // never answers
	}))
	client := start(t, testConfig(ca, nodeCert(t, ca, "edge-1", "a", RoleEdge)), nil)
	s, err := client.Dial(t.Context(), server.Addr().String(), KindTunnel)
	if err != nil {
		t.Fatal(err)
	}
	var g errgroup.Group
	g.Go(func() error {
		_, err := s.Read(make([]byte, 1))
		return err
	})
	_ = s.Close()
	if err := g.Wait(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Read after Close: %v, want net.ErrClosed", err)
	}
	if _, err := s.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after Close: %v, want net.ErrClosed", err)
	}
}

func TestDialAfterRunReturns(t *testing.T) {
	t.Parallel()
	ca := newCA(t)
	e, err := New(testConfig(ca, nodeCert(t, ca, "edge-1", "a", RoleEdge)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := e.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Dial(t.Context(), "127.0.0.1:1", KindRPC); !errors.Is(err, ErrClosed) {
		t.Errorf("Dial after Run: %v, want ErrClosed", err)
	}
	if err := e.Run(t.Context()); err == nil {
		t.Error("second Run succeeded")
	}
}

// Only the dialer pings, and that keeps the connection open at both ends
// past their idle timeouts; without the pings the next dial would need a
// new handshake.
func TestDialerPingsKeepIdleConnectionOpen(t *testing.T) {
	t.Parallel()
	ca := newCA(t)
	short := func(c Config) Config {
		c.IdleTimeout, c.KeepAlive = 2*time.Second, 300*time.Millisecond
		return c
	}
	server := start(t, short(testConfig(ca, nodeCert(t, ca, "hub-1", "hub", RoleHub))), allKinds(echo))
	client := start(t, short(testConfig(ca, nodeCert(t, ca, "edge-1", "a", RoleEdge))), nil)
	addr := server.Addr().String()
	if _, err := dialExchange(t, client, addr); err != nil {
		t.Fatal(err)
	}
	// Idle for 2.5 idle timeouts: a connection is kept only by pings.
	time.Sleep(5 * time.Second)
	if n := server.ConnectionCount(); n != 1 {
		t.Fatalf("server has %d connections after idling, want 1", n)
	}
	if _, err := dialExchange(t, client, addr); err != nil {
		t.Fatal(err)
	}
	if n := client.handshakes.Load(); n != 1 {
		t.Fatalf("client made %d handshakes, want 1: the idle connection was closed", n)
	}
}

func dialExchange(t *testing.T, e *Endpoint, addr string) (string, error) {
	s, err := e.Dial(t.Context(), addr, KindRPC)
	if err != nil {
		return "", err
	}
	return exchange(s, "ping")
}

// A peer that crashes and comes back on the same address with the same
// stateless reset key resets the connection its dialer still holds, at the
// dialer's next packet instead of the idle timeout: the next dial gets a
// new connection.
func TestStatelessResetEndsConnectionToRestartedPeer(t *testing.T) {
	t.Parallel()
	ca := newCA(t)
	key := &[32]byte{1, 2, 3}
	cfg := testConfig(ca, nodeCert(t, ca, "hub-1", "hub", RoleHub))
	cfg.StatelessResetKey = key
	first, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	first.Handle(KindRPC, echo)
	ctx, crash := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); _ = first.Run(ctx) }()
	client := start(t, testConfig(ca, nodeCert(t, ca, "edge-1", "a", RoleEdge)), nil)
	addr := first.Addr().String()
	if _, err := dialExchange(t, client, addr); err != nil {
		t.Fatal(err)
	}
	client.mu.Lock()
	held := client.outbound[addr].conn
	client.mu.Unlock()

	// A crash: the socket goes before anything is sent to the client.
	_ = first.closeSocket()
	crash()
	<-done
	again := cfg
	again.BindAddr = addr
	start(t, again, allKinds(echo))

	// The client's next packet on the held connection draws the reset.
	if s, err := held.OpenStream(); err == nil {
		_, _ = s.Write([]byte{byte(KindRPC)})
	}
	<-held.Context().Done() // without the reset, at the idle timeout
	var reset *quic.StatelessResetError
	if cause := context.Cause(held.Context()); !errors.As(cause, &reset) {
		t.Fatalf("the held connection ended with %v, want a stateless reset", cause)
	}
	if got, err := dialExchange(t, client, addr); err != nil || got != "rpc:ping" {
		t.Fatalf("a dial after the reset: %q, %v", got, err)
	}
}
