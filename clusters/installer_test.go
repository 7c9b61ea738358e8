package clusters

import (
	"context"
	"sync"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/outpost-mesh/outpost/internal/kubetest"
)

// coreInstaller reports CoreReady as the test sets it, and a runtime
// condition that does not gate Ready.
type coreInstaller struct {
	mu    sync.Mutex
	core  metav1.ConditionStatus
	calls int
	sawOK bool // every call had a working rest.Config
}

func (c *coreInstaller) set(s metav1.ConditionStatus) {
	c.mu.Lock()
	c.core = s
	c.mu.Unlock()
}

func (c *coreInstaller) Install(ctx context.Context, t *Target) ([]metav1.Condition, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	c.sawOK = t.Config != nil && t.Status.UID != "" && t.Spec.Connection.Type == ConnectionDirect
	return []metav1.Condition{
		{Type: ConditionCoreReady, Status: c.core, Reason: "OutpostAgentInstalling", Message: "PostInstall: waiting for rollout"},
		{Type: "OpenyurtReady", Status: metav1.ConditionFalse, Reason: "InstallFailed", Message: "chart not found"},
	}, nil
}

func (c *coreInstaller) Uninstall(context.Context, *Target) error { return nil }

// TestInstallerGatesReady: the Installer's CoreReady gates Ready, its
// other conditions are set without gating it, and it is handed the
// connection and what the probe saw.
func TestInstallerGatesReady(t *testing.T) {
	store := newStore(t)
	cfg := testConfig(store)
	inst := &coreInstaller{core: metav1.ConditionFalse}
	cfg.Installer = inst
	runController(t, cfg)
	createCluster(t, store, "core", direct(kubeconfig(t, kubetest.AdminToken)))
	st := waitCondition(t, store, "core", ConditionReady, metav1.ConditionFalse, ReasonCoreNotReady)
	if c := meta.FindStatusCondition(st.Conditions, "OpenyurtReady"); c == nil || c.Reason != "InstallFailed" {
		t.Errorf("runtime condition not set: %+v", st.Conditions)
	}
	inst.set(metav1.ConditionTrue)
	waitCondition(t, store, "core", ConditionReady, metav1.ConditionTrue, ReasonHealthy)
	inst.mu.Lock()
	defer inst.mu.Unlock()
	if !inst.sawOK {
		t.Errorf("Install was not given the connection, spec and probed status")
	}
}

// TestDisabledCluster: spec.enable false keeps the hub off the cluster.
func TestDisabledCluster(t *testing.T) {
	store := newStore(t)
	runController(t, testConfig(store))
	off := false
	spec := direct(kubeconfig(t, kubetest.AdminToken))
	spec.Enable = &off
	createCluster(t, store, "off", spec)
	st := waitCondition(t, store, "off", ConditionReady, metav1.ConditionFalse, ReasonDisabled)
	if st.UID != "" || st.KubernetesVersion != "" {
		t.Errorf("a disabled cluster was probed: %+v", st)
	}
}
