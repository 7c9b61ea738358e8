package components

import (
	"context"
	"time"

	"helm.sh/helm/v3/pkg/chart"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/outpost-mesh/outpost/clusters"
)

// ComponentInstaller installs one component into a cluster. Each phase
// returns the component's condition after it; an error ends the
// component's install for this round (its condition says why) and is
// retried with backoff. All four are idempotent: the controller calls
// them on every reconcile.
type ComponentInstaller interface {
	// PreInstall checks what Install needs: the cluster answers, the
	// chart loads.
	PreInstall(ctx context.Context, t *clusters.Target, c *Config) (ComponentCondition, error)
	// Install installs or upgrades the component; it does nothing when
	// what runs is what Config asks for.
	Install(ctx context.Context, t *clusters.Target, c *Config) (ComponentCondition, error)
	// PostInstall reports whether the component is up (its workloads
	// rolled out); a pending rollout is a False condition, not an error,
	// until Config.RolloutTimeout has passed since the install.
	PostInstall(ctx context.Context, t *clusters.Target, c *Config) (ComponentCondition, error)
	// Uninstall removes the component; nothing to remove is no error.
	Uninstall(ctx context.Context, t *clusters.Target, c *Config) error
}

// Hub is what the hub tells the charts it installs about itself: what
// the core components need to reach and pin it.
type Hub struct {
	// Addrs are the hub members' QUIC addresses (host:port), the leader
	// first.
	Addrs []string
	// CAFingerprint is the mesh CA's SHA-256 (hex), which agents and
	// joining nodes pin.
	CAFingerprint string
	// Version is the hub's build version: the core components' image
	// tag.
	Version string
}

// ComponentCondition is a component's state after a phase: a condition of
// the Cluster. An empty Type means the component's registered one.
type ComponentCondition struct {
	Type    string
	Status  metav1.ConditionStatus
	Reason  string
	Message string
}

// condition returns c as a Cluster condition.
func (c ComponentCondition) condition() metav1.Condition {
	return metav1.Condition{Type: c.Type, Status: c.Status, Reason: c.Reason, Message: c.Message}
}

// Config is one component of one cluster as its installer gets it: the
// registered defaults with the Cluster's spec.components entry over them.
type Config struct {
	// Component is the registered component.
	Component *Component
	// Release is the Helm release's name; Namespace where it goes.
	Release   string
	Namespace string
	// Chart is the chart's repository in the hub's registry and Version
	// its tag.
	Chart   string
	Version string
	// Values are the chart values: the component's defaults with the
	// Cluster's values merged over them.
	Values map[string]any
	// RolloutTimeout is how long PostInstall waits for the workloads.
	RolloutTimeout time.Duration

	env   *env         // the Installer's charts and clients
	chart *chart.Chart // loaded by PreInstall when Install needs it
	state state        // what this round's phases learned
	parts []*Config    // a HelmInstaller's releases, this one first
}

// Condition types the components set (CoreReady is the clusters
// package's: it gates Ready).
const (
	ConditionOpenyurtReady       = "OpenyurtReady"
	ConditionKubeedgeReady       = "KubeedgeReady"
	ConditionEtcdReady           = "EtcdReady"
	ConditionVirtualClusterReady = "VirtualClusterReady"
)

// Reasons of the components' conditions.
const (
	ReasonInstalling        = "Installing"
	ReasonInstalled         = "Installed"
	ReasonRollingOut        = "RollingOut"
	ReasonRolloutTimeout    = "RolloutTimeout"
	ReasonChartUnavailable  = "ChartUnavailable"
	ReasonInstallFailed     = "InstallFailed"
	ReasonUnreachable       = "Unreachable"
	ReasonUnknownComponent  = "UnknownComponent"
	ReasonUninstalled       = "Uninstalled"
	ReasonHostUnavailable   = "HostUnavailable"
	ReasonWaitingKubeconfig = "WaitingForKubeconfig"
	ReasonKubeconfigTimeout = "KubeconfigTimeout"
	ReasonInvalidKubeconfig = "InvalidKubeconfig"
	ReasonForwardFailed     = "ForwardFailed"
)
