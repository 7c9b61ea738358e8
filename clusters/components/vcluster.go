package components

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/outpost-mesh/outpost/clusters"
)

// vclusterName is the vcluster component's registered name.
const vclusterName = "vcluster"

// labelVCluster marks a host namespace the hub made for a virtual
// cluster, so deletion removes only namespaces it made.
const labelVCluster = "clusters.outpost.dev/vcluster"

// cidrConfigMap is what vcluster leaves in its namespace besides the
// release: the service CIDR it found.
const cidrConfigMap = "vc-cidr"

// vclusterK0sVersion is the default vcluster chart for distro k0s: the
// last release whose controlPlane.distro has k0s (loft-sh removed it in
// 0.26, and the chart's values schema refuses it since).
const vclusterK0sVersion = "0.25.2"

func init() {
	Register(Component{
		Name: vclusterName, Title: "vcluster", Condition: ConditionVirtualClusterReady,
		// loft-sh/vcluster (https://charts.loft.sh), mirrored into the
		// hub's registry; distro k0s defaults to vclusterK0sVersion.
		Chart: "charts/vcluster", Version: "0.28.0",
		Installer: vclusterInstaller{},
	})
}

// vclusterInstaller installs the vcluster chart into a host cluster:
// a release named for the virtual Cluster in its own host namespace,
// ready when the virtual control plane has written its kubeconfig to
// secret vc-<name>.
type vclusterInstaller struct{ HelmInstaller }

// PreInstall makes the host namespace (marked as the hub's), then checks
// as any chart does.
func (v vclusterInstaller) PreInstall(ctx context.Context, t *clusters.Target, c *Config) (ComponentCondition, error) {
	conn, err := c.env.conn(t)
	if err != nil {
		return failed(c, ReasonHostUnavailable, err), err
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: c.Namespace, Labels: map[string]string{labelVCluster: c.Release}}}
	if _, err := conn.cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		err = fmt.Errorf("host namespace %s: %w", c.Namespace, err)
		return failed(c, ReasonHostUnavailable, err), err
	}
	return v.HelmInstaller.PreInstall(ctx, t, c)
}

// PostInstall waits for the kubeconfig secret vc-<name>.
func (vclusterInstaller) PostInstall(ctx context.Context, t *clusters.Target, c *Config) (ComponentCondition, error) {
	rel := c.state.deployed
	if rel == nil {
		err := errors.New("no deployed release")
		return failed(c, ReasonInstallFailed, err), err
	}
	_, err := kubeconfigSecret(ctx, c, t)
	switch {
	case err == nil:
		return ComponentCondition{Status: metav1.ConditionTrue, Reason: ReasonInstalled,
			Message: fmt.Sprintf("vcluster %s (%s) runs in cluster %s, namespace %s", c.Version, distroOf(c), t.Name, c.Namespace)}, nil
	case !apierrors.IsNotFound(err):
		return failed(c, ReasonHostUnavailable, err), err
	}
	since := time.Since(rel.Info.LastDeployed.Time).Round(time.Second)
	if since > c.RolloutTimeout {
		return ComponentCondition{Status: metav1.ConditionFalse, Reason: ReasonKubeconfigTimeout,
			Message: fmt.Sprintf("vcluster install failed: secret %s/vc-%s not written within %s: is the virtual control plane running?", c.Namespace, c.Release, c.RolloutTimeout)}, nil
	}
	return ComponentCondition{Status: metav1.ConditionFalse, Reason: ReasonWaitingKubeconfig,
		Message: fmt.Sprintf("vcluster installing: PostInstall: waiting for secret %s/vc-%s (%s since the install)", c.Namespace, c.Release, since)}, nil
}

