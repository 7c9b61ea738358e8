package node_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/outpost-mesh/outpost/clusters"
	"github.com/outpost-mesh/outpost/clusters/tunnel"
	"github.com/outpost-mesh/outpost/internal/kubetest"
	"github.com/outpost-mesh/outpost/internal/pki"
	"github.com/outpost-mesh/outpost/node"
)

// TestProxyClusterThroughTunnel runs a proxy Cluster against a real
// kube-apiserver reached only through the reverse tunnel: a wrong token is
// refused with a clear error and nothing is registered; the agent with the
// right token brings the Cluster to Ready; kubectl and client-go, with the
// kubeconfig the hub hands out, list namespaces and create a ConfigMap
// through the hub's tunnel port.
func TestProxyClusterThroughTunnel(t *testing.T) {
	_, kc := kubetest.ForTest(t)
	hub := startNode(t, func(c *node.Config) {
		c.TuneClusters = func(cc *clusters.Config) { cc.Resync = 500 * time.Millisecond }
		c.TunnelPorts = freeTunnelPorts(t)
	})
	token, hash, err := clusters.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	hub.mustDo(t, call{method: http.MethodPost, path: clustersPath, body: clusterJSON("edge", map[string]any{"type": "proxy", "tokenHash": hash})}, 201, nil)

	ca, err := pki.LoadOrCreate(filepath.Join(hub.dir, "pki"), "unused: the hub made it")
	if err != nil {
		t.Fatal(err)
	}
	var quicAddr string
	eventually(t, 30*time.Second, func() error {
		var nodes struct{ Items []object }
		hub.mustDo(t, call{method: http.MethodGet, path: nodesPath}, 200, &nodes)
		if len(nodes.Items) == 0 {
			return errors.New("the hub has no Node yet")
		}
		if quicAddr, _ = nodes.Items[0].Status["quicAddr"].(string); quicAddr == "" {
			return fmt.Errorf("the hub's Node has no quicAddr: %v", nodes.Items[0].Status)
		}
		return nil
	})
	rc, err := clientcmd.RESTConfigFromKubeConfig(kc)
	if err != nil {
		t.Fatal(err)
	}
	api, report, err := tunnel.EdgeAPI(rc)
	if err != nil {
		t.Fatal(err)
	}
	agentCfg := func(tok string) tunnel.AgentConfig {
		cfg := tunnel.DefaultAgentConfig()
		cfg.Cluster, cfg.Token, cfg.HubAddrs, cfg.CAFingerprint = "edge", tok, []string{quicAddr}, ca.Fingerprint()
		cfg.KubeAPIAddr, cfg.Report = api, report
		cfg.Heartbeat, cfg.MaxBackoff = 200*time.Millisecond, 200*time.Millisecond
		return cfg
	}

	// A wrong token: a clear, final error; the Cluster stays without agent.
	bad, err := tunnel.NewAgent(agentCfg(token + "x"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	err = bad.Run(ctx)
	cancel()
	if !errors.Is(err, tunnel.ErrRefused) || !strings.Contains(err.Error(), "cluster edge: invalid cluster token") {
		t.Fatalf("agent with a wrong token: %v, want ErrRefused naming the cluster and the token", err)
	}
	if st := clusterStatus(t, hub, "edge"); condition(st, clusters.ConditionAgentAvailable) == metav1.ConditionTrue {
		t.Fatalf("AgentAvailable after a refused agent: %+v", st.Conditions)
	}

	agent, err := tunnel.NewAgent(agentCfg(token))
	if err != nil {
		t.Fatal(err)
	}
	actx, stopAgent := context.WithCancel(context.Background())
	agentDone := make(chan error, 1)
	go func() { agentDone <- agent.Run(actx) }()
	t.Cleanup(func() {
		stopAgent()
		if err := <-agentDone; err != nil {
			t.Errorf("agent: %v", err)
		}
	})
	var st clusters.ClusterStatus
	eventually(t, 60*time.Second, func() error {
		st = clusterStatus(t, hub, "edge")
		if condition(st, clusters.ConditionReady) != metav1.ConditionTrue {
			return fmt.Errorf("not Ready: %+v", st.Conditions)
		}
		return nil
	})
	if st.Connection == nil || st.Connection.KubernetesAPI == 0 || st.KubernetesVersion != kubetest.KubeVersion || st.UID == "" {
		t.Errorf("status of a Ready proxy cluster: %+v", st)
	}

	code, served := hub.do(t, call{method: http.MethodGet, path: clustersPath + "/edge/kubeconfig"})
	if code != 200 {
		t.Fatalf("kubeconfig: %d %s", code, served)
	}
	prc, err := clientcmd.RESTConfigFromKubeConfig(served)
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("https://127.0.0.1:%d", st.Connection.KubernetesAPI); prc.Host != want || prc.ServerName == "" {
		t.Errorf("served kubeconfig: server %s, tls-server-name %q; want %s and a name", prc.Host, prc.ServerName, want)
	}
	cs, err := kubernetes.NewForConfig(prc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().ConfigMaps("default").Create(t.Context(), &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "through-client-go"}, Data: map[string]string{"via": "tunnel"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("client-go through the tunnel: %v", err)
	}

	_, kubectl, _, err := kubetest.Binaries()
	if err != nil {
		t.Fatal(err)
	}
	kcPath := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kcPath, served, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"get", "namespaces", "-o", "name"},
		{"create", "configmap", "through-kubectl", "--from-literal=via=tunnel", "-n", "default"},
		{"get", "configmaps", "-n", "default", "-o", "name"},
	} {
		out, err := exec.CommandContext(t.Context(), kubectl, append([]string{"--kubeconfig", kcPath, "--request-timeout", "20s"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl %s: %v: %s", strings.Join(args, " "), err, out)
		}
		if args[1] == "namespaces" && !strings.Contains(string(out), "namespace/kube-system") ||
			args[0] == "get" && args[1] == "configmaps" && !strings.Contains(string(out), "configmap/through-client-go") {
			t.Errorf("kubectl %s: %s", strings.Join(args, " "), out)
		}
	}
	// What kubectl created through the tunnel is in the real API server.
	direct, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	if cm, err := direct.CoreV1().ConfigMaps("default").Get(t.Context(), "through-kubectl", metav1.GetOptions{}); err != nil || cm.Data["via"] != "tunnel" {
		t.Errorf("the ConfigMap kubectl created: %v, %v", cm, err)
	}
}

// clusterStatus reads a Cluster's status through the API.
func clusterStatus(t *testing.T, hub *testNode, name string) clusters.ClusterStatus {
	t.Helper()
	var obj object
	hub.mustDo(t, call{method: http.MethodGet, path: clustersPath + "/" + name}, 200, &obj)
	b, _ := json.Marshal(obj.Status)
	var st clusters.ClusterStatus
	_ = json.Unmarshal(b, &st)
	return st
}

// condition returns the status of a condition type ("" when absent).
func condition(st clusters.ClusterStatus, typ string) metav1.ConditionStatus {
	for _, c := range st.Conditions {
		if c.Type == typ {
			return c.Status
		}
	}
	return ""
}

// freeTunnelPorts returns a --tunnel-ports range of two free loopback TCP
// ports, so that a test's proxy cluster does not meet another hub on the
// machine at the default range.
func freeTunnelPorts(t *testing.T) string {
	t.Helper()
	for range 100 {
		p := freePort(t, true)
		testPorts.Add(1) // p+1 is this test's too
		if ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p+1))); err == nil {
			ln.Close()
			return fmt.Sprintf("%d-%d", p, p+1)
		}
	}
	t.Fatal("no two adjacent free loopback ports")
	return ""
}
