package components

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/outpost-mesh/outpost/clusters"
	"github.com/outpost-mesh/outpost/consensus"
)

// object is a Kubernetes object a component's chart makes.
type object struct{ kind, ns, name string }

// exists reports whether o is in the shared API server.
func (o object) exists(t *testing.T) bool {
	t.Helper()
	ctx := context.Background()
	apps := kube.Client.AppsV1()
	var err error
	switch o.kind {
	case "deployment":
		_, err = apps.Deployments(o.ns).Get(ctx, o.name, metav1.GetOptions{})
	case "daemonset":
		_, err = apps.DaemonSets(o.ns).Get(ctx, o.name, metav1.GetOptions{})
	case "statefulset":
		_, err = apps.StatefulSets(o.ns).Get(ctx, o.name, metav1.GetOptions{})
	case "configmap":
		_, err = kube.Client.CoreV1().ConfigMaps(o.ns).Get(ctx, o.name, metav1.GetOptions{})
	case "yurtstaticset":
		// OpenYurt's custom resource, from the CRD yurt-manager's chart
		// installs.
		dyn, derr := dynamic.NewForConfig(kube.Config)
		if derr != nil {
			t.Fatal(derr)
		}
		_, err = dyn.Resource(schema.GroupVersionResource{Group: "apps.openyurt.io", Version: "v1alpha1", Resource: "yurtstaticsets"}).Namespace(o.ns).Get(ctx, o.name, metav1.GetOptions{})
	case "release":
		// Helm's record of the release: a Secret per revision.
		s, lerr := kube.Client.CoreV1().Secrets(o.ns).List(ctx, metav1.ListOptions{LabelSelector: "owner=helm,name=" + o.name})
		if lerr != nil {
			t.Fatal(lerr)
		}
		return len(s.Items) > 0
	}
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	return err == nil
}

