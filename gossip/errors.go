package gossip

import "errors"

// Sentinel errors. Errors returned by this package wrap them with %w.
var (
	// ErrMetaTooLarge is returned when a Meta does not fit in memberlist's
	// node metadata (memberlist.MetaMaxSize bytes).
	ErrMetaTooLarge = errors.New("node metadata too large")
	// ErrBadMeta is returned when node metadata cannot be decoded.
	ErrBadMeta = errors.New("malformed node metadata")
	// ErrNotRunning is returned by calls that need the pool while Run has
	// not created it yet or has already shut it down.
	ErrNotRunning = errors.New("gossip is not running")
	// ErrAlreadyRun is returned by a second call to Run.
	ErrAlreadyRun = errors.New("gossip: Run called twice")
)
