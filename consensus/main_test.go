package consensus

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves a goroutine running: Run
// must stop Raft, Badger and everything it started before it returns.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
