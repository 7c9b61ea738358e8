package control

import (
	"context"
	"testing"
	"time"
)

// TestStartGate: a report waits while its site's assignment is being
// prepared and goes on once it is ready; other sites do not wait. The
// guard's deadline only turns a hang into a failure.
func TestStartGate(t *testing.T) {
	t.Parallel()
	var g startGate
	guard, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	g.add([]string{"a", "b"})
	g.await(guard, "c", time.Hour)
	if guard.Err() != nil {
		t.Fatal("a site with nothing being prepared waited")
	}
	released := make(chan string, 2)
	for _, site := range []string{"a", "b"} {
		go func() { g.await(guard, site, time.Hour); released <- site }()
	}
	g.done("b")
	if site := <-released; site != "b" || guard.Err() != nil {
		t.Fatalf("released %s (guard %v), want b once its assignment is ready", site, guard.Err())
	}
	g.add([]string{"a"}) // a second task being started there
	g.done("a")
	select {
	case site := <-released:
		t.Fatalf("%s released while a second task is still being prepared there", site)
	default:
	}
	g.done("a")
	if site := <-released; site != "a" || guard.Err() != nil {
		t.Fatalf("released %s (guard %v), want a", site, guard.Err())
	}
}