// kubeconfigSecret reads the kubeconfig the virtual control plane wrote.
func kubeconfigSecret(ctx context.Context, c *Config, host *clusters.Target) ([]byte, error) {
	conn, err := c.env.conn(host)
	if err != nil {
		return nil, err
	}
	s, err := conn.cs.CoreV1().Secrets(c.Namespace).Get(ctx, "vc-"+c.Release, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	if len(s.Data["config"]) == 0 {
		return nil, apierrors.NewNotFound(corev1.Resource("secrets"), "vc-"+c.Release+" (key config)")
	}
	return s.Data["config"], nil
}

// distroOf is the distro the values ask for.
func distroOf(c *Config) string {
	cp, _ := c.Values["controlPlane"].(map[string]any)
	d, _ := cp["distro"].(map[string]any)
	for _, name := range []string{clusters.DistroK3s, clusters.DistroK0s} {
		if m, _ := d[name].(map[string]any); m["enabled"] == true {
			return name
		}
	}
	return clusters.DistroK8s
}

// vclusterConfig is the vcluster component's config for virtual cluster
// t in its host; nil when no installer is registered as vcluster. An
// error about the spec comes with a config all the same: the release and
// namespace deletion cleans up.
func (in *Installer) vclusterConfig(t *clusters.Target) (*Config, error) {
	comp, ok := in.reg.Lookup(vclusterName)
	if !ok {
		return nil, fmt.Errorf("no installer is registered as %q", vclusterName)
	}
	v := t.Spec.VCluster
	distro := v.Distro
	if distro == "" {
		distro = clusters.DistroK8s
	}
	cfg := &Config{
		Component: comp, Release: t.Name, Namespace: v.HostNamespace(t.Name), Chart: comp.Chart, Version: comp.Version,
		RolloutTimeout: in.cfg.RolloutTimeout, env: in.env,
	}
	switch {
	case v.Chart != "" && v.Version == "":
		return cfg, fmt.Errorf("spec.vcluster: chart %s needs a version (the tag pushed with `outpost charts push`)", v.Chart)
	case v.Chart != "":
		cfg.Chart, cfg.Version = v.Chart, v.Version
	case distro == clusters.DistroK0s:
		cfg.Version = vclusterK0sVersion
	}
	defaults := map[string]any{"controlPlane": map[string]any{"distro": map[string]any{distro: map[string]any{"enabled": true}}}}
	var err error
	if cfg.Values, err = mergeValues(defaults, v.Values); err != nil {
		return cfg, fmt.Errorf("spec.vcluster.values: %w", err)
	}
	return cfg, nil
}

// Provision installs the vcluster chart into the host cluster, and once
// the virtual control plane has written secret vc-<name>, returns its
// kubeconfig with the server rewritten to where the hub reaches it.
func (in *Installer) Provision(ctx context.Context, t *clusters.Target) ([]byte, []metav1.Condition, error) {
	r := newRound(t)
	notReady := func(reason string, err error) ([]byte, []metav1.Condition, error) {
		r.finish(ComponentCondition{Type: ConditionVirtualClusterReady, Status: metav1.ConditionFalse, Reason: reason, Message: "vcluster install failed: " + err.Error()}, err)
		conds, rerr := r.result()
		return nil, conds, rerr
	}
	cfg, err := in.vclusterConfig(t)
	switch {
	case cfg == nil:
		return notReady(ReasonUnknownComponent, err)
	case err != nil:
		return notReady(ReasonInstallFailed, err)
	}
	v := t.Spec.VCluster
	hostCfg, err := in.cfg.HostConfig(ctx, v.HostCluster)
	if err != nil {
		return notReady(ReasonHostUnavailable, fmt.Errorf("host cluster %s: %w", v.HostCluster, err))
	}
	host := &clusters.Target{Name: v.HostCluster, Config: hostCfg, Report: t.Report}
	cc, err := in.phases(ctx, host, cfg, r)
	if err != nil || cc.Status != metav1.ConditionTrue {
		r.finish(cc, err)
		conds, rerr := r.result()
		return nil, conds, rerr
	}
	kc, err := kubeconfigSecret(ctx, cfg, host)
	if err != nil {
		return notReady(ReasonHostUnavailable, err)
	}
	endpoint := v.Endpoint
	if endpoint != "" {
		in.fwd.close(t.Name) // one made before the endpoint was set
	} else {
		if endpoint, err = in.forwardTo(t, host, cfg, kc); err != nil {
			return notReady(ReasonForwardFailed, err)
		}
	}
	if kc, err = rewriteServer(kc, endpoint); err != nil {
		return notReady(ReasonInvalidKubeconfig, fmt.Errorf("secret %s/vc-%s: %w", cfg.Namespace, cfg.Release, err))
	}
	r.finish(cc, nil)
	conds, _ := r.result()
	return kc, conds, nil
}

// rewriteServer points the kubeconfig's current cluster at endpoint and
// keeps TLS verified end to end: the name the virtual API server's
// certificate was issued for becomes tls-server-name.
func rewriteServer(kubeconfig []byte, endpoint string) ([]byte, error) {
	cfg, name, cl, err := currentCluster(kubeconfig)
	if err != nil {
		return nil, err
	}
	from, err := url.Parse(cl.Server)
	if err != nil || from.Host == "" {
		return nil, fmt.Errorf("server %q is not a URL", cl.Server)
	}
	to, err := url.Parse(endpoint)
	if err != nil || to.Scheme != "https" || to.Host == "" {
		return nil, fmt.Errorf("endpoint %q is not an https:// URL", endpoint)
	}
	if cl.TLSServerName == "" && !cl.InsecureSkipTLSVerify && from.Hostname() != to.Hostname() {
		cl.TLSServerName = from.Hostname()
	}
	cl.Server = strings.TrimSuffix(endpoint, "/")
	cfg.CurrentContext = name
	return clientcmd.Write(*cfg)
}

// kubeconfigServer is the server URL of the kubeconfig's current cluster.
func kubeconfigServer(kubeconfig []byte) (*url.URL, error) {
	_, _, cl, err := currentCluster(kubeconfig)
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(cl.Server)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("server %q is not a URL", cl.Server)
	}
	return u, nil
}

