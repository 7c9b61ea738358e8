package node

import (
	"testing"
	"time"

	"github.com/outpost-mesh/outpost/gossip"
)

// A member is pinged warmPings times, at least warmSpacing apart, and
// from the start again at a new address; never while a ping is out.
func TestWarmerPingsEachMemberWarmPingsTimes(t *testing.T) {
	w := &memberWarmer{reached: map[string]warmth{}, busy: map[string]bool{}}
	m := gossip.Member{Meta: gossip.Meta{Name: "s1-n01", Site: "s1", QUICAddr: "10.0.0.2:7443"}, State: gossip.Alive}
	now := time.Unix(1000, 0)
	pings := 0
	for range 100 {
		now = now.Add(time.Second)
		wm, due := w.due(m, now)
		if !due {
			continue
		}
		if pings > 0 && now.Sub(w.reached[m.Name].at) < warmSpacing {
			t.Fatalf("ping %d %s after the one before, want at least %s", pings+1, now.Sub(w.reached[m.Name].at), warmSpacing)
		}
		w.busy[m.Name] = true
		if _, again := w.due(m, now.Add(time.Hour)); again {
			t.Fatal("a ping is due while one is out")
		}
		delete(w.busy, m.Name)
		wm.pings, wm.at = wm.pings+1, now
		w.reached[m.Name] = wm
		pings++
	}
	if pings != warmPings {
		t.Fatalf("%d pings in 100 s, want %d", pings, warmPings)
	}
	m.QUICAddr = "10.0.0.3:7443"
	if wm, due := w.due(m, now); !due || wm.pings != 0 {
		t.Fatalf("at a new address: due %v after %d pings, want due from the start", due, wm.pings)
	}
}
