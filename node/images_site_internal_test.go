package node

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// TestLeaderWaitRidesOutAnElection checks a claim waits out a site without
// a leader instead of failing at once, stops waiting for other errors,
// and, once a wait ran out (the site lost quorum), asks once until the
// memory passes.
func TestLeaderWaitRidesOutAnElection(t *testing.T) {
	t.Parallel()
	w := leaderWait{limit: time.Minute, memory: time.Hour}
	calls := 0
	err := w.do(t.Context(), func(context.Context) error {
		if calls++; calls < 3 {
			return fmt.Errorf("site a: %w", errNoSiteLeader)
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("an election of two calls: %v after %d calls, want nil after 3", err, calls)
	}

	refused := errors.New("400 Bad Request")
	calls = 0
	if err := w.do(t.Context(), func(context.Context) error { calls++; return refused }); !errors.Is(err, refused) || calls != 1 {
		t.Fatalf("a refusal: %v after %d calls, want it after 1", err, calls)
	}

	// A site that lost quorum: the wait runs out, and the next call asks
	// once.
	w.limit = 200 * time.Millisecond
	calls = 0
	if err := w.do(t.Context(), func(context.Context) error { calls++; return errNoSiteLeader }); !errors.Is(err, errNoSiteLeader) || calls < 2 {
		t.Fatalf("no leader at all: %v after %d calls, want errNoSiteLeader after 2 or more", err, calls)
	}
	calls = 0
	if err := w.do(t.Context(), func(context.Context) error { calls++; return errNoSiteLeader }); !errors.Is(err, errNoSiteLeader) || calls != 1 {
		t.Fatalf("after a wait ran out: %v after %d calls, want errNoSiteLeader after 1", err, calls)
	}
	w.memory = 0 // the memory passed: it waits again
	calls = 0
	if err := w.do(t.Context(), func(context.Context) error {
		if calls++; calls < 2 {
			return errNoSiteLeader
		}
		return nil
	}); err != nil || calls != 2 {
		t.Fatalf("after the memory passed: %v after %d calls, want nil after 2", err, calls)
	}

	// The caller giving up is not a wait that ran out.
	w = leaderWait{limit: time.Minute, memory: time.Hour}
	ctx, cancel := context.WithCancel(t.Context())
	calls = 0
	if err := w.do(ctx, func(context.Context) error {
		if calls++; calls == 2 {
			cancel()
		}
		return errNoSiteLeader
	}); !errors.Is(err, errNoSiteLeader) {
		t.Fatalf("a canceled caller: %v, want errNoSiteLeader", err)
	}
	if w.ranOut.Load() != 0 {
		t.Fatal("a canceled caller marked the site as having lost quorum")
	}
}
