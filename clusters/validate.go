package clusters

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"

	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/outpost-mesh/outpost/consensus"
)

// maxProviderLen bounds spec.provider.
const maxProviderLen = 63

func validateCluster(obj *consensus.Object) field.ErrorList {
	var errs field.ErrorList
	// A Cluster's name is used as a label value and in edge namespaces
	// (vc-<name>): a DNS-1123 label, not just a subdomain.
	for _, msg := range validation.IsDNS1123Label(obj.Name) {
		errs = append(errs, field.Invalid(field.NewPath("metadata", "name"), obj.Name, msg))
	}
	var spec ClusterSpec
	if err := obj.DecodeSpec(&spec); err != nil {
		return append(errs, field.Invalid(field.NewPath("spec"), field.OmitValueType{}, err.Error()))
	}
	// Create clears the resourceVersion; an update carries one. A secret
	// left out of an update keeps its stored (sealed) value.
	creating := obj.ResourceVersion == ""
	conn := field.NewPath("spec", "connection")
	switch spec.Connection.Type {
	case ConnectionDirect:
		switch {
		case len(spec.Connection.Kubeconfig) == 0 && creating && !spec.Provisioned():
			errs = append(errs, field.Required(conn.Child("kubeconfig"), "a direct cluster needs the kubeconfig the hub connects with (outpost cluster create NAME --kubeconfig FILE)"))
		case len(spec.Connection.Kubeconfig) > 0 && !isSealed(spec.Connection.Kubeconfig):
			if _, err := restConfigFromKubeconfig(spec.Connection.Kubeconfig, ""); err != nil {
				errs = append(errs, field.Invalid(conn.Child("kubeconfig"), field.OmitValueType{}, err.Error()))
			}
		}
		if spec.Connection.TokenHash != "" {
			errs = append(errs, field.Forbidden(conn.Child("tokenHash"), "only proxy clusters have a cluster token"))
		}
		if e := spec.Connection.KubernetesAPIEndpoint; e != "" {
			if u, err := url.Parse(e); err != nil || u.Scheme != "https" || u.Host == "" {
				errs = append(errs, field.Invalid(conn.Child("kubernetesAPIEndpoint"), e, "must be an https:// URL"))
			}
		}
	case ConnectionProxy:
		if len(spec.Connection.Kubeconfig) > 0 {
			errs = append(errs, field.Forbidden(conn.Child("kubeconfig"), "a proxy cluster is reached through its agent's tunnel: leave the kubeconfig out, or use type direct"))
		}
		if spec.Connection.KubernetesAPIEndpoint != "" {
			errs = append(errs, field.Forbidden(conn.Child("kubernetesAPIEndpoint"), "the hub fills the endpoint of a proxy cluster"))
		}
		if h := spec.Connection.TokenHash; h != "" && !isSealedString(h) {
			if b, err := hex.DecodeString(h); err != nil || len(b) != 32 {
				errs = append(errs, field.Invalid(conn.Child("tokenHash"), field.OmitValueType{}, "must be the hex SHA-256 of the cluster token"))
			}
		}
	case "":
		errs = append(errs, field.Required(conn.Child("type"), "direct or proxy"))
	default:
		errs = append(errs, field.NotSupported(conn.Child("type"), spec.Connection.Type, []string{ConnectionDirect, ConnectionProxy}))
	}
	if len(spec.Provider) > maxProviderLen {
		errs = append(errs, field.TooLong(field.NewPath("spec", "provider"), spec.Provider, maxProviderLen))
	}
	errs = append(errs, validateComponents(spec.Components)...)
	if spec.Provisioned() {
		errs = append(errs, validateVCluster(obj.Name, &spec)...)
	}
	return errs
}

