package components

import (
	"context"
	"errors"
	"fmt"
	"path"
	"reflect"
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
// Deployments, DaemonSets and StatefulSets to roll out.
type HelmInstaller struct{}

var _ ComponentInstaller = HelmInstaller{}

// state is what one round of a component's phases learns.
type state struct {
	deployed *release.Release // the release as it runs, if any
	upToDate bool             // deployed runs Config's chart version and values
}

// PreInstall checks the cluster answers and that the deployed release is
// what Config asks for; if not, it loads the chart.
func (HelmInstaller) PreInstall(ctx context.Context, t *clusters.Target, c *Config) (ComponentCondition, error) {
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
		return installed(c, c.state.deployed), nil
	}
	if c.chart, err = c.env.charts.Load(c.Chart, c.Version); err != nil {
		return failed(c, ReasonChartUnavailable, err), err
	}
	return progress(c, "PreInstall: chart %s:%s loaded", c.Chart, c.Version), nil
}

// Install installs the release, or upgrades it when it differs.
func (HelmInstaller) Install(ctx context.Context, t *clusters.Target, c *Config) (ComponentCondition, error) {
	if c.state.upToDate {
		return installed(c, c.state.deployed), nil
	}
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
	return progress(c, "Install: release %s/%s revision %d applied", c.Namespace, c.Release, rel.Version), nil
}

// PostInstall waits for the release's workloads to roll out.
func (HelmInstaller) PostInstall(ctx context.Context, t *clusters.Target, c *Config) (ComponentCondition, error) {
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
		return installed(c, rel), nil
	}
	since := time.Since(rel.Info.LastDeployed.Time).Round(time.Second)
	if since > c.RolloutTimeout {
		return ComponentCondition{Status: metav1.ConditionFalse, Reason: ReasonRolloutTimeout,
			Message: fmt.Sprintf("%s install failed: not rolled out within %s: %s", c.Component.Title, c.RolloutTimeout, pending)}, nil
	}
	return ComponentCondition{Status: metav1.ConditionFalse, Reason: ReasonRollingOut,
		Message: fmt.Sprintf("%s installing: PostInstall: %s (%s since the install)", c.Component.Title, pending, since)}, nil
}

// Uninstall removes the release; a release that is not there is no
// error.
func (HelmInstaller) Uninstall(ctx context.Context, t *clusters.Target, c *Config) error {
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

// installed is the component's condition when it runs.
func installed(c *Config, rel *release.Release) ComponentCondition {
	return ComponentCondition{Status: metav1.ConditionTrue, Reason: ReasonInstalled,
		Message: fmt.Sprintf("%s %s installed (release %s/%s revision %d)", c.Component.Title, c.Version, c.Namespace, c.Release, rel.Version)}
}
