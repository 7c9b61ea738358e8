package components

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/outpost-mesh/outpost/clusters"
	"github.com/outpost-mesh/outpost/consensus"
	"github.com/outpost-mesh/outpost/internal/kubetest"
)

// TestVirtualCluster: a vcluster Cluster installs the chart (with its
// distro) into its host's namespace and waits for secret vc-<name>; the
// test plays the virtual control plane by writing that secret, with a
// kubeconfig for a second real API server at vcluster's in-pod address
// (https://localhost:8443). The hub stores it (sealed) with the server
// rewritten to where it reaches the virtual cluster, which then goes
// through the same condition chain to Ready, its own components
// included. Deletion waits until the release, the data PVC, vc-cidr, the
// kubeconfig secret and the namespace are gone; a new Cluster of the
// same name starts empty.
func TestVirtualCluster(t *testing.T) {
	h := startHub(t, nil)
	virt, err := kubetest.Start(t.Context())
	if err != nil {
		t.Fatalf("second kube-apiserver: %v", err)
	}
	defer func() {
		if err := virt.Stop(); err != nil {
			t.Error(err)
		}
	}()
	h.create(t, "host", direct(t))
	h.wait(t, "host", clusters.ConditionReady, metav1.ConditionTrue, "")
	spec := clusters.ClusterSpec{
		Connection: clusters.Connection{Type: clusters.ConnectionDirect},
		VCluster:   &clusters.VCluster{Enabled: true, HostCluster: "host", Distro: clusters.DistroK3s, Endpoint: virt.URL},
		Components: []clusters.Component{{Name: "testruntime"}},
	}
	h.create(t, "vc1", spec)
	const ns = "vcluster-vc1"
	c := h.wait(t, "vc1", ConditionVirtualClusterReady, metav1.ConditionFalse, ReasonWaitingKubeconfig)
	if !strings.Contains(c.Message, "waiting for secret vcluster-vc1/vc-vc1") {
		t.Errorf("VirtualClusterReady while waiting: %q", c.Message)
	}
	h.wait(t, "vc1", clusters.ConditionInitialized, metav1.ConditionFalse, clusters.ReasonProvisioning)
	ctx := t.Context()
	host := kube.Client
	sts, err := host.AppsV1().StatefulSets(ns).Get(ctx, "vc1", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the vcluster chart is not installed in the host: %v", err)
	}
	if sts.Labels["distro"] != clusters.DistroK3s {
		t.Errorf("vcluster installed with distro %q, want k3s (controlPlane.distro)", sts.Labels["distro"])
	}
	firstNS, err := host.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	playVCluster(t, virt, ns, "vc1")

	h.wait(t, "vc1", ConditionVirtualClusterReady, metav1.ConditionTrue, ReasonInstalled)
	h.wait(t, "vc1", "TestruntimeReady", metav1.ConditionTrue, ReasonInstalled, func() { markRolledOut(t, virt.Client, "testruntime-system") })
	h.wait(t, "vc1", clusters.ConditionReady, metav1.ConditionTrue, clusters.ReasonHealthy)
	sys, err := virt.Client.CoreV1().Namespaces().Get(ctx, "kube-system", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if st := h.status(t, "vc1"); st.UID != string(sys.UID) {
		t.Errorf("virtual cluster's uid %q, want the virtual API server's kube-system %q", st.UID, sys.UID)
	}
	kc := storedKubeconfig(t, h, "vc1")
	if cl := kc.Clusters[kc.Contexts[kc.CurrentContext].Cluster]; cl.Server != virt.URL || cl.TLSServerName != "localhost" {
		t.Errorf("stored kubeconfig: server %q tls-server-name %q, want %q and localhost", cl.Server, cl.TLSServerName, virt.URL)
	}

	h.remove(t, "vc1")
	c = h.wait(t, "vc1", clusters.ConditionReady, metav1.ConditionFalse, clusters.ReasonCleanupFailed)
	if !strings.Contains(c.Message, "namespace vcluster-vc1 of cluster host is still being deleted") {
		t.Errorf("cleanup condition %q does not say what it waits for", c.Message)
	}
	eventually(t, time.Minute, func() bool { playNamespaceController(t, ns); return h.gone("vc1") }, "vc1 was never finalized")
	for _, o := range []object{{"statefulset", ns, "vc1"}, {"release", ns, "vc1"}, {"configmap", ns, cidrConfigMap}} {
		if o.exists(t) {
			t.Errorf("%s %s/%s left after deletion", o.kind, o.ns, o.name)
		}
	}
	if _, err := host.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "data-vc1-0", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("data PVC left after deletion: %v", err)
	}
	if _, err := host.CoreV1().Secrets(ns).Get(ctx, "vc-vc1", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("kubeconfig secret left after deletion: %v", err)
	}
	if _, err := host.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("namespace left after deletion: %v", err)
	}

	// The same name again: a new namespace, no kubeconfig until the new
	// control plane writes one.
	h.create(t, "vc1", spec)
	h.wait(t, "vc1", ConditionVirtualClusterReady, metav1.ConditionFalse, ReasonWaitingKubeconfig)
	again, err := host.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if again.UID == firstNS.UID {
		t.Error("the recreated virtual cluster got the old namespace")
	}
	if pvcs, _ := host.CoreV1().PersistentVolumeClaims(ns).List(ctx, metav1.ListOptions{}); len(pvcs.Items) != 0 {
		t.Errorf("the recreated virtual cluster sees old PVCs: %d", len(pvcs.Items))
	}
	h.remove(t, "vc1")
	eventually(t, time.Minute, func() bool { playNamespaceController(t, ns); return h.gone("vc1") }, "vc1 was never finalized the second time")
	h.remove(t, "host")
	eventually(t, time.Minute, func() bool { return h.gone("host") }, "host was never finalized")
}

