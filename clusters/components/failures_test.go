package components

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/outpost-mesh/outpost/clusters"
)

// TestFailuresAreContained: a missing chart, a chart that fails to
// render, an unknown component name and a chart override without a
// version each give a False condition with a reason, while the Cluster's
// other component installs; an unreachable cluster (AgentAvailable
// Unknown, as the Clusters issue has it), a virtual cluster on it (False
// HostUnavailable) and a virtual cluster whose host does not exist are
// reported and do not hold up the others.
func TestFailuresAreContained(t *testing.T) {
	h := startHub(t, nil)
	h.create(t, "mixed", direct(t,
		clusters.Component{Name: "openyurt", Chart: "charts/missing", Version: "1.0.0"},
		clusters.Component{Name: "kubeedge", Chart: "charts/broken", Version: "1.0.0"},
		clusters.Component{Name: "kubeegde"},
		clusters.Component{Name: "vcluster"},
		clusters.Component{Name: "etcd", Chart: "charts/etcd"},
		clusters.Component{Name: "testruntime"},
	))
	down := direct(t, clusters.Component{Name: "etcd"})
	down.Connection.KubernetesAPIEndpoint = "https://127.0.0.1:1"
	h.create(t, "down", down)
	h.create(t, "vdown", clusters.ClusterSpec{
		Connection: clusters.Connection{Type: clusters.ConnectionDirect},
		VCluster:   &clusters.VCluster{Enabled: true, HostCluster: "down"},
	})
	h.create(t, "orphan", clusters.ClusterSpec{
		Connection: clusters.Connection{Type: clusters.ConnectionDirect},
		VCluster:   &clusters.VCluster{Enabled: true, HostCluster: "nowhere"},
	})

	cases := []struct {
		cluster, typ, reason, text string
	}{
		{"mixed", ConditionOpenyurtReady, ReasonChartUnavailable, "OpenYurt install failed: chart not found: oci://"},
		{"mixed", ConditionKubeedgeReady, ReasonInstallFailed, "broken on purpose"},
		{"mixed", "KubeegdeReady", ReasonUnknownComponent, `no installer is registered as "kubeegde" (registered: `},
		{"mixed", ConditionVirtualClusterReady, ReasonUnknownComponent, "spec.vcluster (hostCluster: mixed)"},
		{"mixed", ConditionEtcdReady, ReasonInstallFailed, "chart charts/etcd needs a version"},
		{"down", clusters.ConditionAgentAvailable, clusters.ReasonUnreachable, "127.0.0.1:1"},
		{"vdown", ConditionVirtualClusterReady, ReasonHostUnavailable, "connection refused"},
		{"orphan", ConditionVirtualClusterReady, ReasonHostUnavailable, "host cluster nowhere"},
		{"orphan", clusters.ConditionInitialized, clusters.ReasonProvisioning, "VirtualClusterReady"},
	}
	for _, tc := range cases {
		status := metav1.ConditionFalse
		if tc.typ == clusters.ConditionAgentAvailable {
			status = metav1.ConditionUnknown
		}
		c := h.wait(t, tc.cluster, tc.typ, status, tc.reason)
		if !strings.Contains(c.Message, tc.text) {
			t.Errorf("%s %s: message %q does not say %q", tc.cluster, tc.typ, c.Message, tc.text)
		}
	}
	h.wait(t, "mixed", "TestruntimeReady", metav1.ConditionTrue, ReasonInstalled, func() { markRolledOut(t, kube.Client, "testruntime-system") })
	if c := h.wait(t, "mixed", clusters.ConditionReady, metav1.ConditionTrue, ""); c.Reason != clusters.ReasonHealthy {
		t.Errorf("runtime failures gate Ready: %+v", c)
	}
	for _, name := range []string{"mixed", "down", "vdown", "orphan"} {
		h.remove(t, name)
	}
	// The unreachable cluster installed nothing, so it has nothing to
	// uninstall (nor does a component whose spec entry is unusable); once
	// it is gone, so is what its virtual cluster could have left; the
	// orphan's host is gone with what it held.
	for _, name := range []string{"mixed", "down", "vdown", "orphan"} {
		eventually(t, time.Minute, func() bool { return h.gone(name) }, name+" was never finalized")
	}
}

// TestRolloutTimeout: PostInstall waits for the workloads; when they do
// not roll out within the timeout the condition says so, and when they
// do it turns True.
func TestRolloutTimeout(t *testing.T) {
	h := startHub(t, func(c *InstallerConfig) { c.RolloutTimeout = 2 * time.Second })
	h.create(t, "slow", direct(t, clusters.Component{Name: "kubeedge"}))
	c := h.wait(t, "slow", ConditionKubeedgeReady, metav1.ConditionFalse, ReasonRolloutTimeout)
	if want := "KubeEdge install failed: not rolled out within 2s: deployment ke-system/cloudcore"; !strings.HasPrefix(c.Message, want) {
		t.Errorf("timeout message %q, want it to start %q", c.Message, want)
	}
	h.wait(t, "slow", ConditionKubeedgeReady, metav1.ConditionTrue, ReasonInstalled, func() { markRolledOut(t, kube.Client, "ke-system") })
	h.remove(t, "slow")
	eventually(t, time.Minute, func() bool { return h.gone("slow") }, "the Cluster was never finalized")
}

// TestUnreachableInstall: a cluster that stops answering between the
// controller's probe and the install: every component is tried, each
// condition False Unreachable with the error, reported as it happens.
func TestUnreachableInstall(t *testing.T) {
	cfg := DefaultInstallerConfig()
	cfg.Charts = &OCICharts{}
	cfg.HostConfig = func(context.Context, string) (*rest.Config, error) { return nil, errors.New("no hosts here") }
	in, err := NewInstaller(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var reported []string
	target := &clusters.Target{
		Name:   "gone",
		Spec:   clusters.ClusterSpec{Components: []clusters.Component{{Name: "etcd"}, {Name: "kubeedge"}}},
		Config: &rest.Config{Host: "https://127.0.0.1:1", TLSClientConfig: rest.TLSClientConfig{Insecure: true}},
		Report: func(c metav1.Condition) { reported = append(reported, c.Type+" "+c.Reason) },
	}
	conds, err := in.Install(t.Context(), target)
	if !errors.Is(err, ErrNotReady) {
		t.Errorf("Install: %v, want ErrNotReady", err)
	}
	for _, typ := range []string{ConditionEtcdReady, ConditionKubeedgeReady} {
		c := meta.FindStatusCondition(conds, typ)
		if c == nil || c.Status != metav1.ConditionFalse || c.Reason != ReasonUnreachable || !strings.Contains(c.Message, "connection refused") {
			t.Errorf("%s: %+v, want False Unreachable saying connection refused", typ, c)
		}
		if !slices.Contains(reported, typ+" "+ReasonUnreachable) {
			t.Errorf("%s Unreachable was not reported as it happened: %v", typ, reported)
		}
	}
}
