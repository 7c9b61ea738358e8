package clusters

import (
	"context"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
)

// Target is a cluster as the controller hands it to the Installer.
type Target struct {
	// Name and UID are the Cluster object's.
	Name string
	UID  types.UID
	// Spec is the Cluster's spec with its secrets open.
	Spec ClusterSpec
	// Status is what this reconcile observed so far; read-only.
	Status ClusterStatus
	// Config reaches the cluster's API server, directly or through the
	// tunnel. Nil when the controller could not connect (on deletion of an
	// unreachable cluster).
	Config *rest.Config
	// Report, when set, stores a condition at once, before Install
	// returns, so an operator sees progress ("OpenYurt installing"). Call
	// it only from the goroutine that called Install.
	Report func(metav1.Condition)
}

// Installer is where component installers plug into the controller: the
// controller calls it on every reconcile of a cluster that is initialized,
// reachable and not a duplicate, and on deletion. One call per cluster at a
// time; calls for different clusters run concurrently.
type Installer interface {
	// Install brings the cluster's components to what Spec asks for and
	// returns the conditions to set: CoreReady when core components are
	// requested (Ready then waits for it to be True), and the runtime ones
	// (OpenyurtReady, VirtualClusterReady, ...). It must be idempotent and
	// cheap when nothing changed. An error requeues the cluster with
	// backoff; the conditions returned with it are set all the same.
	Install(ctx context.Context, t *Target) ([]metav1.Condition, error)
	// Uninstall removes what Install made, during deletion and before the
	// tunnel is released. An error keeps the finalizer, is shown in the
	// Ready condition and is retried with backoff.
	Uninstall(ctx context.Context, t *Target) error
}

// Provisioner is implemented by an Installer that makes clusters itself:
// virtual clusters (spec.vcluster), whose connection the hub fills. The
// controller calls Provision on every reconcile of an enabled, not
// deleting Cluster whose spec is Provisioned, before it connects; Target
// has no Config then.
type Provisioner interface {
	// Provision brings the cluster up and returns the kubeconfig the hub
	// reaches it with (nil: not yet; the conditions say why) and the
	// conditions to set. The controller stores a kubeconfig that differs
	// from spec.connection.kubeconfig (sealed) and connects with it. An
	// error requeues the cluster with backoff.
	Provision(ctx context.Context, t *Target) (kubeconfig []byte, conds []metav1.Condition, err error)
}