// currentCluster parses a kubeconfig and returns its current context's
// name (its only context's when none is current) and cluster.
func currentCluster(kubeconfig []byte) (*clientcmdapi.Config, string, *clientcmdapi.Cluster, error) {
	cfg, err := clientcmd.Load(kubeconfig)
	if err != nil {
		return nil, "", nil, fmt.Errorf("not a kubeconfig: %v", err)
	}
	name := cfg.CurrentContext
	if name == "" && len(cfg.Contexts) == 1 {
		for n := range cfg.Contexts {
			name = n
		}
	}
	kctx, ok := cfg.Contexts[name]
	if !ok {
		return nil, "", nil, errors.New("the kubeconfig has no current context")
	}
	cl, ok := cfg.Clusters[kctx.Cluster]
	if !ok {
		return nil, "", nil, fmt.Errorf("the kubeconfig has no cluster %q", kctx.Cluster)
	}
	return cfg, name, cl, nil
}

// deprovision removes a virtual cluster from its host: the release, then
// what Helm leaves behind (the data PVCs, the vc-cidr ConfigMap, the
// kubeconfig secret) and the namespace the hub made, so that a new
// Cluster of the same name starts empty. It fails, to be retried, until
// they are gone. A host Cluster that no longer exists took them with it.
func (in *Installer) deprovision(ctx context.Context, t *clusters.Target) error {
	cfg, err := in.vclusterConfig(t)
	if cfg == nil {
		return err
	}
	// Connections to a virtual cluster being deleted end now.
	in.fwd.close(t.Name)
	v := t.Spec.VCluster
	hostCfg, err := in.cfg.HostConfig(ctx, v.HostCluster)
	if apierrors.IsNotFound(err) {
		in.env.log.Info("virtual cluster's host is gone; nothing to clean up", "cluster", t.Name, "host", v.HostCluster)
		return nil
	}
	if err != nil {
		return fmt.Errorf("host cluster %s: %w", v.HostCluster, err)
	}
	host := &clusters.Target{Name: v.HostCluster, Config: hostCfg}
	if err := cfg.Component.Installer.Uninstall(ctx, host, cfg); err != nil {
		return err
	}
	conn, err := in.env.conn(host)
	if err != nil {
		return err
	}
	core := conn.cs.CoreV1()
	ns := cfg.Namespace
	var errs []error
	gone := func(err error) bool { return err == nil || apierrors.IsNotFound(err) }
	pvcs, err := core.PersistentVolumeClaims(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("list PVCs in %s: %w", ns, err)
	}
	var left []string
	for _, p := range pvcs.Items {
		if p.Labels["release"] != cfg.Release && !strings.HasPrefix(p.Name, "data-"+cfg.Release+"-") {
			continue
		}
		left = append(left, p.Name)
		if p.DeletionTimestamp == nil {
			if err := core.PersistentVolumeClaims(ns).Delete(ctx, p.Name, metav1.DeleteOptions{}); !gone(err) {
				errs = append(errs, fmt.Errorf("delete PVC %s/%s: %w", ns, p.Name, err))
			}
		}
	}
	if err := core.ConfigMaps(ns).Delete(ctx, cidrConfigMap, metav1.DeleteOptions{}); !gone(err) {
		errs = append(errs, fmt.Errorf("delete ConfigMap %s/%s: %w", ns, cidrConfigMap, err))
	}
	if err := core.Secrets(ns).Delete(ctx, "vc-"+cfg.Release, metav1.DeleteOptions{}); !gone(err) {
		errs = append(errs, fmt.Errorf("delete secret %s/vc-%s: %w", ns, cfg.Release, err))
	}
	nsObj, err := core.Namespaces().Get(ctx, ns, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		errs = append(errs, fmt.Errorf("read namespace %s: %w", ns, err))
	case nsObj.Labels[labelVCluster] != cfg.Release:
		// Not the hub's namespace: only the PVCs must go.
		if len(left) > 0 {
			errs = append(errs, fmt.Errorf("PVCs %s in namespace %s are still being deleted", strings.Join(left, ", "), ns))
		}
	default:
		if nsObj.DeletionTimestamp == nil {
			if err := core.Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); !gone(err) {
				errs = append(errs, fmt.Errorf("delete namespace %s: %w", ns, err))
			}
		}
		errs = append(errs, fmt.Errorf("namespace %s of cluster %s is still being deleted", ns, v.HostCluster))
	}
	if len(errs) == 0 {
		in.env.drop(t.Name)
	}
	return errors.Join(errs...)
}
