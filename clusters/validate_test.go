package clusters

import (
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/outpost-mesh/outpost/consensus"
)

// TestValidateRejects: each bad Cluster is a 422 naming its field, and
// nothing is created.
func TestValidateRejects(t *testing.T) {
	store := newStore(t)
	good := kubeconfigFor(t, "https://127.0.0.1:6443", nil, "t")
	cases := []struct {
		name  string
		obj   string
		spec  ClusterSpec
		field string
	}{
		{"proxy-with-kubeconfig", "p1", ClusterSpec{Connection: Connection{Type: ConnectionProxy, Kubeconfig: good}}, "spec.connection.kubeconfig"},
		{"direct-without-kubeconfig", "d1", ClusterSpec{Connection: Connection{Type: ConnectionDirect}}, "spec.connection.kubeconfig"},
		{"invalid-kubeconfig", "d2", ClusterSpec{Connection: Connection{Type: ConnectionDirect, Kubeconfig: []byte("apiVersion: v1\nkind: Config\nclusters: 7\n")}}, "spec.connection.kubeconfig"},
		{"kubeconfig-without-context", "d3", ClusterSpec{Connection: Connection{Type: ConnectionDirect, Kubeconfig: []byte("apiVersion: v1\nkind: Config\n")}}, "spec.connection.kubeconfig"},
		{"exec-credentials", "d4", ClusterSpec{Connection: Connection{Type: ConnectionDirect, Kubeconfig: []byte(execKubeconfig)}}, "spec.connection.kubeconfig"},
		{"no-type", "n1", ClusterSpec{}, "spec.connection.type"},
		{"unknown-type", "n2", ClusterSpec{Connection: Connection{Type: "vpn"}}, "spec.connection.type"},
		{"http-endpoint", "d5", ClusterSpec{Connection: Connection{Type: ConnectionDirect, Kubeconfig: good, KubernetesAPIEndpoint: "http://10.0.0.1:6443"}}, "spec.connection.kubernetesAPIEndpoint"},
		{"proxy-bad-token-hash", "p2", ClusterSpec{Connection: Connection{Type: ConnectionProxy, TokenHash: "abc"}}, "spec.connection.tokenHash"},
		{"direct-with-token-hash", "d6", ClusterSpec{Connection: Connection{Type: ConnectionDirect, Kubeconfig: good, TokenHash: HashToken("x")}}, "spec.connection.tokenHash"},
		{"duplicate-component", "c1", ClusterSpec{Connection: Connection{Type: ConnectionProxy}, Components: []Component{{Name: "kubeedge"}, {Name: "kubeedge"}}}, "spec.components[1].name"},
		{"component-values-not-object", "c2", ClusterSpec{Connection: Connection{Type: ConnectionProxy}, Components: []Component{{Name: "openyurt", Values: []byte(`[1]`)}}}, "spec.components[0].values"},
		{"vcluster-proxy", "v1", ClusterSpec{Connection: Connection{Type: ConnectionProxy}, VCluster: &VCluster{Enabled: true, HostCluster: "h"}}, "spec.connection.type"},
		{"vcluster-no-host", "v2", ClusterSpec{Connection: Connection{Type: ConnectionDirect}, VCluster: &VCluster{Enabled: true}}, "spec.vcluster.hostCluster"},
		{"vcluster-hosts-itself", "v3", ClusterSpec{Connection: Connection{Type: ConnectionDirect}, VCluster: &VCluster{Enabled: true, HostCluster: "v3"}}, "spec.vcluster.hostCluster"},
		{"vcluster-distro", "v4", ClusterSpec{Connection: Connection{Type: ConnectionDirect}, VCluster: &VCluster{Enabled: true, HostCluster: "h", Distro: "k9s"}}, "spec.vcluster.distro"},
		{"vcluster-namespace", "v5", ClusterSpec{Connection: Connection{Type: ConnectionDirect}, VCluster: &VCluster{Enabled: true, HostCluster: "h", Namespace: "Not_A_Label"}}, "spec.vcluster.namespace"},
		{"vcluster-default-namespace-too-long", strings.Repeat("v", 60), ClusterSpec{Connection: Connection{Type: ConnectionDirect}, VCluster: &VCluster{Enabled: true, HostCluster: "h"}}, "spec.vcluster.namespace"},
		{"vcluster-endpoint", "v6", ClusterSpec{Connection: Connection{Type: ConnectionDirect}, VCluster: &VCluster{Enabled: true, HostCluster: "h", Endpoint: "10.0.0.1:8443"}}, "spec.vcluster.endpoint"},
		{"vcluster-values", "v7", ClusterSpec{Connection: Connection{Type: ConnectionDirect}, VCluster: &VCluster{Enabled: true, HostCluster: "h", Values: []byte(`"x"`)}}, "spec.vcluster.values"},
		{"name-not-a-label", "a.b", ClusterSpec{Connection: Connection{Type: ConnectionProxy}}, "metadata.name"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			obj := &consensus.Object{ObjectMeta: metav1.ObjectMeta{Name: tc.obj}}
			if err := obj.SetSpec(tc.spec); err != nil {
				t.Fatal(err)
			}
			_, err := store.Create(t.Context(), &ClusterKind, obj)
			if !apierrors.IsInvalid(err) {
				t.Fatalf("create: %v, want 422 Invalid", err)
			}
			if !strings.Contains(err.Error(), tc.field) {
				t.Errorf("error %q does not name %s", err, tc.field)
			}
			if strings.Contains(err.Error(), "token: t") || strings.Contains(err.Error(), "apiVersion") {
				t.Errorf("error echoes the kubeconfig: %q", err)
			}
		})
	}
	list, err := store.List(t.Context(), &ClusterKind, "", nil, consensus.ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 0 {
		t.Errorf("%d Clusters created from bad input", len(list.Items))
	}
}

