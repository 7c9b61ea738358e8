package components

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/outpost-mesh/outpost/clusters"
)

// TestRegistryDuplicate: a name registered twice is an error at start-up
// (NewInstaller) that names both places.
func TestRegistryDuplicate(t *testing.T) {
	reg := NewRegistry()
	reg.Register(Component{Name: "kubeedge", Condition: ConditionKubeedgeReady, Installer: HelmInstaller{}})
	reg.Register(Component{Name: "kubeedge", Condition: ConditionKubeedgeReady, Installer: HelmInstaller{}})
	reg.Register(Component{Name: "Not_A_Label", Condition: "X", Installer: HelmInstaller{}})
	err := reg.Err()
	if err == nil {
		t.Fatal("no error for a duplicate")
	}
	if got := regexp.MustCompile(`registry_test\.go:\d+`).FindAllString(err.Error(), -1); len(got) != 3 || got[0] == got[1] {
		t.Errorf("error %q does not name both registrations", err)
	}
	if !strings.Contains(err.Error(), `"Not_A_Label"`) {
		t.Errorf("error %q does not name the invalid registration", err)
	}
	cfg := DefaultInstallerConfig()
	cfg.Registry, cfg.Defaults = reg, nil
	cfg.Charts = &OCICharts{}
	if _, err := NewInstaller(cfg); err == nil || !strings.Contains(err.Error(), "registered twice") {
		t.Errorf("NewInstaller with a duplicate: %v", err)
	}
}

// TestDefaultRegistry: the components' own registrations are valid and
// every default is registered.
func TestDefaultRegistry(t *testing.T) {
	reg, err := DefaultRegistry()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"outpost-agent", "outpost-node", "openyurt", "kubeedge", "etcd", "vcluster", "testruntime"} {
		if !slices.Contains(reg.Names(), name) {
			t.Errorf("%s not registered: %v", name, reg.Names())
		}
	}
	for _, d := range Defaults {
		if _, ok := reg.Lookup(d.Name); !ok {
			t.Errorf("default %s is not registered", d.Name)
		}
	}
}

// TestNewRuntimePickedUp: a runtime registered from its own file
// (testruntime_test.go) installs for a Cluster that names it, with no
// other change, and sets its own condition.
func TestNewRuntimePickedUp(t *testing.T) {
	h := startHub(t, nil)
	h.create(t, "rt", direct(t, clusters.Component{Name: "testruntime", Values: []byte(`{"replicas":2}`)}))
	h.wait(t, "rt", "TestruntimeReady", metav1.ConditionTrue, ReasonInstalled, func() { markRolledOut(t, kube.Client, "testruntime-system") })
	d, err := kube.Client.AppsV1().Deployments("testruntime-system").Get(t.Context(), "testruntime", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
		t.Errorf("the Cluster's values were not applied: replicas %v", d.Spec.Replicas)
	}
	// New values upgrade the release; turning it off uninstalls it.
	h.patch(t, "rt", `{"spec":{"components":[{"name":"testruntime","values":{"replicas":3}}]}}`)
	eventually(t, time.Minute, func() bool {
		d, err := kube.Client.AppsV1().Deployments("testruntime-system").Get(t.Context(), "testruntime", metav1.GetOptions{})
		return err == nil && d.Spec.Replicas != nil && *d.Spec.Replicas == 3
	}, "new values were never applied")
	h.wait(t, "rt", "TestruntimeReady", metav1.ConditionTrue, ReasonInstalled, func() { markRolledOut(t, kube.Client, "testruntime-system") })
	h.patch(t, "rt", `{"spec":{"components":[{"name":"testruntime","enabled":false}]}}`)
	h.wait(t, "rt", "TestruntimeReady", metav1.ConditionFalse, ReasonUninstalled)
	if (object{"deployment", "testruntime-system", "testruntime"}).exists(t) {
		t.Error("a component turned off is still installed")
	}
	h.patch(t, "rt", `{"spec":{"components":[{"name":"testruntime"}]}}`)
	h.wait(t, "rt", "TestruntimeReady", metav1.ConditionTrue, ReasonInstalled, func() { markRolledOut(t, kube.Client, "testruntime-system") })
	h.remove(t, "rt")
	eventually(t, time.Minute, func() bool { return h.gone("rt") }, "the Cluster was never finalized")
	if (object{"deployment", "testruntime-system", "testruntime"}).exists(t) {
		t.Error("the runtime's deployment is left after deletion")
	}
}

// recorder is a ComponentInstaller that records the components it
// uninstalls.
type recorder struct{ uninstalled *[]string }

func (recorder) PreInstall(context.Context, *clusters.Target, *Config) (ComponentCondition, error) {
	return ComponentCondition{Status: metav1.ConditionTrue}, nil
}

func (recorder) Install(context.Context, *clusters.Target, *Config) (ComponentCondition, error) {
	return ComponentCondition{Status: metav1.ConditionTrue}, nil
}

func (recorder) PostInstall(context.Context, *clusters.Target, *Config) (ComponentCondition, error) {
	return ComponentCondition{Status: metav1.ConditionTrue}, nil
}

func (r recorder) Uninstall(_ context.Context, _ *clusters.Target, c *Config) error {
	*r.uninstalled = append(*r.uninstalled, c.Component.Name)
	return nil
}

// TestPlanAndDeletionOrder: Defaults is the install order, a line there
// with On installs a component no Cluster names, components a Cluster
// names that Defaults does not list come after, in the spec's order;
// deletion uninstalls in reverse, only what was tried (its condition
// shows).
func TestPlanAndDeletionOrder(t *testing.T) {
	var got []string
	reg := NewRegistry()
	for _, name := range []string{"alpha", "beta", "gamma", "extra"} {
		reg.Register(Component{Name: name, Condition: conditionFor(name), Installer: recorder{&got}})
	}
	cfg := DefaultInstallerConfig()
	cfg.Registry, cfg.Charts = reg, &OCICharts{}
	cfg.HostConfig = func(context.Context, string) (*rest.Config, error) { return nil, errors.New("no hosts here") }
	cfg.Defaults = []Default{{Name: "alpha"}, {Name: "beta", On: true}, {Name: "gamma"}}
	in, err := NewInstaller(cfg)
	if err != nil {
		t.Fatal(err)
	}
	spec := clusters.ClusterSpec{Components: []clusters.Component{{Name: "nosuch"}, {Name: "extra"}, {Name: "alpha"}}}
	var plan []string
	for _, it := range in.plan(&spec) {
		plan = append(plan, fmt.Sprintf("%s:%v", it.name, it.on))
	}
	if want := []string{"alpha:true", "beta:true", "gamma:false", "nosuch:true", "extra:true"}; !slices.Equal(plan, want) {
		t.Errorf("plan %v, want %v", plan, want)
	}
	target := &clusters.Target{Name: "c", Spec: spec, Config: &rest.Config{Host: "https://127.0.0.1:1"}}
	for _, name := range []string{"alpha", "beta", "extra", "nosuch"} {
		target.Status.Conditions = append(target.Status.Conditions, metav1.Condition{Type: conditionFor(name), Status: metav1.ConditionTrue})
	}
	if err := in.Uninstall(t.Context(), target); err != nil {
		t.Fatal(err)
	}
	if want := []string{"extra", "beta", "alpha"}; !slices.Equal(got, want) {
		t.Errorf("uninstalled %v, want %v", got, want)
	}
}
