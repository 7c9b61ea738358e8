package tunnel

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sync/errgroup"

	"github.com/outpost-mesh/outpost/clusters"
	"github.com/outpost-mesh/outpost/internal/pki"
	"github.com/outpost-mesh/outpost/transport"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testLogger discards unless TUNNEL_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("TUNNEL_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return nil
}

// lab is a hub member (QUIC endpoint + tunnel Hub) on loopback whose
// tokens are "secret-" + cluster name.
type lab struct {
	ca   *pki.CA
	ep   *transport.Endpoint
	hub  *Hub
	addr string
}

// runUntilCleanup runs fn until the test ends; its error fails the test.
func runUntilCleanup(t testing.TB, fn func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var g errgroup.Group
	g.Go(func() error { return fn(ctx) })
	t.Cleanup(func() {
		cancel()
		if err := g.Wait(); err != nil {
			t.Errorf("run: %v", err)
		}
	})
}

// newLab starts a hub member; tune adjusts the hub's config.
func newLab(t testing.TB, ca *pki.CA, name string, tune func(*HubConfig)) *lab {
	t.Helper()
	if ca == nil {
		var err error
		if ca, err = pki.LoadOrCreate(t.TempDir(), "test mesh CA"); err != nil {
			t.Fatal(err)
		}
	}
	cert, err := transport.IssueNodeCert(ca, name, "hub", transport.RoleHub, []net.IP{net.IPv4(127, 0, 0, 1)}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tc := transport.DefaultConfig()
	tc.BindAddr = "127.0.0.1:0"
	tc.CAs = ca.Pool()
	tc.GetCertificate = func() (*tls.Certificate, error) { return &cert, nil }
	tc.AnonymousKinds = []transport.Kind{transport.KindJoin, transport.KindTunnel}
	tc.MaxConnectionReceiveWindow = HubConnectionWindow // as node sets it
	tc.InitialConnectionReceiveWindow = HubConnectionWindow
	tc.Logger = testLogger()
	ep, err := transport.New(tc)
	if err != nil {
		t.Fatal(err)
	}
	hc := DefaultHubConfig()
	hc.PublicHost = "127.0.0.1"
	hc.HeartbeatTimeout = 5 * time.Second
	hc.Verify = func(_ context.Context, cluster, token string) error {
		if token != "secret-"+cluster {
			return fmt.Errorf("the cluster token is wrong: %w", clusters.ErrBadToken)
		}
		return nil
	}
	hc.Logger = testLogger()
	if tune != nil {
		tune(&hc)
	}
	hub, err := NewHub(hc)
	if err != nil {
		t.Fatal(err)
	}
	ep.Handle(transport.KindTunnel, hub.ServeAgent)
	runUntilCleanup(t, ep.Run)
	runUntilCleanup(t, hub.Run)
	return &lab{ca: ca, ep: ep, hub: hub, addr: ep.Addr().String()}
}

// agentConfig is an agent of cluster for l whose API server is at api.
func (l *lab) agentConfig(cluster, api string) AgentConfig {
	cfg := DefaultAgentConfig()
	cfg.Cluster, cfg.Token = cluster, "secret-"+cluster
	cfg.HubAddrs = []string{l.addr}
	cfg.CAFingerprint = l.ca.Fingerprint()
	cfg.KubeAPIAddr = api
	cfg.Heartbeat, cfg.HeartbeatTimeout = 200*time.Millisecond, 5*time.Second
	cfg.MaxBackoff = 200 * time.Millisecond
	cfg.Report = Report{ServerCA: []byte("CA of " + cluster), ServerName: "kubernetes.default.svc", BearerToken: "bearer-" + cluster}
	cfg.Logger = testLogger()
	return cfg
}

// startAgent runs an agent until the test ends (or stop is called).
func startAgent(t testing.TB, cfg AgentConfig) (a *Agent, stop func() error) {
	t.Helper()
	a, err := NewAgent(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var g errgroup.Group
	g.Go(func() error { return a.Run(ctx) })
	stopped := false
	stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		return g.Wait()
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("agent Run: %v", err)
		}
	})
	return a, stop
}

// freePorts returns n distinct loopback TCP ports free a moment ago.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var lns []net.Listener
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		ln.Close()
	}
	return ports
}

// bind asks the hub for a loopback binding on two free ports.
func (l *lab) bind(t testing.TB, cluster string) clusters.Ports {
	t.Helper()
	p := freePorts(t, 2)
	want := clusters.Binding{Ports: clusters.Ports{KubernetesAPI: p[0], PlatformAPI: p[1]}}
	if _, err := l.hub.Ensure(t.Context(), cluster, want); err != nil {
		t.Fatal(err)
	}
	return want.Ports
}

// eventually polls cond every 10 ms until it holds or 15 s pass.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// backend is a real TCP server standing for the edge API server. Each
// connection sends an 8-byte request: n > 0 asks for n bytes of data (then
// the server closes); 0 means "hash mode": the server reads to EOF and
// answers the hex SHA-256 and length of what it read, then half-closes.
func backend(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	runUntilCleanup(t, func(ctx context.Context) error {
		var g errgroup.Group
		g.Go(func() error {
			<-ctx.Done()
			return ln.Close()
		})
		for {
			c, err := ln.Accept()
			if err != nil {
				break
			}
			stop := context.AfterFunc(ctx, func() { c.Close() })
			g.Go(func() error {
				defer stop()
				defer c.Close()
				serveBackend(c.(*net.TCPConn))
				return nil
			})
		}
		return g.Wait()
	})
	return ln.Addr().String()
}

var chunk = make([]byte, 64<<10)

func serveBackend(c *net.TCPConn) {
	var req [8]byte
	if _, err := io.ReadFull(c, req[:]); err != nil {
		return
	}
	n := int64(binary.BigEndian.Uint64(req[:]))
	if n > 0 {
		for n > 0 {
			w, err := c.Write(chunk[:min(n, int64(len(chunk)))])
			if err != nil {
				return
			}
			n -= int64(w)
		}
		return
	}
	h := sha256.New()
	read, err := io.Copy(h, c)
	if err != nil {
		return
	}
	var out [8]byte
	binary.BigEndian.PutUint64(out[:], uint64(read))
	_, _ = c.Write(append(out[:], []byte(hex.EncodeToString(h.Sum(nil)))...))
	_ = c.CloseWrite()
}

// request asks the backend at addr (through the tunnel) for n bytes and
// returns how many arrived before EOF.
func request(addr string, n int64) (int64, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	var req [8]byte
	binary.BigEndian.PutUint64(req[:], uint64(n))
	if _, err := c.Write(req[:]); err != nil {
		return 0, err
	}
	return io.Copy(io.Discard, c)
}
