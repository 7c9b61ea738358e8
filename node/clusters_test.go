package node_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/outpost-mesh/outpost/clusters"
	"github.com/outpost-mesh/outpost/internal/kubetest"
	"github.com/outpost-mesh/outpost/node"
)

const clustersPath = "/apis/clusters.outpost.dev/v1alpha1/clusters"

func clusterJSON(name string, conn map[string]any) []byte {
	b, _ := json.Marshal(map[string]any{
		"apiVersion": "clusters.outpost.dev/v1alpha1", "kind": "Cluster",
		"metadata": map[string]any{"name": name}, "spec": map[string]any{"connection": conn},
	})
	return b
}

// TestClusterAPI drives Clusters through a hub's admin API against a real
// kube-apiserver: bad input is a 422 naming the field and creates nothing;
// a direct Cluster reaches Ready with its kubeconfig never echoed; the
// kubeconfig subresource hands the kubeconfig back to an admin, and it
// works with client-go; deletion runs the finalizer and the object goes.
func TestClusterAPI(t *testing.T) {
	_, kc := kubetest.ForTest(t)
	hub := startNode(t, func(c *node.Config) {
		c.TuneClusters = func(cc *clusters.Config) { cc.Resync = time.Second }
	})
	b64 := base64.StdEncoding.EncodeToString

	for _, tc := range []struct {
		name  string
		conn  map[string]any
		field string
	}{
		{"proxy-with-kubeconfig", map[string]any{"type": "proxy", "kubeconfig": b64(kc)}, "spec.connection.kubeconfig"},
		{"direct-without-kubeconfig", map[string]any{"type": "direct"}, "spec.connection.kubeconfig"},
		{"invalid-kubeconfig", map[string]any{"type": "direct", "kubeconfig": b64([]byte("clusters: [}"))}, "spec.connection.kubeconfig"},
		{"unknown-field", map[string]any{"type": "direct", "kubeconfig": b64(kc), "proxyURL": "x"}, "spec.connection.proxyURL"},
	} {
		code, body := hub.do(t, call{method: http.MethodPost, path: clustersPath, body: clusterJSON("bad", tc.conn)})
		if code/100 != 4 || !strings.Contains(string(body), tc.field) {
			t.Errorf("%s: %d %s, want 4xx naming %s", tc.name, code, body, tc.field)
		}
	}
	var list struct{ Items []object }
	hub.mustDo(t, call{method: http.MethodGet, path: clustersPath}, 200, &list)
	if len(list.Items) != 0 {
		t.Fatalf("bad input created %d clusters", len(list.Items))
	}

	hub.mustDo(t, call{method: http.MethodPost, path: clustersPath, body: clusterJSON("edge", map[string]any{"type": "direct", "kubeconfig": b64(kc)})}, 201, nil)
	var obj object
	eventually(t, 60*time.Second, func() error {
		hub.mustDo(t, call{method: http.MethodGet, path: clustersPath + "/edge"}, 200, &obj)
		b, _ := json.Marshal(obj.Status)
		var st clusters.ClusterStatus
		_ = json.Unmarshal(b, &st)
		for _, c := range st.Conditions {
			if c.Type == clusters.ConditionReady && c.Status == metav1.ConditionTrue {
				return nil
			}
		}
		return fmt.Errorf("not Ready: %s", b)
	})
	if conn, _ := obj.Spec["connection"].(map[string]any); conn["kubeconfig"] != nil || conn["type"] != "direct" {
		t.Errorf("spec.connection as served: %v (kubeconfig must not be returned)", conn)
	}

	var tbl metav1.Table
	hub.mustDo(t, call{method: http.MethodGet, path: clustersPath, accept: tableMedia}, 200, &tbl)
	if len(tbl.Rows) != 1 || len(tbl.Rows[0].Cells) < 5 || tbl.Rows[0].Cells[1] != "direct" || tbl.Rows[0].Cells[2] != "True" || tbl.Rows[0].Cells[4] != kubetest.KubeVersion {
		t.Errorf("table rows %v, want edge direct True (Ready) ... %s", tbl.Rows, kubetest.KubeVersion)
	}

	code, got := hub.do(t, call{method: http.MethodGet, path: clustersPath + "/edge/kubeconfig"})
	if code != 200 || string(got) != string(kc) {
		t.Fatalf("kubeconfig: %d %s", code, got)
	}
	rc, err := clientcmd.RESTConfigFromKubeConfig(got)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Namespaces().List(t.Context(), metav1.ListOptions{}); err != nil {
		t.Errorf("list namespaces with the served kubeconfig: %v", err)
	}
	if code, _ := hub.do(t, call{method: http.MethodGet, path: clustersPath + "/nope/kubeconfig"}); code != 404 {
		t.Errorf("kubeconfig of a missing cluster: %d, want 404", code)
	}
	if code, _ := hub.do(t, call{method: http.MethodGet, path: clustersPath + "/edge/kubeconfig", auth: "-"}); code != 401 {
		t.Errorf("kubeconfig without a token: %d, want 401", code)
	}

	hub.mustDo(t, call{method: http.MethodDelete, path: clustersPath + "/edge"}, 200, nil)
	eventually(t, 30*time.Second, func() error {
		if code, body := hub.do(t, call{method: http.MethodGet, path: clustersPath + "/edge"}); code != 404 {
			return fmt.Errorf("still there: %d %s", code, body)
		}
		return nil
	})
}
