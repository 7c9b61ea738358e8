package components

import "slices"

// Default is a component in the default order.
type Default struct {
	// Name is a registered component's name.
	Name string
	// On installs it in a Cluster whose spec.components does not name
	// it; off, a Cluster asks for it by naming it.
	On bool
}

// Defaults is the order components install in (deletion runs it
// backwards); components a Cluster names that are not listed install
// after these, in the spec's order. None is on: a Cluster asks for each,
// core components too, so one that asks for none is Ready on its probe
// alone. A new runtime adds its line here.
var Defaults = []Default{
	{Name: "outpost-agent"},
	{Name: "outpost-node"},
	{Name: "etcd"},
	{Name: "openyurt"},
	{Name: "kubeedge"},
}

// has reports whether defaults lists name.
func has(defaults []Default, name string) bool {
	return slices.ContainsFunc(defaults, func(d Default) bool { return d.Name == name })
}
