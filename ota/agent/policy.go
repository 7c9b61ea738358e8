package agent

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/outpost-mesh/outpost/ota"
)

// Policy is what this node lets tasks do: the step types it runs
// (--ota-allow) and the directories read and write steps may touch
// (--ota-paths). The zero Policy is DefaultPolicy.
type Policy struct {
	// Allow lists the step types this node runs; empty means all four.
	Allow []string
	// Paths are absolute directories; a read or write step's path must
	// resolve, symlinks followed, to one of them or below. Empty means "/".
	Paths []string
}

// DefaultPolicy allows every step type anywhere.
func DefaultPolicy() Policy {
	p := Policy{Paths: []string{"/"}}
	for _, t := range ota.StepTypes {
		p.Allow = append(p.Allow, string(t))
	}
	return p
}

// Validate checks the policy, naming the flag of a bad value.
func (p Policy) Validate() error {
	for _, a := range p.Allow {
		if !slices.Contains(ota.StepTypes, ota.StepType(a)) {
			return fmt.Errorf("--ota-allow %q: unknown step type; want some of exec, read, write, playbook", a)
		}
	}
	for _, d := range p.Paths {
		if !filepath.IsAbs(d) {
			return fmt.Errorf("--ota-paths %q must be an absolute path", d)
		}
		if err := ota.CheckPath(d); err != nil {
			return fmt.Errorf("--ota-paths %q: %w", d, err)
		}
	}
	return nil
}

// Allows reports whether steps of type t may run.
func (p Policy) Allows(t ota.StepType) bool {
	return len(p.Allow) == 0 || slices.Contains(p.Allow, string(t))
}

// roots returns the allowed directories, symlinks resolved where they exist
// (so that they compare with resolved paths).
func (p Policy) roots() []string {
	if len(p.Paths) == 0 {
		return []string{"/"}
	}
	out := make([]string, 0, len(p.Paths))
	for _, d := range p.Paths {
		d = filepath.Clean(d)
		if r, err := filepath.EvalSymlinks(d); err == nil {
			d = r
		}
		out = append(out, d)
	}
	return out
}

// permits reports whether resolved, a clean absolute path with symlinks
// already resolved, is one of the roots or below one.
func (p Policy) permits(resolved string) bool {
	for _, root := range p.roots() {
		if root == "/" || resolved == root || strings.HasPrefix(resolved, root+"/") {
			return true
		}
	}
	return false
}

// pathDenied is the message of a path outside the policy.
func (p Policy) pathDenied(path, resolved string) string {
	paths := p.Paths
	if len(paths) == 0 {
		paths = []string{"/"}
	}
	if path == resolved {
		return fmt.Sprintf("%s is outside the paths this node allows (--ota-paths %s)", path, strings.Join(paths, ","))
	}
	return fmt.Sprintf("%s resolves to %s, outside the paths this node allows (--ota-paths %s)", path, resolved, strings.Join(paths, ","))
}
