package components

import (
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/outpost-mesh/outpost/clusters"
)

// Component is a registered component: its installer and its defaults.
type Component struct {
	// Name is what spec.components names it by (a DNS label).
	Name string
	// Title names it in condition messages ("OpenYurt installing").
	Title string
	// Condition is the condition type it sets; components that share one
	// (outpost-agent and outpost-node: CoreReady) set it together.
	Condition string
	// Namespace is where it installs by default.
	Namespace string
	// Chart and Version are its default chart: a repository in the hub's
	// registry named for the real upstream chart, and that chart's
	// version (mirror it with `outpost charts push`).
	Chart   string
	Version string
	// Values returns the values the hub sets for target, under the
	// Cluster's own; nil sets none.
	Values func(t *clusters.Target, hub Hub) map[string]any
	// Installer installs it.
	Installer ComponentInstaller

	at string // where it was registered, for the duplicate error
}

// Registry holds components by name. Registering a name twice is kept as
// an error that Err reports at start-up.
type Registry struct {
	mu    sync.Mutex
	byKey map[string]*Component
	errs  []error
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{byKey: map[string]*Component{}} }

// defaultRegistry is the one init() functions register into.
var defaultRegistry = NewRegistry()

// Register adds c to the package's registry; call it from init(). A
// duplicate or invalid registration is reported by DefaultRegistry.
func Register(c Component) { defaultRegistry.add(c, caller()) }

// DefaultRegistry returns the registry the components' init() functions
// filled, or the error of a duplicate or invalid registration, which
// names both places.
func DefaultRegistry() (*Registry, error) { return defaultRegistry, defaultRegistry.Err() }

// Register adds c to r.
func (r *Registry) Register(c Component) { r.add(c, caller()) }

func (r *Registry) add(c Component, at string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c.at = at
	var bad []string
	bad = append(bad, validation.IsDNS1123Label(c.Name)...)
	if c.Installer == nil {
		bad = append(bad, "no Installer")
	}
	if c.Condition == "" {
		bad = append(bad, "no Condition")
	}
	if len(bad) > 0 {
		r.errs = append(r.errs, fmt.Errorf("component %q registered at %s: %s", c.Name, at, strings.Join(bad, "; ")))
		return
	}
	if prev, ok := r.byKey[c.Name]; ok {
		r.errs = append(r.errs, fmt.Errorf("component %q registered twice: at %s and at %s", c.Name, prev.at, at))
		return
	}
	if c.Title == "" {
		c.Title = c.Name
	}
	r.byKey[c.Name] = &c
}

// Err reports every duplicate or invalid registration.
func (r *Registry) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return errors.Join(r.errs...)
}

// Lookup returns the component registered as name.
func (r *Registry) Lookup(name string) (*Component, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.byKey[name]
	return c, ok
}

// Names returns the registered names, sorted.
func (r *Registry) Names() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	names := make([]string, 0, len(r.byKey))
	for n := range r.byKey {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// caller is the file:line that called Register.
func caller() string {
	_, file, line, ok := runtime.Caller(2)
	if !ok {
		return "an unknown place"
	}
	return fmt.Sprintf("%s:%d", filepath.Base(file), line)
}
