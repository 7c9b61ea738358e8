package gossip

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves a goroutine behind. Every
// Gossip a test starts is stopped, and Run shuts memberlist down before it
// returns; memberlist's goroutines end shortly after Shutdown, and goleak
// retries for a while before it reports, so no ignore is needed.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
