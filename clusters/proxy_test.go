package clusters

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/outpost-mesh/outpost/internal/kubetest"
)

// forwardTunnels stands in for clusters/tunnel: it binds the API port it
// is given and forwards each connection to the test's API server, as an
// agent would; connected says whether its "agent" is there.
type forwardTunnels struct {
	target string // host:port of the API server
	ca     []byte

	mu        sync.Mutex
	connected bool
	// silent: the agent counts as connected but carries nothing (a link
	// cut before the hub's heartbeat timeout notices).
	silent   bool
	lns      map[string]net.Listener
	conns    []net.Conn
	released []string
	wg       sync.WaitGroup
	// onRelease, when set, is called at the start of Release (without
	// the lock), for tests of what has happened by then.
	onRelease func(cluster string)
}

func (f *forwardTunnels) setConnected(v bool) {
	f.mu.Lock()
	f.connected = v
	f.mu.Unlock()
}

func (f *forwardTunnels) Ensure(_ context.Context, cluster string, want Binding) (TunnelState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.lns[cluster] == nil {
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(want.Ports.KubernetesAPI)))
		if err != nil {
			return TunnelState{}, fmt.Errorf("%w: %v", ErrPortInUse, err)
		}
		f.lns[cluster] = ln
		f.wg.Add(1)
		go f.serve(ln)
	}
	st := TunnelState{Ports: want.Ports, Connected: f.connected, ServerCA: f.ca, ServerName: kubetest.ServerName, BearerToken: kubetest.AdminToken}
	if f.connected {
		st.LastSeen = time.Now()
	}
	return st, nil
}

func (f *forwardTunnels) serve(ln net.Listener) {
	defer f.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		f.mu.Lock()
		up := f.connected && !f.silent
		f.mu.Unlock()
		if !up {
			c.Close()
			continue
		}
		up2, err := net.Dial("tcp", f.target)
		if err != nil {
			c.Close()
			continue
		}
		f.mu.Lock()
		f.conns = append(f.conns, c, up2)
		f.mu.Unlock()
		f.wg.Add(2)
		go func() { defer f.wg.Done(); _, _ = io.Copy(up2, c); up2.Close() }()
		go func() { defer f.wg.Done(); _, _ = io.Copy(c, up2); c.Close() }()
	}
}

