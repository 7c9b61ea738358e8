package node

import (
	"fmt"
	"net"
	"net/http"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/outpost-mesh/outpost/clusters"
)

// validateClusters checks the cluster controller's settings, naming their
// flags.
func (c Config) validateClusters() []error {
	var errs []error
	if c.ClusterWorkers < 1 || c.ClusterWorkers > 256 {
		errs = append(errs, fmt.Errorf("--cluster-workers %d must be 1-256", c.ClusterWorkers))
	}
	if _, err := clusters.ParsePortRange(c.TunnelPorts); err != nil {
		errs = append(errs, err)
	}
	return errs
}

// newClusters builds a hub member's cluster controller (it acts while the
// member leads) and the API route that hands out clusters' kubeconfigs.
// It runs after newTunnels, whose Hub carries proxy clusters.
func (n *Node) newClusters() error {
	if n.id.Role != RoleHub {
		return nil
	}
	cfg := clusters.DefaultConfig()
	cfg.Store, cfg.IsLeader, cfg.Logger = n.group.Store(), n.group.IsLeader, n.log
	cfg.Workers = n.cfg.ClusterWorkers
	ports, err := clusters.ParsePortRange(n.cfg.TunnelPorts)
	if err != nil {
		return err
	}
	cfg.TunnelPorts = ports
	if n.tunnels != nil {
		cfg.Tunnels = n.tunnels
	}
	if n.cfg.TuneClusters != nil {
		n.cfg.TuneClusters(&cfg)
	}
	if n.clusterCtl, err = clusters.New(cfg); err != nil {
		return err
	}
	n.api.subresources["clusters/kubeconfig"] = n.serveClusterKubeconfig
	return nil
}

// serveClusterKubeconfig answers GET
// /apis/clusters.outpost.dev/v1alpha1/clusters/NAME/kubeconfig with a
// kubeconfig for the cluster, for admins only: it carries the cluster's
// credentials. The API forwards it to the leader, which holds the tunnels.
func (n *Node) serveClusterKubeconfig(w http.ResponseWriter, r *http.Request, name string) {
	if p, _ := PrincipalFrom(r.Context()); p.Role != RoleAdmin {
		writeError(w, apierrors.NewForbidden(clusters.ClusterKind.GroupResource(), name, fmt.Errorf("a cluster's kubeconfig carries its credentials: admins only (you are %s)", p.Role)), n.log)
		return
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(r.Host); err == nil {
		host = h
	}
	kc, err := n.clusterCtl.Kubeconfig(r.Context(), name, host)
	if err != nil {
		writeError(w, err, n.log)
		return
	}
	w.Header().Set("Content-Type", "application/yaml")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(kc)
}
