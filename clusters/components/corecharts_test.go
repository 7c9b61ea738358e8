package components

import (
	"context"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"

	"github.com/outpost-mesh/outpost/clusters"
)

// TestCoreChartsRender: the built-in core charts render with what the
// hub tells them, and without it refuse, naming the missing value.
func TestCoreChartsRender(t *testing.T) {
	for _, tc := range []struct {
		chart, want string
		hub         Hub
	}{
		{"outpost-agent", "--ca-fingerprint", testHub},
		{"outpost-node", "--join", testHub},
		{"outpost-agent", "hub.addrs is required", Hub{}},
		{"outpost-agent", "hub.caFingerprint is required", Hub{Addrs: []string{"h:1"}}},
		{"outpost-node", "hub.addrs is required", Hub{}},
	} {
		t.Run(tc.chart+"/"+tc.want, func(t *testing.T) {
			ch, err := loadCoreChart(tc.chart)
			if err != nil {
				t.Fatal(err)
			}
			if ch.Metadata.Version != CoreChartsVersion {
				t.Errorf("%s is version %s, the components default to %s", tc.chart, ch.Metadata.Version, CoreChartsVersion)
			}
			vals, err := mergeValues(coreValues(&clusters.Target{Name: "edge"}, tc.hub), nil)
			if err != nil {
				t.Fatal(err)
			}
			rv, err := chartutil.ToRenderValues(ch, vals, chartutil.ReleaseOptions{Name: tc.chart, Namespace: "outpost-system"}, nil)
			if err != nil {
				t.Fatal(err)
			}
			out, err := engine.Render(ch, rv)
			var got string
			for _, s := range out {
				got += s
			}
			if err != nil {
				got = err.Error()
			}
			if !strings.Contains(got, tc.want) {
				t.Errorf("rendered %s: %q does not say %q", tc.chart, got, tc.want)
			}
		})
	}
}

// TestAgentAdoptsManifest: a proxy cluster's agent applied from `outpost
// cluster agent-manifest` (its objects marked for the release
// outpost-agent, as the command writes them) is adopted by the
// outpost-agent component, not refused as someone else's: the same
// Deployment, now running the chart's spec (outpost-node, off, does not
// hold CoreReady back); turned off, it is uninstalled and CoreReady no
// longer holds Ready back; on again, it is gone with the Cluster.
func TestAgentAdoptsManifest(t *testing.T) {
	h := startHub(t, nil)
	ctx := context.Background()
	const ns = "outpost-system"
	labels := map[string]string{"app.kubernetes.io/name": "outpost-agent", "outpost.dev/cluster": "far"}
	owned := func(name string) metav1.ObjectMeta {
		l := map[string]string{"app.kubernetes.io/managed-by": "Helm"}
		for k, v := range labels {
			l[k] = v
		}
		return metav1.ObjectMeta{Name: name, Namespace: ns, Labels: l,
			Annotations: map[string]string{"meta.helm.sh/release-name": "outpost-agent", "meta.helm.sh/release-namespace": ns}}
	}
	core := kube.Client.CoreV1()
	if _, err := core.Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	if _, err := core.Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "outpost-agent-token"}, StringData: map[string]string{"token": "oct_x"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = core.Secrets(ns).Delete(ctx, "outpost-agent-token", metav1.DeleteOptions{}) }()
	if _, err := core.ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: owned("outpost-agent")}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	crbMeta := owned("outpost-agent")
	crbMeta.Namespace = ""
	crb := &rbacv1.ClusterRoleBinding{ObjectMeta: crbMeta,
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "cluster-admin"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "outpost-agent", Namespace: ns}}}
	if _, err := kube.Client.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	one := int32(1)
	dep := &appsv1.Deployment{ObjectMeta: owned("outpost-agent"), Spec: appsv1.DeploymentSpec{
		Replicas: &one, Selector: &metav1.LabelSelector{MatchLabels: labels},
		Strategy: appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{
			ServiceAccountName: "outpost-agent",
			Containers:         []corev1.Container{{Name: "agent", Image: "ghcr.io/outpost-mesh/outpost:old", Args: []string{"agent", "--cluster", "far", "--hub", "hub.example:7443"}}},
		}},
	}}
	applied, err := kube.Client.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	h.create(t, "far", direct(t, clusters.Component{Name: "outpost-agent"}))
	h.wait(t, "far", clusters.ConditionCoreReady, metav1.ConditionTrue, ReasonInstalled, func() { markRolledOut(t, kube.Client, ns) })
	got, err := kube.Client.AppsV1().Deployments(ns).Get(ctx, "outpost-agent", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.UID != applied.UID {
		t.Error("the agent's Deployment was replaced, not adopted")
	}
	if img := got.Spec.Template.Spec.Containers[0].Image; img != "ghcr.io/outpost-mesh/outpost:"+testHub.Version {
		t.Errorf("adopted agent runs %s, want the hub's version", img)
	}
	// No core component asked for any more: uninstalled, and CoreReady
	// no longer holds Ready back.
	h.patch(t, "far", `{"spec":{"components":[]}}`)
	h.wait(t, "far", clusters.ConditionCoreReady, metav1.ConditionTrue, ReasonUninstalled)
	h.wait(t, "far", clusters.ConditionReady, metav1.ConditionTrue, clusters.ReasonHealthy)
	for _, o := range []object{{"deployment", ns, "outpost-agent"}, {"release", ns, "outpost-agent"}} {
		if o.exists(t) {
			t.Errorf("%s %s/%s left after the component was turned off", o.kind, o.ns, o.name)
		}
	}
	h.patch(t, "far", `{"spec":{"components":[{"name":"outpost-agent"}]}}`)
	h.wait(t, "far", clusters.ConditionCoreReady, metav1.ConditionTrue, ReasonInstalled, func() { markRolledOut(t, kube.Client, ns) })
	h.remove(t, "far")
	eventually(t, time.Minute, func() bool { return h.gone("far") }, "far was never finalized")
	for _, o := range []object{{"deployment", ns, "outpost-agent"}, {"release", ns, "outpost-agent"}} {
		if o.exists(t) {
			t.Errorf("%s %s/%s left after deletion", o.kind, o.ns, o.name)
		}
	}
	if _, err := kube.Client.RbacV1().ClusterRoleBindings().Get(ctx, "outpost-agent", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the agent's ClusterRoleBinding is left after deletion: %v", err)
	}
}
