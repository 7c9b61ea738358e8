package components

import (
	"context"
	"errors"
	"fmt"
	"path"
	"reflect"
	"slices"
	"strings"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/storage/driver"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/outpost-mesh/outpost/clusters"
)

// maxHistory bounds the revisions Helm keeps of a release.
const maxHistory = 5

// HelmInstaller installs a component as a Helm release of its chart,
// pulled from the hub's registry: install (or upgrade when the chart's
// version or the values changed), then wait for the release's
// Deployments, DaemonSets and StatefulSets to roll out. A runtime made
// of several upstream charts names the others in With.
type HelmInstaller struct {
	// With are further charts of the component, each installed after the
	// component's own chart as a release of its own in the component's
	// namespace (and uninstalled before it).
	With []Companion
}

// Companion is a further chart of a component (OpenYurt's yurthub beside
// yurt-manager): the chart Chart in the same repository folder of the
// hub's registry as the component's chart, at the component's chart
// version (the upstream project versions them together), installed as
// release <component>-<Chart> with the component's values under the key
// Chart, as Helm passes an umbrella chart's values to a subchart.
type Companion struct {
	Chart string
}

var _ ComponentInstaller = HelmInstaller{}

// state is what one round of a release's phases learns.
type state struct {
	deployed *release.Release // the release as it runs, if any
	upToDate bool             // deployed runs Config's chart version and values
}

// parts returns c's releases in install order: c itself (its values
// without the companions' keys), then a Config per companion. They are
// made once per round, so each keeps what its phases learn.
func (h HelmInstaller) parts(c *Config) []*Config {
	if c.parts != nil {
		return c.parts
	}
	c.parts = []*Config{c}
	if len(h.With) == 0 {
		return c.parts
	}
	own := map[string]any{}
	for k, v := range c.Values {
		own[k] = v
	}
	for _, w := range h.With {
		p := &Config{
			Component: c.Component, Release: c.Release + "-" + w.Chart, Namespace: c.Namespace,
			Chart: path.Join(path.Dir(c.Chart), w.Chart), Version: c.Version, RolloutTimeout: c.RolloutTimeout, env: c.env,
		}
		p.Values, _ = own[w.Chart].(map[string]any)
		delete(own, w.Chart)
		c.parts = append(c.parts, p)
	}
	c.Values = orNil(own)
	return c.parts
}

// PreInstall checks the cluster answers and that each deployed release
// is what Config asks for; for one that is not, it loads the chart.
func (h HelmInstaller) PreInstall(ctx context.Context, t *clusters.Target, c *Config) (ComponentCondition, error) {
	var loaded []string
	for _, p := range h.parts(c) {
		if cc, err := preInstall(ctx, t, p); err != nil {
			return cc, err
		}
		if !p.state.upToDate {
			loaded = append(loaded, p.Chart+":"+p.Version)
		}
	}
	if len(loaded) == 0 {
		return installed(c), nil
	}
	return progress(c, "PreInstall: chart %s loaded", strings.Join(loaded, ", ")), nil
}

// Install installs each release, or upgrades it when it differs.
func (h HelmInstaller) Install(ctx context.Context, t *clusters.Target, c *Config) (ComponentCondition, error) {
	var applied []string
	for _, p := range h.parts(c) {
		if p.state.upToDate {
			continue
		}
		if cc, err := install(ctx, t, p); err != nil {
			return cc, err
		}
		applied = append(applied, fmt.Sprintf("%s/%s revision %d", p.Namespace, p.Release, p.state.deployed.Version))
	}
	if len(applied) == 0 {
		return installed(c), nil
	}
	return progress(c, "Install: release %s applied", strings.Join(applied, ", ")), nil
}

// PostInstall waits for each release's workloads to roll out.
func (h HelmInstaller) PostInstall(ctx context.Context, t *clusters.Target, c *Config) (ComponentCondition, error) {
	for _, p := range h.parts(c) {
		if cc, err := postInstall(ctx, t, p); err != nil || cc.Status != metav1.ConditionTrue {
			return cc, err
		}
	}
	return installed(c), nil
}

// Uninstall removes the releases, the component's own last; a release
// that is not there is no error.
func (h HelmInstaller) Uninstall(ctx context.Context, t *clusters.Target, c *Config) error {
	for _, p := range slices.Backward(h.parts(c)) {
		if err := uninstall(ctx, t, p); err != nil {
			return err
		}
	}
	return nil
}

// preInstall checks the cluster answers and whether c's release is what
// c asks for; if not, it loads the chart.
func preInstall(ctx context.Context, t *clusters.Target, c *Config) (ComponentCondition, error) {
	conn, err := c.env.conn(t)
	if err != nil {
		return failed(c, ReasonUnreachable, err), err
	}
	if _, err := conn.cs.CoreV1().Namespaces().Get(ctx, "kube-system", metav1.GetOptions{}); err != nil {
		err = fmt.Errorf("the cluster did not answer: %w", err)
		return failed(c, ReasonUnreachable, err), err
	}
	ac, err := conn.helm(c.Namespace, c.env.log)
	if err != nil {
		return failed(c, ReasonInstallFailed, err), err
	}
	c.state = state{}
	switch rel, err := ac.Releases.Deployed(c.Release); {
	case err == nil:
		c.state.deployed = rel
		c.state.upToDate = rel.Chart != nil && rel.Chart.Metadata != nil &&
			rel.Chart.Metadata.Name == path.Base(c.Chart) && rel.Chart.Metadata.Version == c.Version &&
			sameValues(rel.Config, c.Values)
	case errors.Is(err, driver.ErrNoDeployedReleases), errors.Is(err, driver.ErrReleaseNotFound):
	default:
		err = fmt.Errorf("read release %s/%s: %w", c.Namespace, c.Release, err)
		return failed(c, ReasonUnreachable, err), err
	}
	if c.state.upToDate {
		return ComponentCondition{}, nil
	}
	if c.chart, err = c.env.charts.Load(c.Chart, c.Version); err != nil {
		return failed(c, ReasonChartUnavailable, err), err
	}
	return ComponentCondition{}, nil
}

