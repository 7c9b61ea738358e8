package components

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/outpost-mesh/outpost/clusters"
)

// ErrNotReady is returned (wrapped) by Install when a component is not up
// yet, so the controller looks again with backoff.
var ErrNotReady = errors.New("components not ready")

// InstallerConfig configures an Installer.
type InstallerConfig struct {
	// Registry holds the components; DefaultRegistry's when nil.
	Registry *Registry
	// Charts loads charts: the hub's registry (NewOCICharts).
	Charts ChartSource
	// Defaults is the install order and the components on by default.
	Defaults []Default
	// RolloutTimeout is how long a component's workloads (or a virtual
	// cluster's kubeconfig) may take after an install before its
	// condition says it timed out.
	RolloutTimeout time.Duration
	// Hub says how the core components reach and pin the hub; nil tells
	// them nothing (their charts then refuse to render, saying what is
	// missing).
	Hub func() Hub
	// HostConfig returns how the hub reaches another Cluster: a virtual
	// cluster's host (clusters.Controller.RESTConfig). A NotFound API
	// error means the Cluster is gone.
	HostConfig func(ctx context.Context, cluster string) (*rest.Config, error)
	// Logger receives the installer's logs; nil discards.
	Logger *slog.Logger
}

// DefaultInstallerConfig returns the defaults; Charts and HostConfig
// must be set.
func DefaultInstallerConfig() InstallerConfig {
	return InstallerConfig{Defaults: Defaults, RolloutTimeout: 5 * time.Minute}
}

// Validate reports every invalid field.
func (c InstallerConfig) Validate() error {
	var errs []error
	if c.Charts == nil {
		errs = append(errs, errors.New("components: Charts is required"))
	}
	if c.HostConfig == nil {
		errs = append(errs, errors.New("components: HostConfig is required"))
	}
	if c.RolloutTimeout <= 0 {
		errs = append(errs, errors.New("components: RolloutTimeout must be positive"))
	}
	if c.Registry != nil {
		errs = append(errs, c.Registry.Err())
		for _, d := range c.Defaults {
			if _, ok := c.Registry.Lookup(d.Name); !ok {
				errs = append(errs, fmt.Errorf("components: default %q is not registered (registered: %s)", d.Name, strings.Join(c.Registry.Names(), ", ")))
			}
		}
	}
	return errors.Join(errs...)
}

// Installer runs Clusters' components through their installers: the
// cluster controller's clusters.Installer and clusters.Provisioner.
type Installer struct {
	cfg InstallerConfig
	reg *Registry
	env *env
	fwd *forwards // virtual clusters' forwards (forward.go)
}

var (
	_ clusters.Installer   = (*Installer)(nil)
	_ clusters.Provisioner = (*Installer)(nil)
)

// NewInstaller validates cfg, including the registry: a component
// registered twice fails here, naming both places. It starts no
// goroutines: Run does.
func NewInstaller(cfg InstallerConfig) (*Installer, error) {
	if cfg.Registry == nil {
		reg, err := DefaultRegistry()
		if err != nil {
			return nil, err
		}
		cfg.Registry = reg
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "cluster-components")
	return &Installer{
		cfg: cfg, reg: cfg.Registry, env: &env{charts: cfg.Charts, log: log, conns: map[string]*conn{}},
		fwd: &forwards{log: log, byName: map[string]*forward{}},
	}, nil
}

// Run serves the virtual clusters' forwards (the hub's loopback ports
// that reach each virtual API server through its host) until ctx is
// done, and closes them on return. Provision fails with ErrNotRunning
// while Run is not running.
func (in *Installer) Run(ctx context.Context) error { return in.fwd.run(ctx) }

// item is one component of a Cluster's plan.
type item struct {
	name string
	comp *Component          // nil: no installer has this name
	on   bool                // to be installed
	spec *clusters.Component // the spec's entry, if it names it
}