// TestValidateVClusterWithoutKubeconfig: a virtual cluster is created
// without a kubeconfig (the hub fills it), with the defaults.
func TestValidateVClusterWithoutKubeconfig(t *testing.T) {
	store := newStore(t)
	createCluster(t, store, "vc", ClusterSpec{Connection: Connection{Type: ConnectionDirect}, VCluster: &VCluster{Enabled: true, HostCluster: "host", Distro: DistroK3s}})
	if got := (&VCluster{}).HostNamespace("vc"); got != "vcluster-vc" {
		t.Errorf("default host namespace %q", got)
	}
}

// TestValidateAcceptsSealedUpdate: a merge patch re-validates the stored
// object, whose kubeconfig is sealed; that must pass, and an update that
// leaves the kubeconfig out keeps it.
func TestValidateAcceptsSealedUpdate(t *testing.T) {
	store := newStore(t)
	kc := kubeconfigFor(t, "https://127.0.0.1:6443", nil, "secret-token")
	createCluster(t, store, "sealed", direct(kc))
	if _, err := store.Patch(t.Context(), &ClusterKind, "", "sealed", []byte(`{"spec":{"provider":"k3s"}}`), false); err != nil {
		t.Fatalf("patch: %v", err)
	}
	obj, err := store.Get(t.Context(), &ClusterKind, "", "sealed", consensus.ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	obj.Spec = []byte(`{"provider":"kubeadm","connection":{"type":"direct"}}`)
	if _, err := store.Update(t.Context(), &ClusterKind, obj); err != nil {
		t.Fatalf("update without the kubeconfig: %v", err)
	}
	obj, _ = store.Get(t.Context(), &ClusterKind, "", "sealed", consensus.ReadOptions{})
	open, err := store.Unseal(&ClusterKind, obj)
	if err != nil {
		t.Fatal(err)
	}
	var spec ClusterSpec
	if err := open.DecodeSpec(&spec); err != nil {
		t.Fatal(err)
	}
	if string(spec.Connection.Kubeconfig) != string(kc) || spec.Provider != "kubeadm" {
		t.Errorf("after updates: provider %q, kubeconfig kept %v", spec.Provider, string(spec.Connection.Kubeconfig) == string(kc))
	}
}

const execKubeconfig = `apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://127.0.0.1:6443"}
users:
- name: u
  user:
    exec: {apiVersion: client.authentication.k8s.io/v1, command: /bin/true, interactiveMode: Never}
contexts:
- name: c
  context: {cluster: c, user: u}
current-context: c
`
