package node

import "runtime/debug"

// Version is the Outpost release, set at build time with
// -ldflags "-X github.com/outpost-mesh/outpost/node.Version=v0.1.0".
var Version = "dev"

// BuildVersion returns Version, or the module version recorded by the Go
// toolchain when Version was not set.
func BuildVersion() string {
	if Version != "dev" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return Version
}