// install installs c's release, or upgrades it.
func install(ctx context.Context, t *clusters.Target, c *Config) (ComponentCondition, error) {
	conn, err := c.env.conn(t)
	if err != nil {
		return failed(c, ReasonUnreachable, err), err
	}
	ac, err := conn.helm(c.Namespace, c.env.log)
	if err != nil {
		return failed(c, ReasonInstallFailed, err), err
	}
	var rel *release.Release
	if c.state.deployed != nil {
		up := action.NewUpgrade(ac)
		up.Namespace, up.MaxHistory, up.Timeout = c.Namespace, maxHistory, c.RolloutTimeout
		rel, err = up.RunWithContext(ctx, c.Release, c.chart, c.Values)
	} else {
		in := action.NewInstall(ac)
		in.ReleaseName, in.Namespace, in.CreateNamespace, in.Timeout = c.Release, c.Namespace, true, c.RolloutTimeout
		// A release whose install failed before is installed again.
		in.Replace = true
		in.Labels = map[string]string{"outpost.dev/component": c.Component.Name}
		rel, err = in.RunWithContext(ctx, c.chart, c.Values)
	}
	if err != nil {
		err = fmt.Errorf("helm release %s/%s: %w", c.Namespace, c.Release, err)
		return failed(c, ReasonInstallFailed, err), err
	}
	c.state.deployed = rel
	return ComponentCondition{}, nil
}

// postInstall reports whether c's release's workloads rolled out: True,
// or False RollingOut, or False RolloutTimeout past c.RolloutTimeout
// since the release's last deploy.
func postInstall(ctx context.Context, t *clusters.Target, c *Config) (ComponentCondition, error) {
	rel := c.state.deployed
	if rel == nil {
		err := errors.New("no deployed release")
		return failed(c, ReasonInstallFailed, err), err
	}
	conn, err := c.env.conn(t)
	if err != nil {
		return failed(c, ReasonUnreachable, err), err
	}
	pending, err := conn.rollout(ctx, rel)
	if err != nil {
		return failed(c, ReasonUnreachable, err), err
	}
	if pending == "" {
		return ComponentCondition{Status: metav1.ConditionTrue}, nil
	}
	since := time.Since(rel.Info.LastDeployed.Time).Round(time.Second)
	if since > c.RolloutTimeout {
		return ComponentCondition{Status: metav1.ConditionFalse, Reason: ReasonRolloutTimeout,
			Message: fmt.Sprintf("%s install failed: not rolled out within %s: %s", c.Component.Title, c.RolloutTimeout, pending)}, nil
	}
	return ComponentCondition{Status: metav1.ConditionFalse, Reason: ReasonRollingOut,
		Message: fmt.Sprintf("%s installing: PostInstall: %s (%s since the install)", c.Component.Title, pending, since)}, nil
}

// uninstall removes c's release; one that is not there is no error.
func uninstall(_ context.Context, t *clusters.Target, c *Config) error {
	conn, err := c.env.conn(t)
	if err != nil {
		return err
	}
	ac, err := conn.helm(c.Namespace, c.env.log)
	if err != nil {
		return err
	}
	un := action.NewUninstall(ac)
	un.IgnoreNotFound, un.Timeout = true, c.RolloutTimeout
	if _, err := un.Run(c.Release); err != nil {
		return fmt.Errorf("uninstall %s (release %s/%s): %w", c.Component.Name, c.Namespace, c.Release, err)
	}
	return nil
}

// sameValues compares a release's values with the wanted ones, both as
// JSON decodes them.
func sameValues(have, want map[string]any) bool {
	if len(have) == 0 && len(want) == 0 {
		return true
	}
	return reflect.DeepEqual(have, want)
}

// progress is the component's condition while it installs.
func progress(c *Config, format string, a ...any) ComponentCondition {
	return ComponentCondition{Status: metav1.ConditionFalse, Reason: ReasonInstalling,
		Message: c.Component.Title + " installing: " + fmt.Sprintf(format, a...)}
}

// failed is the component's condition when a phase fails.
func failed(c *Config, reason string, err error) ComponentCondition {
	return ComponentCondition{Status: metav1.ConditionFalse, Reason: reason,
		Message: c.Component.Title + " install failed: " + err.Error()}
}

// installed is the component's condition when it runs: its version and
// its releases.
func installed(c *Config) ComponentCondition {
	var rels []string
	for _, p := range c.parts {
		if p.state.deployed != nil {
			rels = append(rels, fmt.Sprintf("%s/%s revision %d", p.Namespace, p.Release, p.state.deployed.Version))
		}
	}
	return ComponentCondition{Status: metav1.ConditionTrue, Reason: ReasonInstalled,
		Message: fmt.Sprintf("%s %s installed (release %s)", c.Component.Title, c.Version, strings.Join(rels, ", "))}
}
