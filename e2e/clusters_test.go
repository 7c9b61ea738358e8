//go:build e2e

package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/outpost-mesh/outpost/clusters"
	"github.com/outpost-mesh/outpost/e2e/netlab"
	"github.com/outpost-mesh/outpost/internal/kubetest"
	"github.com/outpost-mesh/outpost/internal/pki"
)

const (
	// edgeAPIPort is the edge API server's port on the edge host's
	// loopback, where only processes of that host reach it.
	edgeAPIPort = 6443
	// clusterGrace and clusterResync are the hub's --cluster-grace and
	// --cluster-resync: short, so the cut-off is seen within the test.
	clusterGrace  = "5s"
	clusterResync = "2s"
	// kubeToken is the edge API server's static admin token.
	kubeToken = "e2e-edge-admin-token"
)

// TestClusters: a proxy Cluster whose API server (real etcd and
// kube-apiserver) runs on the loopback of an edge host, which no hub member
// can reach; `outpost agent --kubeconfig` on that host dials the hub. The
// Cluster goes Ready, kubectl on the operator's host works through the hub,
// a cut link makes the conditions Unknown after the grace period and they
// come back after it, and a killed hub leader hands the tunnel to the new
// leader on the same port.
func TestClusters(t *testing.T) {
	m := newLab(t, topology{hubs: 3})
	_, kubectl, etcd, err := kubetest.Binaries()
	if err != nil {
		t.Fatalf("the real Kubernetes peers: %v", err)
	}
	for _, n := range m.siteNodes("hub") {
		n.args = []string{"--cluster-grace", clusterGrace, "--cluster-resync", clusterResync}
	}
	edge := m.lab.AddHost("edge")
	edgeKC := startEdgeKube(t, m, edge, etcd)
	m.bootstrap()
	m.waitFormed()
	m.logf("hub of 3 formed")
	m.eventually(waitLong, "the edge API server ready", func() error {
		_, err := m.kubectl(edge, kubectl, edgeKC, "get", "--raw", "/readyz")
		return err
	})
	// The same kubeconfig on a hub member reaches nothing: the hub only
	// gets to the edge API server through the agent's tunnel.
	if out, err := m.kubectl(m.node("hub-1").host, kubectl, edgeKC, "get", "--raw", "/readyz"); err == nil {
		t.Fatalf("a hub member reached the edge API server directly: %s", out)
	}
	m.logf("edge API server ready on %s's loopback, out of the hub's reach", edge.Name())

	token, err := m.adminCLI(m.anyHub(), "cluster", "create", "edge", "--proxy", "--external", "--provider", "kubeadm")
	if err != nil {
		t.Fatal(err)
	}
	token = strings.TrimSpace(token)
	// The agent is given one hub member; it follows the redirect to the
	// leader and learns the others from the hub.
	edge.Start(outpostBin, "agent", "--cluster", "edge", "--hub", m.node("hub-1").quicAddr(), "--token", token, "--kubeconfig", edgeKC)
	var ports clusters.Ports

	if !t.Run("ready", func(t *testing.T) {
		m := m.sub(t)
		st := m.waitCluster("edge", "Ready", func(st clusters.ClusterStatus) error {
			return wantConditions(st, metav1.ConditionTrue, clusters.ConditionInitialized, clusters.ConditionAgentAvailable, clusters.ConditionReady)
		})
		if st.Connection == nil || st.Connection.KubernetesAPI == 0 || st.Connection.PlatformAPI == 0 {
			t.Fatalf("a Ready proxy Cluster without tunnel ports: %+v", st.Connection)
		}
		if st.KubernetesVersion != kubetest.KubeVersion || st.UID == "" {
			t.Errorf("version %q, uid %q; want %s and the kube-system UID", st.KubernetesVersion, st.UID, kubetest.KubeVersion)
		}
		ports = *st.Connection
		m.logf("cluster edge Ready: version %s, ports %+v", st.KubernetesVersion, ports)
	}) {
		return
	}

	if !t.Run("kubectl-through-hub", func(t *testing.T) {
		m := m.sub(t)
		leader := m.hubLeader()
		kc := m.clusterKubeconfig(m.follower(leader), "edge", leader, ports)
		out, err := m.kubectl(m.ctl, kubectl, kc, "get", "namespaces", "-o", "name")
		if err != nil || !strings.Contains(out, "namespace/kube-system") {
			t.Fatalf("kubectl get namespaces through the hub: %v\n%s", err, out)
		}
		if out, err := m.kubectl(m.ctl, kubectl, kc, "create", "configmap", "via-hub", "-n", "default", "--from-literal=k=v"); err != nil {
			t.Fatalf("kubectl create configmap through the hub: %v\n%s", err, out)
		}
		// The ConfigMap is in the edge's API server, read there directly.
		if got, err := m.kubectl(edge, kubectl, edgeKC, "get", "configmap", "via-hub", "-n", "default", "-o", "jsonpath={.data.k}"); err != nil || got != "v" {
			t.Fatalf("the ConfigMap at the edge: %q, %v; want data k=v", got, err)
		}
		m.logf("kubectl on ctl listed namespaces and created a ConfigMap through %s", leader.name)
	}) {
		return
	}

	if !t.Run("edge-cut-off", func(t *testing.T) {
		m := m.sub(t)
		for _, h := range m.siteNodes("hub") {
			edge.Block(h.host)
		}
		cut := time.Now()
		m.logf("edge cut off from the hub")
		m.waitCluster("edge", "AgentAvailable and Ready Unknown", func(st clusters.ClusterStatus) error {
			if err := wantConditions(st, metav1.ConditionUnknown, clusters.ConditionAgentAvailable, clusters.ConditionReady); err != nil {
				return err
			}
			if r := cond(st, clusters.ConditionReady); r.Reason != clusters.ReasonUnreachable {
				return fmt.Errorf("Ready Unknown with reason %s; want %s", r.Reason, clusters.ReasonUnreachable)
			}
			return nil
		})
		m.logf("conditions Unknown %.0fs after the cut (the first probe through the cut link times out after 10 s; the last answer is --cluster-grace %s old by then)", time.Since(cut).Seconds(), clusterGrace)

		for _, h := range m.siteNodes("hub") {
			edge.Unblock(h.host)
		}
		restored := time.Now()
		st := m.waitCluster("edge", "Ready again", func(st clusters.ClusterStatus) error {
			if err := wantConditions(st, metav1.ConditionTrue, clusters.ConditionAgentAvailable, clusters.ConditionReady); err != nil {
				return err
			}
			if st.LastHeardTime == nil || st.LastHeardTime.Time.Before(restored.Add(-time.Second)) {
				return fmt.Errorf("lastHeardTime %v is from before the link came back", st.LastHeardTime)
			}
			return nil
		})
		if *st.Connection != ports {
			t.Errorf("ports after the cut %+v; want %+v", *st.Connection, ports)
		}
		m.logf("Ready again %.0fs after the link came back", time.Since(restored).Seconds())
	}) {
		return
	}

	t.Run("hub-leader-killed", func(t *testing.T) {
		m := m.sub(t)
		old := m.hubLeader()
		m.kill(old)
		killed := time.Now()
		var leader *meshNode
		m.eventually(waitLong, "a new hub leader", func() error {
			name, err := m.agreedLeader(up(m.siteNodes("hub")))
			if err != nil {
				return err
			}
			leader = m.node(name)
			return nil
		})
		m.logf("%s leads the hub after %s was killed", leader.name, old.name)
		// The kubeconfig is only served once the agent is connected to the
		// new leader, and names the new leader's address.
		kc := m.clusterKubeconfig(m.follower(leader), "edge", leader, ports)
		out, err := m.kubectl(m.ctl, kubectl, kc, "get", "configmap", "via-hub", "-n", "default", "-o", "jsonpath={.data.k}")
		if err != nil || out != "v" {
			t.Fatalf("kubectl through the new leader: %q, %v", out, err)
		}
		st := m.waitCluster("edge", "Ready, probed by the new leader", func(st clusters.ClusterStatus) error {
			if err := wantConditions(st, metav1.ConditionTrue, clusters.ConditionAgentAvailable, clusters.ConditionReady); err != nil {
				return err
			}
			if st.LastProbeTime == nil || st.LastProbeTime.Time.Before(killed) {
				return fmt.Errorf("lastProbeTime %v is from before the kill", st.LastProbeTime)
			}
			return nil
		})
		if *st.Connection != ports {
			t.Errorf("ports after the failover %+v; want the same %+v", *st.Connection, ports)
		}
		m.logf("tunnel back on %s, same ports %+v, %.0fs after the kill", leader.name, ports, time.Since(killed).Seconds())
	})
}

