package node

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/rest"

	"github.com/outpost-mesh/outpost/clusters"
	"github.com/outpost-mesh/outpost/clusters/components"
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
	if c.ClusterGrace <= 0 {
		errs = append(errs, fmt.Errorf("--cluster-grace %s must be positive", c.ClusterGrace))
	}
	if c.ClusterResync <= 0 {
		errs = append(errs, fmt.Errorf("--cluster-resync %s must be positive", c.ClusterResync))
	}
	return append(errs, c.validateEdgeCluster()...)
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
	cfg.Workers, cfg.GracePeriod, cfg.Resync = n.cfg.ClusterWorkers, n.cfg.ClusterGrace, n.cfg.ClusterResync
	ports, err := clusters.ParsePortRange(n.cfg.TunnelPorts)
	if err != nil {
		return err
	}
	cfg.TunnelPorts = ports
	if n.tunnels != nil {
		cfg.Tunnels = n.tunnels
	}
	inst, err := n.newComponentInstaller()
	if err != nil {
		return err
	}
	if inst != nil {
		cfg.Installer, n.components = inst, inst
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

// chartsHost names the hub's own registry in the chart references the
// installer resolves; its requests never leave the process.
const chartsHost = "hub.outpost.internal"

// newComponentInstaller builds the installer of clusters' components
// (clusters/components): charts from the hub's own registry, read in
// process through the registry's OCI API with Helm's registry client;
// virtual clusters' hosts reached as the controller reaches them (Run
// serves the virtual clusters' forwards). A component registered twice
// fails the start, naming both places.
func (n *Node) newComponentInstaller() (*components.Installer, error) {
	if n.images == nil || n.images.tierAPI == nil {
		return nil, nil
	}
	charts, err := components.NewOCICharts(components.OCIChartsConfig{
		Host: chartsHost, PlainHTTP: true, Transport: handlerTransport{n.images.tierAPI},
	})
	if err != nil {
		return nil, err
	}
	cfg := components.DefaultInstallerConfig()
	cfg.Charts, cfg.Logger = charts, n.log
	cfg.Hub = func() components.Hub {
		return components.Hub{Addrs: n.hubAddrs(), CAFingerprint: n.ca.Fingerprint(), Version: BuildVersion()}
	}
	cfg.HostConfig = func(ctx context.Context, name string) (*rest.Config, error) {
		return n.clusterCtl.RESTConfig(ctx, name)
	}
	return components.NewInstaller(cfg)
}

// handlerTransport serves HTTP requests with a handler in process.
type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	if r.Body == nil {
		r.Body = http.NoBody
	}
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, r)
	return rec.Result(), nil
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
	if r.Header.Get(forwardedByHeader) != "" {
		// The client asked a follower, whose address it names; the
		// tunnel ports are bound here, on the leader.
		host, _, _ = net.SplitHostPort(n.ep.AdvertiseAddr())
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
