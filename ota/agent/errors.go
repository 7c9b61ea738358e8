package agent

import "errors"

// Sentinel errors. The first two are the causes of a step's context
// ending, which tell a step's own timeout from the device's and from
// cancellation.
var (
	errStepTimeout   = errors.New("step timeout")
	errDeviceTimeout = errors.New("device timeout")
	// errNotRoot: a user or owner change was asked of an agent not
	// running as root.
	errNotRoot = errors.New("the agent does not run as root, so it cannot switch users or owners")
)