// startEdgeKube starts etcd and kube-apiserver on host's loopback (no hub
// member can reach it) and returns the path of an admin kubeconfig for
// them, usable on host only.
func startEdgeKube(t *testing.T, m *mesh, host *netlab.Host, etcd string) string {
	t.Helper()
	apiserver, _, _, err := kubetest.Binaries()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(m.dir, "edge-kube")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	ca, err := pki.LoadOrCreate(filepath.Join(dir, "ca"), "edge kube CA")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Issue(pki.Request{
		CommonName: "kube-apiserver", DNSNames: []string{"localhost", "kubernetes", "kubernetes.default", kubetest.ServerName},
		IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true, Validity: 24 * time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	var chain []byte
	for _, der := range cert.Certificate {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	sa, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	saDER, err := x509.MarshalPKCS8PrivateKey(sa)
	if err != nil {
		t.Fatal(err)
	}
	saPub, err := x509.MarshalPKIXPublicKey(&sa.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	apiURL := "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(edgeAPIPort))
	kc := clientcmdapi.NewConfig()
	kc.Clusters["edge"] = &clientcmdapi.Cluster{Server: apiURL, CertificateAuthorityData: ca.CertPEM}
	kc.AuthInfos["edge"] = &clientcmdapi.AuthInfo{Token: kubeToken}
	kc.Contexts["edge"] = &clientcmdapi.Context{Cluster: "edge", AuthInfo: "edge"}
	kc.CurrentContext = "edge"
	kcBytes, err := clientcmd.Write(*kc)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		"serving.crt": chain,
		"serving.key": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		"sa.key":      pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: saDER}),
		"sa.pub":      pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPub}),
		"tokens.csv":  []byte(kubeToken + ",edge-admin,edge-admin-uid,\"system:masters\"\n"),
		"admin.yaml":  kcBytes,
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	host.Start(etcd, "--name=edge", "--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls=http://127.0.0.1:2379", "--advertise-client-urls=http://127.0.0.1:2379",
		"--listen-peer-urls=http://127.0.0.1:2380", "--initial-advertise-peer-urls=http://127.0.0.1:2380",
		"--initial-cluster=edge=http://127.0.0.1:2380", "--log-level=error")
	host.Start(apiserver, "--etcd-servers=http://127.0.0.1:2379",
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--secure-port="+strconv.Itoa(edgeAPIPort),
		"--endpoint-reconciler-type=none",
		"--tls-cert-file="+filepath.Join(dir, "serving.crt"), "--tls-private-key-file="+filepath.Join(dir, "serving.key"),
		"--token-auth-file="+filepath.Join(dir, "tokens.csv"),
		"--authorization-mode=RBAC",
		"--service-account-issuer=https://"+kubetest.ServerName,
		"--service-account-key-file="+filepath.Join(dir, "sa.pub"),
		"--service-account-signing-key-file="+filepath.Join(dir, "sa.key"),
		"--service-cluster-ip-range=10.96.0.0/24",
		"--enable-priority-and-fairness=false", "--profiling=false", "-v=0")
	return filepath.Join(dir, "admin.yaml")
}

