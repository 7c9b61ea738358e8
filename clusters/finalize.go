package clusters

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/outpost-mesh/outpost/consensus"
)

// finalize cleans up after a Cluster being deleted, then removes the
// finalizer so the object goes. The order: the installers' cleanup first,
// because it needs the connection (through the tunnel, for a proxy
// cluster, whose agent stays accepted until then); then the cluster token
// is revoked (its hash erased from the spec: the agent is refused from
// then on); then the tunnel's ports are released (the agent is dropped);
// then the finalizer goes. A failed step keeps the finalizer and is
// retried with backoff; the steps done before it are idempotent.
func (c *Controller) finalize(ctx context.Context, obj *consensus.Object) error {
	if !slices.Contains(obj.Finalizers, Finalizer) {
		c.forget(obj.Name)
		return nil
	}
	if c.cfg.Installer != nil {
		if err := c.uninstall(ctx, obj); err != nil {
			var st ClusterStatus
			_ = obj.DecodeStatus(&st)
			meta.SetStatusCondition(&st.Conditions, metav1.Condition{
				Type: ConditionReady, Status: metav1.ConditionFalse, Reason: ReasonCleanupFailed,
				Message: "deleting: " + err.Error(), ObservedGeneration: obj.Generation,
			})
			if werr := c.writeStatus(ctx, obj, &st); werr != nil {
				c.log.Debug("write cleanup condition", "cluster", obj.Name, "err", werr)
			}
			return fmt.Errorf("uninstall components of %s: %w", obj.Name, err)
		}
	}
	obj, err := c.revokeToken(ctx, obj)
	if err != nil {
		return fmt.Errorf("revoke the cluster token of %s: %w", obj.Name, err)
	}
	if c.cfg.Tunnels != nil {
		if err := c.cfg.Tunnels.Release(ctx, obj.Name); err != nil {
			return fmt.Errorf("release tunnel of %s: %w", obj.Name, err)
		}
	}
	next := obj.DeepCopy()
	next.Finalizers = slices.DeleteFunc(next.Finalizers, func(f string) bool { return f == Finalizer })
	if _, err := c.cfg.Store.Update(ctx, &ClusterKind, next); err != nil {
		return fmt.Errorf("remove finalizer of %s: %w", obj.Name, err)
	}
	c.forget(obj.Name)
	c.log.Info("cluster deleted", "cluster", obj.Name)
	return nil
}

// revokeToken erases a deleting Cluster's token hash from its spec, so
// that VerifyToken refuses its agent from now on, and returns the stored
// object. A Cluster without a token hash is returned as it is. The other
// secrets stay sealed as they are.
func (c *Controller) revokeToken(ctx context.Context, obj *consensus.Object) (*consensus.Object, error) {
	var spec map[string]any
	if err := json.Unmarshal(obj.Spec, &spec); err != nil {
		return obj, err
	}
	conn, _ := spec["connection"].(map[string]any)
	if h, _ := conn["tokenHash"].(string); h == "" {
		return obj, nil
	}
	// An empty secret clears the stored one; a missing one would keep it.
	conn["tokenHash"] = ""
	raw, err := json.Marshal(spec)
	if err != nil {
		return obj, err
	}
	next := obj.DeepCopy()
	next.Spec = raw
	out, err := c.cfg.Store.Update(ctx, &ClusterKind, next)
	if err != nil {
		return obj, err
	}
	c.log.Info("cluster token revoked", "cluster", obj.Name)
	return out, nil
}

// uninstall hands the installer the cluster with whatever connection can
// still be made.
func (c *Controller) uninstall(ctx context.Context, obj *consensus.Object) error {
	open, err := c.cfg.Store.Unseal(&ClusterKind, obj)
	if err != nil {
		return err
	}
	t := &Target{Name: obj.Name, UID: obj.UID}
	if err := open.DecodeSpec(&t.Spec); err != nil {
		return err
	}
	_ = obj.DecodeStatus(&t.Status)
	t.Config = c.cleanupConfig(ctx, obj.Name, &t.Spec, &t.Status)
	return c.cfg.Installer.Uninstall(ctx, t)
}

// cleanupConfig is the connection a deleting cluster can still be reached
// by, or nil.
func (c *Controller) cleanupConfig(ctx context.Context, name string, spec *ClusterSpec, st *ClusterStatus) *rest.Config {
	switch spec.Connection.Type {
	case ConnectionDirect:
		cfg, err := restConfigFromKubeconfig(spec.Connection.Kubeconfig, spec.Connection.KubernetesAPIEndpoint)
		if err == nil {
			return cfg
		}
	case ConnectionProxy:
		if c.cfg.Tunnels == nil || st.Connection == nil {
			return nil
		}
		ts, err := c.cfg.Tunnels.Ensure(ctx, name, Binding{Ports: *st.Connection, External: spec.ExternalKubeAPIEnabled})
		if err == nil && ts.Connected {
			return tunnelConfig(ts)
		}
	}
	return nil
}