// playVCluster does what the virtual control plane and the StatefulSet
// controller would: the data PVC, vc-cidr and the kubeconfig secret,
// whose server is vcluster's in-pod address.
func playVCluster(t *testing.T, virt *kubetest.Server, ns, name string) {
	t.Helper()
	ctx := t.Context()
	core := kube.Client.CoreV1()
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["my-vcluster"] = &clientcmdapi.Cluster{Server: "https://localhost:8443", CertificateAuthorityData: virt.CAPEM}
	cfg.AuthInfos["my-vcluster"] = &clientcmdapi.AuthInfo{Token: kubetest.AdminToken}
	cfg.Contexts["my-vcluster"] = &clientcmdapi.Context{Cluster: "my-vcluster", AuthInfo: "my-vcluster"}
	cfg.CurrentContext = "my-vcluster"
	kc, err := clientcmd.Write(*cfg)
	if err != nil {
		t.Fatal(err)
	}
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "data-" + name + "-0", Labels: map[string]string{"app": "vcluster", "release": name}},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("5Gi")}},
		},
	}
	if _, err := core.PersistentVolumeClaims(ns).Create(ctx, pvc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := core.ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: cidrConfigMap}, Data: map[string]string{"cidr": "10.96.0.0/12"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := core.Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "vc-" + name}, Data: map[string][]byte{"config": kc}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// playNamespaceController does what kube-controller-manager would for a
// deleted namespace: lets its PVCs go (pvc-protection) and finalizes it.
func playNamespaceController(t *testing.T, ns string) {
	t.Helper()
	ctx := context.Background()
	core := kube.Client.CoreV1()
	pvcs, err := core.PersistentVolumeClaims(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pvcs.Items {
		if p.DeletionTimestamp != nil && len(p.Finalizers) > 0 {
			p.Finalizers = nil
			if _, err := core.PersistentVolumeClaims(ns).Update(ctx, &p, metav1.UpdateOptions{}); err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
				t.Fatal(err)
			}
		}
	}
	n, err := core.Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if err != nil || n.DeletionTimestamp == nil {
		return
	}
	if rest, _ := core.PersistentVolumeClaims(ns).List(ctx, metav1.ListOptions{}); len(rest.Items) > 0 {
		return
	}
	n.Spec.Finalizers = nil
	if _, err := core.Namespaces().Finalize(ctx, n, metav1.UpdateOptions{}); err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		t.Fatal(err)
	}
}

// storedKubeconfig is the Cluster's kubeconfig as the hub stored it.
func storedKubeconfig(t *testing.T, h *hub, name string) *clientcmdapi.Config {
	t.Helper()
	obj, err := h.store.Get(t.Context(), &clusters.ClusterKind, "", name, consensus.ReadOptions{Stale: true})
	if err != nil {
		t.Fatal(err)
	}
	var sealed clusters.ClusterSpec
	if err := obj.DecodeSpec(&sealed); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(sealed.Connection.Kubeconfig), "8443") || strings.Contains(string(sealed.Connection.Kubeconfig), kubetest.AdminToken) {
		t.Error("the virtual cluster's kubeconfig is stored in plaintext")
	}
	open, err := h.store.Unseal(&clusters.ClusterKind, obj)
	if err != nil {
		t.Fatal(err)
	}
	var spec clusters.ClusterSpec
	if err := open.DecodeSpec(&spec); err != nil {
		t.Fatal(err)
	}
	kc, err := clientcmd.Load(spec.Connection.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	return kc
}

// TestRewriteServer: the kubeconfig's server becomes the endpoint, with
// the name its certificate holds as tls-server-name; bad input is named.
func TestRewriteServer(t *testing.T) {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["c"] = &clientcmdapi.Cluster{Server: "https://localhost:8443", CertificateAuthorityData: []byte("ca")}
	cfg.AuthInfos["u"] = &clientcmdapi.AuthInfo{Token: "t"}
	cfg.Contexts["c"] = &clientcmdapi.Context{Cluster: "c", AuthInfo: "u"}
	kc, err := clientcmd.Write(*cfg)
	if err != nil {
		t.Fatal(err)
	}
	out, err := rewriteServer(kc, "https://127.0.0.1:17001/")
	if err != nil {
		t.Fatal(err)
	}
	got, err := clientcmd.Load(out)
	if err != nil {
		t.Fatal(err)
	}
	if cl := got.Clusters["c"]; cl.Server != "https://127.0.0.1:17001" || cl.TLSServerName != "localhost" || got.CurrentContext != "c" {
		t.Errorf("rewritten: server %q tls-server-name %q context %q", cl.Server, cl.TLSServerName, got.CurrentContext)
	}
	for _, tc := range []struct{ kc, endpoint, want string }{
		{"not: [a kubeconfig", "https://h:1", "not a kubeconfig"},
		{string(kc), "http://h:1", "not an https:// URL"},
		{"apiVersion: v1\nkind: Config\n", "https://h:1", "no current context"},
	} {
		if _, err := rewriteServer([]byte(tc.kc), tc.endpoint); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("rewriteServer(%q): %v, want %q", tc.endpoint, err, tc.want)
		}
	}
}
