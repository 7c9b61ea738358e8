package components

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/outpost-mesh/outpost/clusters"
)

// TestVClusterDistros: distro k0s installs the last vcluster chart that
// has it (0.25.2; the 0.28.0 chart's schema refuses k0s, as the real
// one's does, which a Cluster that asks for that chart is told), in the
// spec's host namespace, with the spec's values merged over the hub's
// distro values, and says when its kubeconfig secret is not written in
// time.
func TestVClusterDistros(t *testing.T) {
	// Long enough that the waiting state is seen on a loaded host (at 2 s
	// a slow first status write could skip past it), short enough to
	// reach the timeout in the test.
	h := startHub(t, func(c *InstallerConfig) { c.RolloutTimeout = 10 * time.Second })
	h.create(t, "dhost", direct(t))
	h.wait(t, "dhost", clusters.ConditionReady, metav1.ConditionTrue, "")
	h.create(t, "vck0s", clusters.ClusterSpec{
		Connection: clusters.Connection{Type: clusters.ConnectionDirect},
		VCluster: &clusters.VCluster{Enabled: true, HostCluster: "dhost", Distro: clusters.DistroK0s, Namespace: "k0s-vc",
			Values: []byte(`{"controlPlane":{"statefulSet":{"highAvailability":{"replicas":3}}}}`)},
	})
	h.create(t, "vcbad", clusters.ClusterSpec{
		Connection: clusters.Connection{Type: clusters.ConnectionDirect},
		VCluster:   &clusters.VCluster{Enabled: true, HostCluster: "dhost", Distro: clusters.DistroK0s, Chart: "charts/vcluster", Version: "0.28.0"},
	})

	h.wait(t, "vck0s", ConditionVirtualClusterReady, metav1.ConditionFalse, ReasonWaitingKubeconfig)
	sts, err := kube.Client.AppsV1().StatefulSets("k0s-vc").Get(t.Context(), "vck0s", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("vcluster not installed in the spec's namespace: %v", err)
	}
	if got := sts.Labels["distro"]; got != clusters.DistroK0s {
		t.Errorf("distro %q, want k0s", got)
	}
	if img := sts.Spec.Template.Spec.Containers[0].Image; !strings.HasSuffix(img, ":0.25.2") {
		t.Errorf("k0s vcluster runs %s, want the 0.25.2 chart's", img)
	}
	if sts.Spec.Replicas == nil || *sts.Spec.Replicas != 3 {
		t.Errorf("spec.vcluster.values not applied: replicas %v", sts.Spec.Replicas)
	}
	ns, err := kube.Client.CoreV1().Namespaces().Get(t.Context(), "k0s-vc", metav1.GetOptions{})
	if err != nil || ns.Labels[labelVCluster] != "vck0s" {
		t.Errorf("host namespace k0s-vc not marked as the hub's: %v %v", err, ns.Labels)
	}
	// No virtual control plane writes vc-vck0s here: past the timeout
	// the condition says so.
	c := h.wait(t, "vck0s", ConditionVirtualClusterReady, metav1.ConditionFalse, ReasonKubeconfigTimeout)
	if want := "secret k0s-vc/vc-vck0s not written within 10s"; !strings.Contains(c.Message, want) {
		t.Errorf("kubeconfig timeout: %q does not say %q", c.Message, want)
	}
	c = h.wait(t, "vcbad", ConditionVirtualClusterReady, metav1.ConditionFalse, ReasonInstallFailed)
	if !strings.Contains(c.Message, "k0s") || !strings.Contains(c.Message, "schema") {
		t.Errorf("k0s with the 0.28.0 chart: %q does not say why", c.Message)
	}

	for _, name := range []string{"vck0s", "vcbad"} {
		h.remove(t, name)
	}
	eventually(t, time.Minute, func() bool {
		playNamespaceController(t, "k0s-vc")
		playNamespaceController(t, "vcluster-vcbad")
		return h.gone("vck0s") && h.gone("vcbad")
	}, "the virtual clusters were never finalized")
	h.remove(t, "dhost")
	eventually(t, time.Minute, func() bool { return h.gone("dhost") }, "dhost was never finalized")
}
