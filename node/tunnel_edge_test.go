package node_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/outpost-mesh/outpost/clusters"
	"github.com/outpost-mesh/outpost/internal/kubetest"
	"github.com/outpost-mesh/outpost/internal/pki"
	"github.com/outpost-mesh/outpost/node"
)

// TestEdgeNodeServesCluster: a site node started with --cluster,
// --kubeconfig and --cluster-token serves as the proxy cluster's agent
// (edge-node mode) against a real kube-apiserver. Three nodes of the site
// have the flags; the site's leader serves. The hub resyncs only every 10
// minutes, so the Cluster reaching Ready shows that the agent's arrival
// enqueues it at once. client-go with the hub's kubeconfig creates a
// ConfigMap through the tunnel, and it is in the edge API server; after
// the site's leader stops, the next leader's tunnel carries it again. A
// token for another mesh, a hub member with --cluster and flags given
// without --cluster are refused at the start, naming the flag.
func TestEdgeNodeServesCluster(t *testing.T) {
	kube, kc := kubetest.ForTest(t)
	kcPath := filepath.Join(t.TempDir(), "edge.kubeconfig")
	if err := os.WriteFile(kcPath, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	hub := startNode(t, func(c *node.Config) {
		c.TuneClusters = func(cc *clusters.Config) { cc.Resync = 10 * time.Minute }
		c.TunnelPorts = freeTunnelPorts(t)
	})
	token, hash, err := clusters.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	hub.mustDo(t, call{method: http.MethodPost, path: clustersPath, body: clusterJSON("store-1", map[string]any{"type": "proxy", "tokenHash": hash})}, 201, nil)
	eventually(t, 30*time.Second, func() error {
		if got := condition(clusterStatus(t, hub, "store-1"), clusters.ConditionAgentAvailable); got != metav1.ConditionFalse {
			return fmt.Errorf("AgentAvailable %q before any agent; want False (AgentNotConnected)", got)
		}
		return nil
	})
	ca, err := pki.LoadOrCreate(filepath.Join(hub.dir, "pki"), "unused: the hub made it")
	if err != nil {
		t.Fatal(err)
	}
	addr := hub.hubQUIC(t)
	join := hub.createToken(t, "store", 0, time.Time{})

	// Every node of the site is given the flags; the site's leader serves.
	var site []*edgeNode
	for _, name := range []string{"store-a", "store-b", "store-c"} {
		site = append(site, startEdge(t, addr, join, name, func(c *node.Config) {
			c.EdgeCluster, c.EdgeKubeconfig = "store-1", kcPath
			c.EdgeClusterToken = clusters.FormatAgentToken(token, ca.Fingerprint())
		}))
	}
	var st clusters.ClusterStatus
	eventually(t, 60*time.Second, func() error {
		st = clusterStatus(t, hub, "store-1")
		if condition(st, clusters.ConditionReady) != metav1.ConditionTrue {
			return fmt.Errorf("not Ready: %+v", st.Conditions)
		}
		return nil
	})
	if st.KubernetesVersion != kubetest.KubeVersion || st.UID == "" {
		t.Errorf("status of the Ready cluster: version %q, uid %q", st.KubernetesVersion, st.UID)
	}
	// createThroughHub creates a ConfigMap with client-go and the
	// kubeconfig the hub serves, which it serves only while an agent is
	// connected.
	createThroughHub := func(name string) error {
		code, served := hub.do(t, call{method: http.MethodGet, path: clustersPath + "/store-1/kubeconfig"})
		if code != 200 {
			return fmt.Errorf("kubeconfig: %d %s", code, served)
		}
		rc, err := clientcmd.RESTConfigFromKubeConfig(served)
		if err != nil {
			return err
		}
		cs, err := kubernetes.NewForConfig(rc)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		_, err = cs.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
		return err
	}
	if err := createThroughHub("via-edge-node"); err != nil {
		t.Fatalf("client-go through the edge node's tunnel: %v", err)
	}
	if _, err := kube.Client.CoreV1().ConfigMaps("default").Get(t.Context(), "via-edge-node", metav1.GetOptions{}); err != nil {
		t.Errorf("the ConfigMap in the edge API server: %v", err)
	}

	// The site's leader stops: the next leader takes the tunnel over.
	leader := siteLeader(site)
	if leader == nil {
		t.Fatal("the site has no leader")
	}
	leader.stop()
	t.Logf("stopped %s, the site's leader", leader.Name())
	eventually(t, 60*time.Second, func() error { return createThroughHub("after-failover") })
	if next := siteLeader(site); next == nil || next == leader {
		t.Errorf("the tunnel came back without a new site leader")
	}
	if _, err := kube.Client.CoreV1().ConfigMaps("default").Get(t.Context(), "after-failover", metav1.GetOptions{}); err != nil {
		t.Errorf("the ConfigMap made after the failover: %v", err)
	}

	t.Run("refused", func(t *testing.T) {
		other, err := pki.LoadOrCreate(filepath.Join(t.TempDir(), "ca"), "another mesh")
		if err != nil {
			t.Fatal(err)
		}
		cfg := joinConfig(t, addr, join, "store-x", "")
		cfg.QUICPort, cfg.GossipPort = freePort(t, false), freePort(t, true)
		cfg.EdgeCluster, cfg.EdgeKubeconfig = "store-1", kcPath
		cfg.EdgeClusterToken = clusters.FormatAgentToken(token, other.Fingerprint())
		logger := slog.New(slog.DiscardHandler)
		if err := node.Join(t.Context(), cfg, logger); err != nil {
			t.Fatal(err)
		}
		if n, err := node.New(cfg, logger); err == nil || !strings.Contains(err.Error(), "--cluster-token") || !strings.Contains(err.Error(), "another hub") {
			if err == nil {
				_ = n.Run(canceled())
			}
			t.Errorf("a token for another mesh: %v; want an error naming --cluster-token", err)
		}
		hubCfg := node.DefaultConfig()
		hubCfg.Name, hubCfg.DataDir, hubCfg.APIAddr, hubCfg.BindAddr, hubCfg.RegistryAddr = "hub-x", t.TempDir(), "127.0.0.1:0", "127.0.0.1", ""
		hubCfg.QUICPort, hubCfg.GossipPort = freePort(t, false), freePort(t, true)
		hubCfg.EdgeCluster, hubCfg.EdgeKubeconfig, hubCfg.EdgeClusterToken = "store-1", kcPath, token
		if n, err := node.New(hubCfg, logger); err == nil || !strings.Contains(err.Error(), "hub member") {
			if err == nil {
				_ = n.Run(canceled())
			}
			t.Errorf("--cluster on a hub member: %v; want a refusal", err)
		}
		for _, tc := range []struct {
			cluster, kubeconfig, token, want string
		}{
			{"", kcPath, "", "give --cluster NAME"},
			{"", "", token, "give --cluster NAME"},
			{"store-1", "", token, "--kubeconfig"},
			{"store-1", kcPath, "", "--cluster-token"},
			{"Store_1", kcPath, token, "--cluster \"Store_1\""},
			{"store-1", kcPath, token + ".abc", "--cluster-token"},
		} {
			c := node.DefaultConfig()
			c.EdgeCluster, c.EdgeKubeconfig, c.EdgeClusterToken = tc.cluster, tc.kubeconfig, tc.token
			if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("--cluster %q --kubeconfig %q --cluster-token %q: %v; want an error saying %s", tc.cluster, tc.kubeconfig, tc.token, err, tc.want)
			}
		}
	})
}

// canceled is a context that is already done: Run on it closes what New
// opened.
func canceled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}
