package node

import (
	"testing"
	"time"
)

// TestRefreshAgeKeepsRefreshesTogether: while no node's lastSeen is due
// the roster waits the whole interval; once one is, every node half way
// there is refreshed with it, so a site's refreshes become one batch.
func TestRefreshAgeKeepsRefreshesTogether(t *testing.T) {
	t.Parallel()
	now := time.Now()
	interval := time.Minute
	var c rosterCache
	c.m = map[string]rosterEntry{
		"a": {at: now.Add(-10 * time.Second)},
		"b": {at: now.Add(-40 * time.Second)},
		"c": {at: now.Add(-50 * time.Second)},
	}
	names := []string{"a", "b", "c"}
	if got := c.refreshAge(names, now, interval); got != interval {
		t.Fatalf("with none due: refresh past %s, want %s", got, interval)
	}
	c.m["d"] = rosterEntry{at: now.Add(-61 * time.Second)}
	got := c.refreshAge(append(names, "d"), now, interval)
	if got != interval/2 {
		t.Fatalf("with d due: refresh past %s, want %s", got, interval/2)
	}
	var refreshed []string
	for _, name := range []string{"a", "b", "c", "d"} {
		if !c.fresh(name, now, got) {
			refreshed = append(refreshed, name)
		}
	}
	if len(refreshed) != 3 || refreshed[0] != "b" {
		t.Fatalf("refreshed with d: %v, want b, c and d", refreshed)
	}
	// A node never written (a new leader's cache) is due.
	if got := c.refreshAge([]string{"a", "new"}, now, interval); got != interval/2 {
		t.Fatalf("with an unknown node: refresh past %s, want %s", got, interval/2)
	}
}