// plan is a Cluster's components in install order: Defaults first, then
// the ones its spec names that Defaults does not list.
func (in *Installer) plan(spec *clusters.ClusterSpec) []item {
	named := map[string]*clusters.Component{}
	for i := range spec.Components {
		named[spec.Components[i].Name] = &spec.Components[i]
	}
	var items []item
	add := func(name string, defaultOn bool) {
		it := item{name: name, on: defaultOn, spec: named[name]}
		if it.spec != nil {
			it.on = it.spec.Enabled == nil || *it.spec.Enabled
		}
		it.comp, _ = in.reg.Lookup(name)
		items = append(items, it)
	}
	for _, d := range in.cfg.Defaults {
		add(d.Name, d.On)
	}
	for _, c := range spec.Components {
		if !has(in.cfg.Defaults, c.Name) {
			add(c.Name, true)
		}
	}
	return items
}

// config is the component's config for cluster t. An error (a spec
// entry Install cannot use) comes with a config all the same: the
// release it names is what Uninstall removes.
func (in *Installer) config(t *clusters.Target, it item) (*Config, error) {
	c := it.comp
	cfg := &Config{
		Component: c, Release: c.Name, Namespace: c.Namespace, Chart: c.Chart, Version: c.Version,
		RolloutTimeout: in.cfg.RolloutTimeout, env: in.env,
	}
	var defaults map[string]any
	if c.Values != nil {
		var hub Hub
		if in.cfg.Hub != nil {
			hub = in.cfg.Hub()
		}
		defaults = c.Values(t, hub)
	}
	var over []byte
	if it.spec != nil {
		over = it.spec.Values
		if it.spec.Chart != "" {
			if it.spec.Version == "" {
				return cfg, fmt.Errorf("spec.components %s: chart %s needs a version (the tag pushed with `outpost charts push`)", c.Name, it.spec.Chart)
			}
			cfg.Chart, cfg.Version = it.spec.Chart, it.spec.Version
		}
	}
	var err error
	if cfg.Values, err = mergeValues(defaults, over); err != nil {
		return cfg, fmt.Errorf("spec.components %s values: %w", c.Name, err)
	}
	return cfg, nil
}

// Install brings t's components to what its spec asks for, in order,
// each through PreInstall, Install and PostInstall, reporting its
// condition after every phase. A component that fails does not stop the
// others. It returns each condition type's final state and, when one is
// not True, an error wrapping ErrNotReady.
func (in *Installer) Install(ctx context.Context, t *clusters.Target) ([]metav1.Condition, error) {
	r := newRound(t)
	items := in.plan(&t.Spec)
	onTypes := map[string]bool{} // condition types an on component sets
	for _, it := range items {
		if it.on && it.comp != nil {
			onTypes[it.comp.Condition] = true
		}
	}
	for _, it := range items {
		switch {
		case !it.on:
			in.leaveOut(ctx, t, it, r, onTypes[conditionOf(it)])
		case it.name == vclusterName && it.on:
			r.finish(ComponentCondition{Type: ConditionVirtualClusterReady, Status: metav1.ConditionFalse, Reason: ReasonUnknownComponent,
				Message: "a virtual cluster is a Cluster of its own with spec.vcluster (hostCluster: " + t.Name + "), not an entry of spec.components"},
				errors.New("vcluster in spec.components"))
		case it.comp == nil:
			r.finish(ComponentCondition{Type: conditionFor(it.name), Status: metav1.ConditionFalse, Reason: ReasonUnknownComponent,
				Message: fmt.Sprintf("no installer is registered as %q (registered: %s)", it.name, strings.Join(in.reg.Names(), ", "))},
				fmt.Errorf("unknown component %q", it.name))
		default:
			cfg, err := in.config(t, it)
			if err != nil {
				r.finish(failed(&Config{Component: it.comp}, ReasonInstallFailed, err).withType(it.comp.Condition), err)
				continue
			}
			r.finish(in.phases(ctx, t, cfg, r))
		}
	}
	return r.result()
}