func (f *forwardTunnels) Release(_ context.Context, cluster string) error {
	if f.onRelease != nil {
		f.onRelease(cluster)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if ln := f.lns[cluster]; ln != nil {
		ln.Close()
		delete(f.lns, cluster)
	}
	f.released = append(f.released, cluster)
	return nil
}

func (f *forwardTunnels) close() {
	f.mu.Lock()
	for _, ln := range f.lns {
		ln.Close()
	}
	for _, c := range f.conns {
		c.Close()
	}
	f.connected = false
	f.mu.Unlock()
}

// twoFreePorts finds a range of two adjacent free loopback ports.
func twoFreePorts(t *testing.T) PortRange {
	t.Helper()
	first, last := kubetest.PortPair(t)
	return PortRange{First: first, Last: last}
}

// TestProxyCluster runs a proxy Cluster's life through the tunnel
// interface (a forwarding stand-in for the agent): ports allocated and
// recorded, AgentAvailable False until an agent connects, Ready through
// the tunnel with TLS verified end to end against tls-server-name, a
// kubeconfig an operator can use, Unknown after the grace period once the
// agent goes, an exhausted port range refused, and deletion releasing
// the ports for the next cluster.
func TestProxyCluster(t *testing.T) {
	kube := sharedKube(t)
	u, _ := url.Parse(kube.URL)
	tun := &forwardTunnels{target: u.Host, ca: kube.CAPEM, lns: map[string]net.Listener{}}
	t.Cleanup(func() { tun.close(); tun.wg.Wait() })
	store := newStore(t)
	cfg := testConfig(store)
	cfg.Tunnels, cfg.TunnelPorts = tun, twoFreePorts(t)
	c := runController(t, cfg)

	_, hash, _ := NewToken()
	createCluster(t, store, "edge", ClusterSpec{Connection: Connection{Type: ConnectionProxy, TokenHash: hash}})
	st := waitCondition(t, store, "edge", ConditionAgentAvailable, metav1.ConditionFalse, ReasonAgentNotConnected)
	want := Ports{KubernetesAPI: cfg.TunnelPorts.First, PlatformAPI: cfg.TunnelPorts.Last}
	if st.Connection == nil || *st.Connection != want {
		t.Fatalf("status.connection = %+v, want %+v", st.Connection, want)
	}

	tun.setConnected(true)
	st = waitCondition(t, store, "edge", ConditionReady, metav1.ConditionTrue, ReasonHealthy)
	if st.KubernetesVersion != kubetest.KubeVersion || st.UID == "" {
		t.Errorf("through the tunnel: version %q uid %q", st.KubernetesVersion, st.UID)
	}
	kc, err := c.Kubeconfig(t.Context(), "edge", "hub.example")
	if err != nil {
		t.Fatal(err)
	}
	rc, err := clientcmd.RESTConfigFromKubeConfig(kc)
	if err != nil {
		t.Fatal(err)
	}
	if rc.Host != "https://127.0.0.1:"+strconv.Itoa(want.KubernetesAPI) || rc.TLSClientConfig.ServerName != kubetest.ServerName {
		t.Errorf("kubeconfig server %s tls-server-name %s", rc.Host, rc.TLSClientConfig.ServerName)
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Namespaces().Get(t.Context(), "kube-system", metav1.GetOptions{}); err != nil {
		t.Errorf("operator kubeconfig through the tunnel: %v", err)
	}

	createCluster(t, store, "edge2", ClusterSpec{Connection: Connection{Type: ConnectionProxy, TokenHash: hash}})
	if st := waitCondition(t, store, "edge2", ConditionInitialized, metav1.ConditionFalse, ReasonPortsExhausted); st.Connection != nil {
		t.Errorf("a cluster refused for want of ports recorded ports %+v", st.Connection)
	}
	tun.mu.Lock()
	if tun.lns["edge2"] != nil {
		t.Error("a cluster refused for want of ports has a tunnel bound")
	}
	tun.mu.Unlock()

	tun.setConnected(false)
	waitCondition(t, store, "edge", ConditionAgentAvailable, metav1.ConditionUnknown, ReasonUnreachable)
	waitCondition(t, store, "edge", ConditionReady, metav1.ConditionUnknown, ReasonUnreachable)

	if _, err := store.Delete(t.Context(), &ClusterKind, "", "edge", 0, ""); err != nil {
		t.Fatal(err)
	}
	waitGone(t, store, "edge", "proxy cluster not deleted")
	tun.mu.Lock()
	released := append([]string(nil), tun.released...)
	tun.mu.Unlock()
	if len(released) != 1 || released[0] != "edge" {
		t.Errorf("released %v, want [edge]", released)
	}
	st = waitCondition(t, store, "edge2", ConditionInitialized, metav1.ConditionTrue, "")
	if st.Connection == nil || *st.Connection != want {
		t.Errorf("edge2 ports %+v, want the freed %+v", st.Connection, want)
	}
	if _, err := c.Kubeconfig(t.Context(), "edge2", ""); !apierrors.IsServiceUnavailable(err) {
		t.Errorf("kubeconfig of a cluster with no agent: %v, want 503", err)
	}
}

// TestProxySilentTunnelGoesUnknown: an agent the hub still counts as
// connected (a cut link, noticed only at the heartbeat timeout) whose
// tunnel carries nothing does not keep the cluster heard: AgentAvailable
// and Ready go Unknown after the grace period, and Ready comes back when
// the tunnel carries again.
func TestProxySilentTunnelGoesUnknown(t *testing.T) {
	kube := sharedKube(t)
	u, _ := url.Parse(kube.URL)
	tun := &forwardTunnels{target: u.Host, ca: kube.CAPEM, lns: map[string]net.Listener{}, connected: true}
	t.Cleanup(func() { tun.close(); tun.wg.Wait() })
	store := newStore(t)
	cfg := testConfig(store) // grace: 3 s
	cfg.Tunnels, cfg.TunnelPorts = tun, twoFreePorts(t)
	runController(t, cfg)
	_, hash, _ := NewToken()
	createCluster(t, store, "edge", ClusterSpec{Connection: Connection{Type: ConnectionProxy, TokenHash: hash}})
	waitCondition(t, store, "edge", ConditionReady, metav1.ConditionTrue, ReasonHealthy)

	tun.mu.Lock()
	tun.silent = true
	for _, c := range tun.conns { // what the link carried ends with it
		c.Close()
	}
	tun.mu.Unlock()
	waitCondition(t, store, "edge", ConditionAgentAvailable, metav1.ConditionUnknown, ReasonUnreachable)
	waitCondition(t, store, "edge", ConditionReady, metav1.ConditionUnknown, ReasonUnreachable)

	tun.mu.Lock()
	tun.silent = false
	tun.mu.Unlock()
	waitCondition(t, store, "edge", ConditionReady, metav1.ConditionTrue, ReasonHealthy)
}
