package transport

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sync/errgroup"

	"github.com/outpost-mesh/outpost/internal/pki"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testLogger discards unless TRANSPORT_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("TRANSPORT_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return nil
}

// newCA creates a mesh CA in a temporary directory.
func newCA(t testing.TB) *pki.CA {
	t.Helper()
	ca, err := pki.LoadOrCreate(t.TempDir(), "test mesh CA")
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// nodeCert issues a node certificate for 127.0.0.1.
func nodeCert(t testing.TB, ca *pki.CA, name, site, role string) *tls.Certificate {
	t.Helper()
	c, err := IssueNodeCert(ca, name, site, role, []net.IP{net.IPv4(127, 0, 0, 1)}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return &c
}

// testConfig is a loopback endpoint config presenting cert (nil: none).
func testConfig(ca *pki.CA, cert *tls.Certificate) Config {
	cfg := DefaultConfig()
	cfg.BindAddr = "127.0.0.1:0"
	cfg.CAs = ca.Pool()
	cfg.Logger = testLogger()
	if cert != nil {
		cfg.GetCertificate = func() (*tls.Certificate, error) { return cert, nil }
	}
	return cfg
}

// start creates an endpoint with the given handlers and runs it until the
// test ends; Run's error fails the test.
func start(t testing.TB, cfg Config, handlers map[Kind]Handler) *Endpoint {
	t.Helper()
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for k, h := range handlers {
		e.Handle(k, h)
	}
	run(t, e)
	return e
}

// run runs e until the test ends; Run's error fails the test.
func run(t testing.TB, e *Endpoint) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var g errgroup.Group
	g.Go(func() error { return e.Run(ctx) })
	t.Cleanup(func() {
		cancel()
		if err := g.Wait(); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// echo answers each stream with its kind's name, ":", and what it read up
// to EOF, then closes it.
func echo(_ context.Context, s *Stream) {
	b, err := io.ReadAll(s)
	if err != nil {
		return
	}
	_, _ = s.Write(append([]byte(s.Kind().String()+":"), b...))
}

// allKinds registers h for every kind.
func allKinds(h Handler) map[Kind]Handler {
	return map[Kind]Handler{KindRaft: h, KindRPC: h, KindTunnel: h, KindBlob: h, KindJoin: h}
}

// exchange writes msg, half-closes, and reads the reply to EOF.
func exchange(s *Stream, msg string) (string, error) {
	defer s.Close()
	if _, err := s.Write([]byte(msg)); err != nil {
		return "", err
	}
	if err := s.CloseWrite(); err != nil {
		return "", err
	}
	b, err := io.ReadAll(s)
	return string(b), err
}

// eventually polls cond every 10 ms until it holds or 10 s pass.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
