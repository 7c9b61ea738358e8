package clusters

import (
	"context"
	"fmt"
	"net"
	"strconv"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/outpost-mesh/outpost/consensus"
)

// Kubeconfig returns a kubeconfig for an operator to reach the cluster
// with kubectl: for a direct cluster the stored one, for a proxy cluster
// one that points at its tunnel port on host (the hub's address as the
// operator reached it; 127.0.0.1 unless the cluster binds its port
// externally) with the edge API server's CA, tls-server-name and the
// agent's credentials. Errors are API statuses. Only the hub leader,
// which holds the tunnels, answers for proxy clusters.
func (c *Controller) Kubeconfig(ctx context.Context, name, host string) ([]byte, error) {
	obj, err := c.cfg.Store.Get(ctx, &ClusterKind, "", name, consensus.ReadOptions{})
	if err != nil {
		return nil, err
	}
	open, err := c.cfg.Store.Unseal(&ClusterKind, obj)
	if err != nil {
		return nil, apierrors.NewInternalError(err)
	}
	var spec ClusterSpec
	var st ClusterStatus
	if err := open.DecodeSpec(&spec); err != nil {
		return nil, apierrors.NewInternalError(err)
	}
	_ = obj.DecodeStatus(&st)
	if spec.Connection.Type == ConnectionDirect {
		return spec.Connection.Kubeconfig, nil
	}
	c.mu.Lock()
	ts, ok := c.tunnels[name]
	c.mu.Unlock()
	if !ok || !ts.Connected || st.Connection == nil {
		return nil, apierrors.NewServiceUnavailable(fmt.Sprintf("cluster %s: its agent is not connected to this hub leader yet; see `outpost describe cluster %s`", name, name))
	}
	if !spec.ExternalKubeAPIEnabled || host == "" {
		host = "127.0.0.1"
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[name] = &clientcmdapi.Cluster{
		Server:                   "https://" + net.JoinHostPort(host, strconv.Itoa(st.Connection.KubernetesAPI)),
		CertificateAuthorityData: ts.ServerCA,
		TLSServerName:            ts.ServerName,
	}
	cfg.AuthInfos[name] = &clientcmdapi.AuthInfo{Token: ts.BearerToken, ClientCertificateData: ts.ClientCert, ClientKeyData: ts.ClientKey}
	cfg.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: name}
	cfg.CurrentContext = name
	out, err := clientcmd.Write(*cfg)
	if err != nil {
		return nil, apierrors.NewInternalError(err)
	}
	return out, nil
}

// RESTConfig returns how the hub reaches Cluster name now: the
// kubeconfig of a direct cluster, the tunnel of a connected proxy
// cluster. Installers use it for a virtual cluster's host. Only the hub
// leader, which holds the tunnels, reaches proxy clusters.
func (c *Controller) RESTConfig(ctx context.Context, name string) (*rest.Config, error) {
	obj, err := c.cfg.Store.Get(ctx, &ClusterKind, "", name, consensus.ReadOptions{Stale: true})
	if err != nil {
		return nil, err
	}
	open, err := c.cfg.Store.Unseal(&ClusterKind, obj)
	if err != nil {
		return nil, err
	}
	var spec ClusterSpec
	if err := open.DecodeSpec(&spec); err != nil {
		return nil, err
	}
	if !spec.Enabled() {
		return nil, fmt.Errorf("cluster %s is disabled (spec.enable false)", name)
	}
	if spec.Connection.Type == ConnectionDirect {
		if len(spec.Connection.Kubeconfig) == 0 {
			return nil, fmt.Errorf("cluster %s has no kubeconfig yet", name)
		}
		return restConfigFromKubeconfig(spec.Connection.Kubeconfig, spec.Connection.KubernetesAPIEndpoint)
	}
	c.mu.Lock()
	ts, ok := c.tunnels[name]
	c.mu.Unlock()
	if !ok || !ts.Connected {
		return nil, fmt.Errorf("cluster %s: its agent is not connected to this hub leader", name)
	}
	return tunnelConfig(ts), nil
}