// kubectl runs kubectl with kubeconfig on host and returns its stdout; an
// error carries its stderr.
func (m *mesh) kubectl(host *netlab.Host, kubectl, kubeconfig string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(m.t.Context(), cliTimeout)
	defer cancel()
	cmd := host.Command(ctx, kubectl, append([]string{"--kubeconfig", kubeconfig, "--request-timeout", "20s"}, args...)...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("kubectl %s (on %s): %w: %s", strings.Join(args, " "), host.Name(), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// clusterStatus reads a Cluster's status through a running hub member.
func (m *mesh) clusterStatus(name string) (clusters.ClusterStatus, error) {
	out, err := m.adminCLI(m.anyHub(), "get", "cluster", name, "-o", "json")
	if err != nil {
		return clusters.ClusterStatus{}, err
	}
	var obj struct {
		Status clusters.ClusterStatus `json:"status"`
	}
	if err := json.Unmarshal([]byte(out), &obj); err != nil {
		return clusters.ClusterStatus{}, fmt.Errorf("get cluster %s -o json: %w: %.300s", name, err, out)
	}
	return obj.Status, nil
}

// waitCluster waits until check accepts the Cluster's status and returns
// that status.
func (m *mesh) waitCluster(name, what string, check func(clusters.ClusterStatus) error) clusters.ClusterStatus {
	m.t.Helper()
	var st clusters.ClusterStatus
	m.eventually(waitLong, "cluster "+name+": "+what, func() error {
		var err error
		if st, err = m.clusterStatus(name); err != nil {
			return err
		}
		if err := check(st); err != nil {
			return fmt.Errorf("%w (conditions: %s)", err, conditionsText(st))
		}
		return nil
	})
	return st
}

// clusterKubeconfig runs `outpost cluster kubeconfig NAME -f FILE` on ctl
// through via's API until the hub serves one (it needs the agent connected
// to the leader), checks that it names leader's address and the tunnel's
// port, and returns the file.
func (m *mesh) clusterKubeconfig(via *meshNode, name string, leader *meshNode, ports clusters.Ports) string {
	m.t.Helper()
	file := filepath.Join(m.dir, fmt.Sprintf("%s-via-%s.kubeconfig", name, via.name))
	want := "https://" + net.JoinHostPort(leader.host.IP(), strconv.Itoa(ports.KubernetesAPI))
	m.eventually(waitLong, "the kubeconfig of cluster "+name+" from "+via.name, func() error {
		if _, err := m.adminCLI(via, "cluster", "kubeconfig", name, "-f", file); err != nil {
			return err
		}
		cfg, err := clientcmd.LoadFromFile(file)
		if err != nil {
			return err
		}
		c := cfg.Clusters[cfg.Contexts[cfg.CurrentContext].Cluster]
		if c == nil {
			return fmt.Errorf("%s has no cluster for its current context", file)
		}
		if c.Server != want || c.TLSServerName == "" {
			return fmt.Errorf("kubeconfig server %s, tls-server-name %q; want %s (the leader's address, the tunnel port) and a name", c.Server, c.TLSServerName, want)
		}
		return nil
	})
	return file
}

// hubLeader is the hub member the running members agree leads.
func (m *mesh) hubLeader() *meshNode {
	m.t.Helper()
	var leader string
	m.eventually(waitLong, "an agreed hub leader", func() error {
		var err error
		leader, err = m.agreedLeader(up(m.siteNodes("hub")))
		return err
	})
	return m.node(leader)
}

// follower is a running hub member other than leader.
func (m *mesh) follower(leader *meshNode) *meshNode {
	m.t.Helper()
	for _, n := range up(m.siteNodes("hub")) {
		if n != leader && m.admin[n.name] != "" {
			return n
		}
	}
	m.t.Fatal("no running hub follower")
	return nil
}

// wantConditions checks that each condition type has status want.
func wantConditions(st clusters.ClusterStatus, want metav1.ConditionStatus, types ...string) error {
	for _, typ := range types {
		if got := cond(st, typ).Status; got != want {
			return fmt.Errorf("%s is %q; want %s", typ, got, want)
		}
	}
	return nil
}

// cond returns a condition of st (a zero one when absent).
func cond(st clusters.ClusterStatus, typ string) metav1.Condition {
	for _, c := range st.Conditions {
		if c.Type == typ {
			return c
		}
	}
	return metav1.Condition{}
}

func conditionsText(st clusters.ClusterStatus) string {
	var b strings.Builder
	for _, c := range st.Conditions {
		fmt.Fprintf(&b, "%s=%s/%s ", c.Type, c.Status, c.Reason)
	}
	return strings.TrimSpace(b.String())
}