// phases runs one component's three phases, reporting each.
func (in *Installer) phases(ctx context.Context, t *clusters.Target, cfg *Config, r *round) (ComponentCondition, error) {
	inst := cfg.Component.Installer
	var cc ComponentCondition
	for _, phase := range []func(context.Context, *clusters.Target, *Config) (ComponentCondition, error){inst.PreInstall, inst.Install, inst.PostInstall} {
		var err error
		cc, err = phase(ctx, t, cfg)
		cc = cc.withType(cfg.Component.Condition)
		if err != nil {
			in.env.log.Debug("component not installed", "cluster", t.Name, "component", cfg.Component.Name, "err", err)
			return cc, err
		}
		r.report(cc)
	}
	return cc, nil
}

// leaveOut uninstalls a component that is off but whose condition the
// Cluster shows (it, or one that shares its condition, was installed),
// and says so in its condition unless shared, when an on component of
// that condition speaks for it. Components that are off are not asked
// for: CoreReady with none of them on is True, so it gates Ready no more.
func (in *Installer) leaveOut(ctx context.Context, t *clusters.Target, it item, r *round, shared bool) {
	if it.comp == nil || it.name == vclusterName || meta.FindStatusCondition(t.Status.Conditions, it.comp.Condition) == nil {
		return
	}
	cfg, _ := in.config(t, it) // its release, whatever else the spec says
	if err := it.comp.Installer.Uninstall(ctx, t, cfg); err != nil {
		r.finish(ComponentCondition{Type: it.comp.Condition, Status: metav1.ConditionFalse, Reason: ReasonInstallFailed,
			Message: fmt.Sprintf("%s uninstall failed: %v", it.comp.Title, err)}, err)
		return
	}
	if shared {
		return
	}
	status := metav1.ConditionFalse
	if it.comp.Condition == clusters.ConditionCoreReady {
		status = metav1.ConditionTrue
	}
	r.finish(ComponentCondition{Type: it.comp.Condition, Status: status, Reason: ReasonUninstalled,
		Message: it.comp.Title + " is off in spec.components and uninstalled"}, nil)
}

// conditionOf is the condition type an item sets.
func conditionOf(it item) string {
	if it.comp != nil {
		return it.comp.Condition
	}
	return conditionFor(it.name)
}

// Uninstall removes a deleted Cluster's components in reverse order (a
// virtual cluster: the vcluster and what it leaves behind in its host).
// Every component that was tried (its condition shows) is uninstalled;
// the errors are joined.
func (in *Installer) Uninstall(ctx context.Context, t *clusters.Target) error {
	if t.Spec.Provisioned() {
		return in.deprovision(ctx, t)
	}
	items := in.plan(&t.Spec)
	var errs []error
	for _, it := range slices.Backward(items) {
		// A component whose condition the Cluster does not show was never
		// tried: there is nothing to remove (and a cluster that never
		// answered can go).
		if it.comp == nil || it.name == vclusterName || meta.FindStatusCondition(t.Status.Conditions, it.comp.Condition) == nil {
			continue
		}
		if t.Config == nil {
			errs = append(errs, fmt.Errorf("%s: the cluster is not reachable", it.name))
			continue
		}
		cfg, _ := in.config(t, it) // its release, whatever else the spec says
		if err := it.comp.Installer.Uninstall(ctx, t, cfg); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		in.env.drop(t.Name)
	}
	return errors.Join(errs...)
}

// withType fills an empty Type.
func (c ComponentCondition) withType(typ string) ComponentCondition {
	if c.Type == "" {
		c.Type = typ
	}
	return c
}

// conditionFor is the condition type of an unregistered component:
// "foo-bar" → "FooBarReady".
func conditionFor(name string) string {
	var b strings.Builder
	for part := range strings.SplitSeq(name, "-") {
		if part != "" {
			b.WriteString(strings.ToUpper(part[:1]) + part[1:])
		}
	}
	return b.String() + "Ready"
}
