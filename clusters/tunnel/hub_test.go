package tunnel

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sync/errgroup"

	"github.com/outpost-mesh/outpost/clusters"
)

// TestTunnelCarriesConnections checks the whole path: the agent's report
// reaches the hub's state, and many concurrent connections complete while
// some clients never read what they asked for.
func TestTunnelCarriesConnections(t *testing.T) {
	t.Parallel()
	l := newLab(t, nil, "hub-1", nil)
	ports := l.bind(t, "edge-a")
	if st := l.hub.State("edge-a"); st.Connected || !st.LastSeen.IsZero() {
		t.Fatalf("state before any agent: %+v", st)
	}
	startAgent(t, l.agentConfig("edge-a", backend(t)))
	eventually(t, "the agent to connect", func() bool { return l.hub.State("edge-a").Connected })
	st, err := l.hub.Ensure(t.Context(), "edge-a", clusters.Binding{Ports: ports})
	if err != nil {
		t.Fatal(err)
	}
	if st.Ports != ports || !st.Connected || st.LastSeen.IsZero() || string(st.ServerCA) != "CA of edge-a" ||
		st.ServerName != "kubernetes.default.svc" || st.BearerToken != "bearer-edge-a" {
		t.Errorf("state: %+v", st)
	}
	api := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports.KubernetesAPI))

	// Stalled clients: each asks for 16 MiB, more than the buffers on the
	// way hold (their own receive buffer is small), and never reads.
	const stalled = 4
	var stalls []net.Conn
	for range stalled {
		c, err := net.Dial("tcp", api)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.(*net.TCPConn).SetReadBuffer(64 << 10)
		var req [8]byte
		binary.BigEndian.PutUint64(req[:], 16<<20)
		if _, err := c.Write(req[:]); err != nil {
			t.Fatal(err)
		}
		stalls = append(stalls, c)
	}
	// The others: 40 connections of 1 MiB each, all at once.
	var g errgroup.Group
	for i := range 40 {
		g.Go(func() error {
			n, err := request(api, 1<<20)
			if err != nil || n != 1<<20 {
				return fmt.Errorf("connection %d: %d bytes, %v", i, n, err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	// The stalled ones still get their data once they read.
	for i, c := range stalls {
		n, err := io.Copy(io.Discard, c)
		if err != nil || n != 16<<20 {
			t.Errorf("stalled connection %d: %d bytes, %v", i, n, err)
		}
		c.Close()
	}

	// The metrics count every connection and byte.
	eventually(t, "every connection to end", func() bool { return l.hub.Stats().Targets["kube-api"].Active == 0 })
	hs := l.hub.Stats()
	kube := hs.Targets["kube-api"]
	if hs.Agents != 1 || hs.Bound != 1 || hs.AgentSessions != 1 || kube.Carried != stalled+40 || kube.Refused != 0 ||
		kube.BytesUp != (stalled+40)*8 || kube.BytesDown != stalled*16<<20+40<<20 || hs.Targets["platform-api"].Carried != 0 {
		t.Fatalf("hub stats: %+v", hs)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(l.hub.Collector())
	if n, err := testutil.GatherAndCount(reg); err != nil || n != 3+2*5 {
		t.Fatalf("gathered %d series: %v", n, err)
	}
}

// TestNoAgentRefusedAndCounted: a connection to a bound port while no agent
// is connected is reset after AgentWait, and counted as refused.
func TestNoAgentRefusedAndCounted(t *testing.T) {
	t.Parallel()
	l := newLab(t, nil, "hub-1", func(c *HubConfig) { c.AgentWait = 50 * time.Millisecond })
	ports := l.bind(t, "edge-a")
	c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(ports.PlatformAPI)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if n, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatalf("read %d bytes through a tunnel without an agent", n)
	}
	st := l.hub.Stats().Targets["platform-api"]
	if st.Refused != 1 || st.Carried != 0 || st.Active != 0 {
		t.Fatalf("platform-api stats: %+v", st)
	}
}

// TestHalfClose checks that a client's half-close reaches the edge server
// and the server's answer still comes back, then its own half-close.
func TestHalfClose(t *testing.T) {
	t.Parallel()
	l := newLab(t, nil, "hub-1", nil)
	ports := l.bind(t, "edge-a")
	startAgent(t, l.agentConfig("edge-a", backend(t)))
	eventually(t, "the agent to connect", func() bool { return l.hub.State("edge-a").Connected })
	c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(ports.KubernetesAPI)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	payload := make([]byte, 3<<20+17)
	_, _ = rand.Read(payload)
	if _, err := c.Write(append(make([]byte, 8), payload...)); err != nil { // 0: hash mode
		t.Fatal(err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	reply, err := io.ReadAll(c) // ends only if the server's half-close came through
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(payload)
	want := binary.BigEndian.AppendUint64(nil, uint64(len(payload)))
	want = append(want, hex.EncodeToString(sum[:])...)
	if !bytes.Equal(reply, want) {
		t.Errorf("server saw %q, want %q", reply, want)
	}
}

// TestBadTokenRefused checks that an agent with a wrong token gets a clear
// error and nothing is registered for the cluster.
func TestBadTokenRefused(t *testing.T) {
	t.Parallel()
	var changes sync.Map
	l := newLab(t, nil, "hub-1", func(c *HubConfig) {
		c.OnChange = func(cluster string) { changes.Store(cluster, true) }
	})
	cfg := l.agentConfig("edge-a", backend(t))
	cfg.Token = "secret-of-someone-else"
	a, err := NewAgent(cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = a.Run(t.Context())
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "cluster edge-a: the cluster token is wrong: invalid cluster token") {
		t.Fatalf("Run: %v, want ErrRefused with the hub's reason", err)
	}
	if st := l.hub.State("edge-a"); st.Connected || !st.LastSeen.IsZero() || st.ServerCA != nil || st.BearerToken != "" {
		t.Errorf("refused agent left state behind: %+v", st)
	}
	if _, ok := changes.Load("edge-a"); ok {
		t.Error("OnChange was called for a refused agent")
	}
	if a.Sessions() != 0 {
		t.Errorf("agent counted %d accepted sessions", a.Sessions())
	}
}

// TestPortsRefused checks bad bindings: a port held by another process is
// ErrPortInUse and leaves nothing bound; invalid ports are refused.
func TestPortsRefused(t *testing.T) {
	t.Parallel()
	l := newLab(t, nil, "hub-1", nil)
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	free := freePorts(t, 1)[0]
	want := clusters.Binding{Ports: clusters.Ports{KubernetesAPI: free, PlatformAPI: held.Addr().(*net.TCPAddr).Port}}
	if _, err := l.hub.Ensure(t.Context(), "edge-a", want); !errors.Is(err, clusters.ErrPortInUse) {
		t.Fatalf("Ensure on a held port: %v, want ErrPortInUse", err)
	}
	if ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(free))); err != nil {
		t.Errorf("the first port stayed bound after the failure: %v", err)
	} else {
		ln.Close()
	}
	for _, p := range []clusters.Ports{{}, {KubernetesAPI: free, PlatformAPI: free}, {KubernetesAPI: 70000, PlatformAPI: free}} {
		if _, err := l.hub.Ensure(t.Context(), "edge-a", clusters.Binding{Ports: p}); !errors.Is(err, ErrInvalidPorts) {
			t.Errorf("Ensure %+v: %v, want ErrInvalidPorts", p, err)
		}
	}
	// Two clusters cannot share a port.
	ports := l.bind(t, "edge-b")
	if _, err := l.hub.Ensure(t.Context(), "edge-c", clusters.Binding{Ports: ports}); !errors.Is(err, clusters.ErrPortInUse) {
		t.Errorf("Ensure of another cluster's ports: %v, want ErrPortInUse", err)
	}
}

// TestAgentReconnects checks that a dropped agent comes back by itself, a
// new agent process replaces an old one, and a connection opened while the
// agent is away waits for it.
func TestAgentReconnects(t *testing.T) {
	t.Parallel()
	l := newLab(t, nil, "hub-1", nil)
	ports := l.bind(t, "edge-a")
	api := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports.KubernetesAPI))
	be := backend(t)
	a, stop := startAgent(t, l.agentConfig("edge-a", be))
	eventually(t, "the agent to connect", func() bool { return l.hub.State("edge-a").Connected })

	// The hub drops it (as a leader change would): it comes back.
	l.hub.mu.Lock()
	l.hub.agents["edge-a"].drop()
	l.hub.mu.Unlock()
	eventually(t, "the agent to reconnect", func() bool { return a.Sessions() >= 2 && l.hub.State("edge-a").Connected })
	if n, err := request(api, 1<<20); err != nil || n != 1<<20 {
		t.Fatalf("after reconnect: %d bytes, %v", n, err)
	}

	// The agent process goes away; a connection made meanwhile waits for
	// the next agent.
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the hub to notice", func() bool { return !l.hub.State("edge-a").Connected })
	if st := l.hub.State("edge-a"); st.LastSeen.IsZero() || string(st.ServerCA) != "CA of edge-a" {
		t.Errorf("state after the agent left: %+v (want LastSeen and the last report kept)", st)
	}
	done := make(chan error, 1)
	go func() {
		n, err := request(api, 1<<20)
		if err == nil && n != 1<<20 {
			err = fmt.Errorf("%d bytes", n)
		}
		done <- err
	}()
	startAgent(t, l.agentConfig("edge-a", be))
	if err := <-done; err != nil {
		t.Fatalf("connection made while no agent was connected: %v", err)
	}
}

// TestFailoverSamePorts checks what a hub failover does: the old leader
// releases everything and sends the agent to the new one, which binds the
// same ports; the agent follows and traffic flows there.
func TestFailoverSamePorts(t *testing.T) {
	t.Parallel()
	var leader struct {
		sync.Mutex
		name  string
		addrs map[string]string
	}
	leader.name, leader.addrs = "hub-1", map[string]string{}
	leading := func(self string) func(c *HubConfig) {
		return func(c *HubConfig) {
			c.Leader = func() (bool, string) {
				leader.Lock()
				defer leader.Unlock()
				return leader.name == self, leader.addrs[leader.name]
			}
		}
	}
	first := newLab(t, nil, "hub-1", leading("hub-1"))
	second := newLab(t, first.ca, "hub-2", leading("hub-2"))
	leader.Lock()
	leader.addrs["hub-1"], leader.addrs["hub-2"] = first.addr, second.addr
	leader.Unlock()

	ports := first.bind(t, "edge-a")
	startAgent(t, first.agentConfig("edge-a", backend(t)))
	eventually(t, "the agent to connect", func() bool { return first.hub.State("edge-a").Connected })

	leader.Lock()
	leader.name = "hub-2"
	leader.Unlock()
	first.hub.Reset()
	if _, err := second.hub.Ensure(t.Context(), "edge-a", clusters.Binding{Ports: ports}); err != nil {
		t.Fatalf("new leader binding the same ports: %v", err)
	}
	eventually(t, "the agent to reach the new leader", func() bool { return second.hub.State("edge-a").Connected })
	if first.hub.State("edge-a").Connected {
		t.Error("the old leader still has the agent")
	}
	api := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports.KubernetesAPI))
	if n, err := request(api, 1<<20); err != nil || n != 1<<20 {
		t.Fatalf("through the new leader: %d bytes, %v", n, err)
	}
}

