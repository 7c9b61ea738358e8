package node_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves a goroutine behind: every
// Node started by a test is stopped, and Run must have joined Raft, Badger,
// the HTTP servers and the heartbeat before it returns.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