// validateVCluster checks an enabled spec.vcluster.
func validateVCluster(name string, spec *ClusterSpec) field.ErrorList {
	var errs field.ErrorList
	v := spec.VCluster
	p := field.NewPath("spec", "vcluster")
	if spec.Connection.Type != ConnectionDirect {
		errs = append(errs, field.Invalid(field.NewPath("spec", "connection", "type"), spec.Connection.Type, "a virtual cluster is reached directly (type direct); the hub fills its kubeconfig"))
	}
	switch v.Distro {
	case "", DistroK8s, DistroK3s, DistroK0s:
	default:
		errs = append(errs, field.NotSupported(p.Child("distro"), v.Distro, []string{DistroK8s, DistroK3s, DistroK0s}))
	}
	switch {
	case v.HostCluster == "":
		errs = append(errs, field.Required(p.Child("hostCluster"), "the Cluster the virtual cluster runs in"))
	case v.HostCluster == name:
		errs = append(errs, field.Invalid(p.Child("hostCluster"), v.HostCluster, "a cluster cannot host itself"))
	default:
		for _, msg := range validation.IsDNS1123Label(v.HostCluster) {
			errs = append(errs, field.Invalid(p.Child("hostCluster"), v.HostCluster, msg))
		}
	}
	for _, msg := range validation.IsDNS1123Label(v.HostNamespace(name)) {
		errs = append(errs, field.Invalid(p.Child("namespace"), v.HostNamespace(name), msg+" (the default is vcluster-<name>: set namespace for a long name)"))
	}
	if e := v.Endpoint; e != "" {
		if u, err := url.Parse(e); err != nil || u.Scheme != "https" || u.Host == "" {
			errs = append(errs, field.Invalid(p.Child("endpoint"), e, "must be an https:// URL"))
		}
	}
	if !isObject(v.Values) {
		errs = append(errs, field.Invalid(p.Child("values"), field.OmitValueType{}, "must be an object"))
	}
	if v.Version != "" && v.Chart == "" {
		errs = append(errs, field.Required(p.Child("chart"), "a chart version needs a chart"))
	}
	return errs
}

// isObject reports whether raw is empty, null or a JSON object.
func isObject(raw json.RawMessage) bool {
	if len(raw) == 0 || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return true
	}
	var m map[string]any
	return json.Unmarshal(raw, &m) == nil
}

func validateComponents(cs []Component) field.ErrorList {
	var errs field.ErrorList
	seen := map[string]bool{}
	for i, c := range cs {
		p := field.NewPath("spec", "components").Index(i)
		for _, msg := range validation.IsDNS1123Label(c.Name) {
			errs = append(errs, field.Invalid(p.Child("name"), c.Name, msg))
		}
		if seen[c.Name] {
			errs = append(errs, field.Duplicate(p.Child("name"), c.Name))
		}
		seen[c.Name] = true
		if !isObject(c.Values) {
			errs = append(errs, field.Invalid(p.Child("values"), field.OmitValueType{}, "must be an object"))
		}
		if c.Version != "" && c.Chart == "" {
			errs = append(errs, field.Required(p.Child("chart"), "a chart version needs a chart"))
		}
	}
	return errs
}

// restConfigFromKubeconfig parses a kubeconfig and returns the client
// config of its current context (its only context when none is current),
// with the server replaced by endpoint when that is set.
func restConfigFromKubeconfig(kubeconfig []byte, endpoint string) (*rest.Config, error) {
	cfg, err := clientcmd.Load(kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("not a kubeconfig: %v", err)
	}
	if cfg.CurrentContext == "" && len(cfg.Contexts) == 1 {
		for name := range cfg.Contexts {
			cfg.CurrentContext = name
		}
	}
	if cfg.CurrentContext == "" {
		return nil, fmt.Errorf("the kubeconfig has %d contexts and no current-context: set current-context", len(cfg.Contexts))
	}
	overrides := &clientcmd.ConfigOverrides{}
	if endpoint != "" {
		overrides.ClusterInfo.Server = endpoint
	}
	rc, err := clientcmd.NewNonInteractiveClientConfig(*cfg, cfg.CurrentContext, overrides, nil).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig context %q: %v", cfg.CurrentContext, err)
	}
	if rc.ExecProvider != nil || rc.AuthProvider != nil {
		// The hub would run a program, or an auth plugin, named by the
		// kubeconfig's author: not from an API call.
		return nil, fmt.Errorf("kubeconfig context %q: exec and auth-provider credentials are not supported; use a token or a client certificate", cfg.CurrentContext)
	}
	return rc, nil
}

// isSealed reports whether a []byte secret holds a value the store sealed
// (it starts with a NUL byte, which no kubeconfig does) rather than
// plaintext: a merge patch re-validates the stored, sealed value.
func isSealed(b []byte) bool { return len(b) > 0 && b[0] == 0 }

// isSealedString is isSealed for a string secret, which the store keeps
// base64-encoded.
func isSealedString(s string) bool {
	b, err := base64.StdEncoding.DecodeString(s)
	return err == nil && isSealed(b)
}
