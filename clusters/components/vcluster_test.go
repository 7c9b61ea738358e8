package components

import (
	"context"
	"net"
	"net/url"
	"strconv"
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

// TestVirtualCluster: a proxy Cluster gets its component through its
// agent's tunnel; a vcluster Cluster on it installs the chart (with its
// distro) into the host's namespace, through the tunnel too, and waits for secret vc-<name>; the
// test plays the virtual control plane by writing that secret, with a
// kubeconfig for a second real API server at vcluster's in-pod address
// (https://localhost:8443), and plays the vcluster pod's node with a
// kubelet that port-forwards to that API server. The hub stores the
// kubeconfig (sealed) with the server rewritten to its forward, a
// loopback port whose connections go through the host's API server to
// the pod (as `vcluster connect` does), and the virtual cluster then goes
// through the same condition chain to Ready, its own components
// installed through the forward. Deletion closes the forward and waits
// until the release, the data PVC, vc-cidr, the kubeconfig secret and the
// namespace are gone; a new Cluster of the same name (default distro:
// k8s) starts empty.
func TestVirtualCluster(t *testing.T) {
	h, lab := startTunnelledHub(t)
	virt, err := kubetest.Start(t.Context())
	if err != nil {
		t.Fatalf("second kube-apiserver: %v", err)
	}
	defer func() {
		if err := virt.Stop(); err != nil {
			t.Error(err)
		}
	}()
	virtURL, err := url.Parse(virt.URL)
	if err != nil {
		t.Fatal(err)
	}
	kubelet := startFakeKubelet(t, kube.Client, "vcluster-node", virtURL.Host)
	// The host is a proxy cluster: the hub reaches it, installs its
	// component and the vcluster chart, and reaches the virtual API
	// server only through its agent's tunnel.
	hostSpec, token := proxy(t, clusters.Component{Name: "testruntime"})
	h.create(t, "host", hostSpec)
	lab.startAgent(t, "host", token)
	h.wait(t, "host", "TestruntimeReady", metav1.ConditionTrue, ReasonInstalled, func() { markRolledOut(t, kube.Client, "testruntime-system") })
	h.wait(t, "host", clusters.ConditionReady, metav1.ConditionTrue, "")
	hostPort := h.status(t, "host").Connection.KubernetesAPI
	spec := clusters.ClusterSpec{
		Connection: clusters.Connection{Type: clusters.ConnectionDirect},
		VCluster:   &clusters.VCluster{Enabled: true, HostCluster: "host", Distro: clusters.DistroK3s},
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
	playStatefulSetPod(t, host, ns, "vc1", kubelet.node)
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
	if _, err := virt.Client.AppsV1().Deployments("testruntime-system").Get(ctx, "testruntime", metav1.GetOptions{}); err != nil {
		t.Errorf("the virtual cluster's component is not in the virtual API server: %v", err)
	}
	kc := storedKubeconfig(t, h, "vc1")
	cl := kc.Clusters[kc.Contexts[kc.CurrentContext].Cluster]
	server, err := url.Parse(cl.Server)
	if err != nil || server.Hostname() != "127.0.0.1" || server.Host == virtURL.Host || server.Port() == strconv.Itoa(hostPort) || cl.TLSServerName != "localhost" {
		t.Errorf("stored kubeconfig: server %q tls-server-name %q, want the hub's forward on 127.0.0.1 and localhost", cl.Server, cl.TLSServerName)
	}
	if n, path := kubelet.forwarded(); n == 0 || path != "/portForward/"+ns+"/vc1-0" {
		t.Errorf("the host's kubelet saw %d port-forwards (last %q), want them to pod %s/vc1-0", n, path, ns)
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
	if c, err := net.Dial("tcp", server.Host); err == nil {
		c.Close()
		t.Errorf("the deleted virtual cluster's forward %s still accepts connections", server.Host)
	}

	// The same name again, with the default distro: a new namespace, no
	// kubeconfig until the new control plane writes one.
	spec.VCluster.Distro = ""
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
	if pods, _ := host.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{}); len(pods.Items) != 0 {
		t.Errorf("the recreated virtual cluster sees old pods: %d", len(pods.Items))
	}
	if sts, err := host.AppsV1().StatefulSets(ns).Get(ctx, "vc1", metav1.GetOptions{}); err != nil || sts.Labels["distro"] != clusters.DistroK8s {
		t.Errorf("vcluster without a distro: %v, distro %q, want k8s", err, sts.Labels["distro"])
	}
	h.remove(t, "vc1")
	eventually(t, time.Minute, func() bool { playNamespaceController(t, ns); return h.gone("vc1") }, "vc1 was never finalized the second time")
	h.remove(t, "host")
	eventually(t, time.Minute, func() bool { return h.gone("host") }, "host was never finalized")
	if (object{"deployment", "testruntime-system", "testruntime"}).exists(t) {
		t.Error("the proxy host's component was not uninstalled through its tunnel")
	}
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
// deleted namespace: lets its PVCs go (pvc-protection), deletes its pods
// and service accounts, and finalizes it.
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
	// No kubelet confirms a pod's end: delete them at once.
	if err := core.Pods(ns).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}, metav1.ListOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	if err := core.ServiceAccounts(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
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