// TestComponentsInstallAndUninstall: every default component installs
// from the hub's registry into a real API server (OpenYurt as two
// releases, yurt-manager with OpenYurt's CRD, then yurthub), its conditions moving
// PreInstall → Install → PostInstall, and is True once the test marks its
// workloads rolled out; CoreReady (outpost-agent and outpost-node) gates
// Ready. Deleting the Cluster uninstalls them: their objects and Helm
// records are gone, then the Cluster.
func TestComponentsInstallAndUninstall(t *testing.T) {
	h := startHub(t, nil)
	store := h.store
	list, err := store.List(t.Context(), &clusters.ClusterKind, "", nil, consensus.ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w, err := store.Watch(t.Context(), &clusters.ClusterKind, "", nil, list.ResourceVersion)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	h.create(t, "edge", direct(t,
		clusters.Component{Name: "outpost-agent"}, clusters.Component{Name: "outpost-node"},
		clusters.Component{Name: "etcd"}, clusters.Component{Name: "kubeedge"},
		clusters.Component{Name: "openyurt", Values: []byte(`{"replicas":2,"yurthub":{"cacheAgents":"outpost"}}`)}))
	objects := []object{
		{"deployment", "outpost-system", "outpost-agent"},
		{"daemonset", "outpost-system", "outpost-node"}, {"statefulset", "etcd-system", "etcd"},
		{"deployment", "kube-system", "yurt-manager"}, {"configmap", "kube-system", "yurt-hub-cfg"}, {"yurtstaticset", "kube-system", "yurt-hub"},
		{"deployment", "ke-system", "cloudcore"},
		{"release", "outpost-system", "outpost-agent"}, {"release", "outpost-system", "outpost-node"}, {"release", "etcd-system", "etcd"},
		{"release", "kube-system", "openyurt"}, {"release", "kube-system", "openyurt-yurthub"}, {"release", "ke-system", "kubeedge"},
	}
	// Without kubelets nothing rolls out: Ready waits for CoreReady.
	c := h.wait(t, "edge", clusters.ConditionCoreReady, metav1.ConditionFalse, ReasonRollingOut)
	if !strings.Contains(c.Message, "PostInstall") {
		t.Errorf("CoreReady while rolling out: %q", c.Message)
	}
	h.wait(t, "edge", clusters.ConditionReady, metav1.ConditionFalse, clusters.ReasonCoreNotReady)
	mark := func() {
		for _, ns := range []string{"outpost-system", "etcd-system", "kube-system", "ke-system"} {
			markRolledOut(t, kube.Client, ns)
		}
	}
	for _, typ := range []string{clusters.ConditionCoreReady, ConditionEtcdReady, ConditionOpenyurtReady, ConditionKubeedgeReady} {
		h.wait(t, "edge", typ, metav1.ConditionTrue, ReasonInstalled, mark)
	}
	h.wait(t, "edge", clusters.ConditionReady, metav1.ConditionTrue, clusters.ReasonHealthy)
	for _, o := range objects {
		if !o.exists(t) {
			t.Errorf("%s %s/%s not installed", o.kind, o.ns, o.name)
		}
	}
	// The core charts are the project's own, told by the hub which
	// Cluster they serve and how to reach and pin the hub.
	agent, err := kube.Client.AppsV1().Deployments("outpost-system").Get(t.Context(), "outpost-agent", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	args := strings.Join(agent.Spec.Template.Spec.Containers[0].Args, " ")
	if want := "agent --cluster edge --hub 127.0.0.1:7443,127.0.0.2:7443 --in-cluster --ca-fingerprint " + testHub.CAFingerprint; !strings.HasPrefix(args, want) {
		t.Errorf("outpost-agent runs %q, want %q...", args, want)
	}
	nodes, err := kube.Client.AppsV1().DaemonSets("outpost-system").Get(t.Context(), "outpost-node", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c0 := nodes.Spec.Template.Spec.Containers[0]
	if args := strings.Join(c0.Args, " "); !strings.Contains(args, "--join 127.0.0.1:7443 ") || !strings.Contains(args, "outpost.dev/cluster=edge") ||
		c0.Image != "ghcr.io/outpost-mesh/outpost:"+testHub.Version || !nodes.Spec.Template.Spec.HostNetwork {
		t.Errorf("outpost-node runs %s %q (host network %v)", c0.Image, args, nodes.Spec.Template.Spec.HostNetwork)
	}
	// OpenYurt's values: its own to yurt-manager, those under "yurthub"
	// to yurthub's release.
	if d, err := kube.Client.AppsV1().Deployments("kube-system").Get(t.Context(), "yurt-manager", metav1.GetOptions{}); err != nil || d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
		t.Errorf("yurt-manager did not get the spec's values: %v", err)
	}
	if cm, err := kube.Client.CoreV1().ConfigMaps("kube-system").Get(t.Context(), "yurt-hub-cfg", metav1.GetOptions{}); err != nil || cm.Data["cache_agents"] != "outpost" {
		t.Errorf("yurthub did not get the spec's yurthub values: %v %v", err, cm)
	}
	if msg := h.status(t, "edge"); !strings.Contains(condMessage(msg, clusters.ConditionCoreReady), "Outpost agent") || !strings.Contains(condMessage(msg, clusters.ConditionCoreReady), "Outpost node") {
		t.Errorf("CoreReady does not speak for both core components: %q", condMessage(msg, clusters.ConditionCoreReady))
	}

	// What the watch saw of OpenyurtReady, in order.
	var seen []string
	for {
		ev, err := w.Next(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		var st clusters.ClusterStatus
		_ = ev.Object.DecodeStatus(&st)
		if m := condMessage(st, ConditionOpenyurtReady); m != "" && (len(seen) == 0 || seen[len(seen)-1] != m) {
			seen = append(seen, m)
		}
		if len(seen) > 0 && strings.Contains(seen[len(seen)-1], "installed (release") {
			break
		}
	}
	phases := []string{"OpenYurt installing: PreInstall", "OpenYurt installing: Install", "OpenYurt installing: PostInstall", "OpenYurt 1.6.1 installed"}
	at := 0
	for _, m := range seen {
		if at < len(phases) && strings.HasPrefix(m, phases[at]) {
			at++
		}
	}
	if at != len(phases) {
		t.Errorf("OpenyurtReady went %q, want the phases %q in order", seen, phases)
	}

	h.remove(t, "edge")
	eventually(t, time.Minute, func() bool { return h.gone("edge") }, "the Cluster was never finalized")
	for _, o := range objects {
		if o.exists(t) {
			t.Errorf("%s %s/%s left after the Cluster's deletion", o.kind, o.ns, o.name)
		}
	}
}

// condMessage is the message of the condition typ, or "".
func condMessage(st clusters.ClusterStatus, typ string) string {
	i := slices.IndexFunc(st.Conditions, func(c metav1.Condition) bool { return c.Type == typ })
	if i < 0 {
		return ""
	}
	return st.Conditions[i].Message
}