// TestExternalBinding checks that an External binding is reachable on the
// public address and still on loopback, where the controller dials it.
func TestExternalBinding(t *testing.T) {
	t.Parallel()
	l := newLab(t, nil, "hub-1", func(c *HubConfig) { c.PublicHost = "127.0.0.2" })
	startAgent(t, l.agentConfig("edge-a", backend(t)))
	eventually(t, "the agent to connect", func() bool { return l.hub.State("edge-a").Connected })
	p := freePorts(t, 2)
	ports := clusters.Ports{KubernetesAPI: p[0], PlatformAPI: p[1]}
	if _, err := l.hub.Ensure(t.Context(), "edge-a", clusters.Binding{Ports: ports, External: true}); err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"127.0.0.1", "127.0.0.2"} {
		if n, err := request(net.JoinHostPort(host, strconv.Itoa(ports.KubernetesAPI)), 1<<10); err != nil || n != 1<<10 {
			t.Errorf("through %s: %d bytes, %v", host, n, err)
		}
	}
	// Back to loopback only: the public address no longer answers.
	if _, err := l.hub.Ensure(t.Context(), "edge-a", clusters.Binding{Ports: ports}); err != nil {
		t.Fatal(err)
	}
	if c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.2", strconv.Itoa(ports.KubernetesAPI))); err == nil {
		c.Close()
		t.Error("the public address still accepts after External was turned off")
	}
}

// TestRevokedTokenDropsAgent checks that an agent whose token stops
// verifying while it is connected (revoked, Cluster deleted) is dropped
// at its next heartbeat and then refused.
func TestRevokedTokenDropsAgent(t *testing.T) {
	t.Parallel()
	var revoked atomic.Bool
	l := newLab(t, nil, "hub-1", func(c *HubConfig) {
		verify := c.Verify
		c.Verify = func(ctx context.Context, cluster, token string) error {
			if revoked.Load() {
				return fmt.Errorf("token of %s revoked: %w", cluster, clusters.ErrBadToken)
			}
			return verify(ctx, cluster, token)
		}
	})
	a, err := NewAgent(l.agentConfig("edge-a", backend(t)))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(t.Context()) }()
	eventually(t, "the agent to connect", func() bool { return l.hub.State("edge-a").Connected })
	revoked.Store(true)
	if err := <-done; !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("agent Run after revocation: %v, want ErrRefused", err)
	}
	if l.hub.State("edge-a").Connected {
		t.Error("the hub still has the revoked agent")
	}
}
