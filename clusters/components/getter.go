package components

import (
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// restGetter is a genericclioptions.RESTClientGetter over a cluster's
// rest.Config (direct, or through its tunnel), for Helm. Discovery is
// cached for the getter's life: one per cluster connection.
type restGetter struct {
	cfg       *rest.Config
	namespace string
	disc      discovery.CachedDiscoveryInterface
	mapper    meta.RESTMapper
}

func newRESTGetter(cfg *rest.Config, namespace string, disc discovery.CachedDiscoveryInterface, mapper meta.RESTMapper) *restGetter {
	return &restGetter{cfg: cfg, namespace: namespace, disc: disc, mapper: mapper}
}

// newDiscovery returns a cached discovery client and REST mapper for cfg.
func newDiscovery(cfg *rest.Config) (discovery.CachedDiscoveryInterface, meta.RESTMapper, error) {
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, nil, err
	}
	cached := memory.NewMemCacheClient(dc)
	mapper := restmapper.NewShortcutExpander(restmapper.NewDeferredDiscoveryRESTMapper(cached), cached, nil)
	return cached, mapper, nil
}

func (g *restGetter) ToRESTConfig() (*rest.Config, error) { return rest.CopyConfig(g.cfg), nil }

func (g *restGetter) ToDiscoveryClient() (discovery.CachedDiscoveryInterface, error) {
	return g.disc, nil
}

func (g *restGetter) ToRESTMapper() (meta.RESTMapper, error) { return g.mapper, nil }

// ToRawKubeConfigLoader is what Helm takes the default namespace from; it
// describes the same connection as cfg.
func (g *restGetter) ToRawKubeConfigLoader() clientcmd.ClientConfig {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["c"] = &clientcmdapi.Cluster{
		Server: g.cfg.Host, CertificateAuthorityData: g.cfg.CAData, CertificateAuthority: g.cfg.CAFile,
		TLSServerName: g.cfg.ServerName, InsecureSkipTLSVerify: g.cfg.Insecure,
	}
	kc.AuthInfos["u"] = &clientcmdapi.AuthInfo{
		Token: g.cfg.BearerToken, ClientCertificateData: g.cfg.CertData, ClientKeyData: g.cfg.KeyData,
		ClientCertificate: g.cfg.CertFile, ClientKey: g.cfg.KeyFile,
	}
	kc.Contexts["c"] = &clientcmdapi.Context{Cluster: "c", AuthInfo: "u", Namespace: g.namespace}
	kc.CurrentContext = "c"
	return clientcmd.NewDefaultClientConfig(*kc, &clientcmd.ConfigOverrides{})
}
