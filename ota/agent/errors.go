package agent

import "errors"

// Causes of a step's context ending, to tell a step's own timeout from the
// device's and from cancellation.
var (
	errStepTimeout   = errors.New("step timeout")
	errDeviceTimeout = errors.New("device timeout")
)
