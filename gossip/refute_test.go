package gossip

import (
	"testing"
	"time"
)

// TestClearRefutedPings: a member this node holds suspect, though it is
// alive, answers clearRefuted's ping and is alive again; the probes that
// could also clear it are a minute apart here.
func TestClearRefutedPings(t *testing.T) {
	t.Parallel()
	nodes, _ := newPool(t, "refute", 2, func(c *Config) {
		c.ProbeInterval, c.ProbeTimeout = time.Minute, time.Second
	})
	a, b := nodes[0], nodes[1]
	name := b.Local().Name
	a.mu.Lock()
	a.members.suspect(name, time.Now().Add(-2*refuteGrace))
	a.mu.Unlock()
	if s := a.stateOf(name); s != Suspect {
		t.Fatalf("%s holds %s %s, want suspect", a.Local().Name, name, s)
	}
	a.mlMu.RLock()
	ml := a.ml
	a.mlMu.RUnlock()
	a.clearRefuted(ml)
	if s := a.stateOf(name); s != Alive {
		t.Fatalf("after the ping %s holds %s %s, want alive", a.Local().Name, name, s)
	}
}
