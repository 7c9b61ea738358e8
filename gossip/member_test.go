package gossip

import (
	"maps"
	"slices"
	"testing"
	"time"
)

// step is one input to the member table and the events it must cause.
type step struct {
	do   func(tb *table, now time.Time) []Event
	want []string // "type/state" of each event
}

func aliveStep(name, version string, leaving bool, want ...string) step {
	return step{
		do: func(tb *table, now time.Time) []Event {
			return tb.alive(Meta{Name: name, Site: "s", Version: version}, leaving, "127.0.0.1:1", now)
		},
		want: want,
	}
}

func goneStep(name string, want ...string) step {
	return step{do: func(tb *table, now time.Time) []Event { return tb.gone(name, now) }, want: want}
}

func suspectStep(name string, want ...string) step {
	return step{do: func(tb *table, now time.Time) []Event { return tb.suspect(name, now) }, want: want}
}

func ackStep(name string, want ...string) step {
	return step{do: func(tb *table, now time.Time) []Event { return tb.acked(name, now) }, want: want}
}

func TestTableTransitions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		steps []step
		final State
	}{
		{"join", []step{aliveStep("b", "1", false, "join/alive")}, Alive},
		{"update", []step{
			aliveStep("b", "1", false, "join/alive"),
			aliveStep("b", "1", false),
			aliveStep("b", "2", false, "update/alive"),
		}, Alive},
		{"crash", []step{
			aliveStep("b", "1", false, "join/alive"),
			suspectStep("b", "suspect/suspect"),
			suspectStep("b"),
			goneStep("b", "leave/dead"),
			goneStep("b"),
		}, Dead},
		{"dead without suspicion", []step{
			aliveStep("b", "1", false, "join/alive"),
			goneStep("b", "leave/dead"),
		}, Dead},
		{"graceful leave", []step{
			aliveStep("b", "1", false, "join/alive"),
			aliveStep("b", "1", true), // the leaving flag alone is no update
			goneStep("b", "leave/left"),
		}, Left},
		{"suspect refuted by ack", []step{
			aliveStep("b", "1", false, "join/alive"),
			suspectStep("b", "suspect/suspect"),
			ackStep("b", "alive/alive"),
			ackStep("b"),
		}, Alive},
		{"suspect refuted by update", []step{
			aliveStep("b", "1", false, "join/alive"),
			suspectStep("b", "suspect/suspect"),
			aliveStep("b", "2", false, "alive/alive", "update/alive"),
		}, Alive},
		{"rejoin after leave", []step{
			aliveStep("b", "1", true, "join/alive"),
			goneStep("b", "leave/left"),
			aliveStep("b", "1", false, "join/alive"),
			goneStep("b", "leave/dead"), // the new incarnation did not announce a leave
		}, Dead},
		{"unknown members", []step{
			goneStep("x"), suspectStep("x"), ackStep("x"),
		}, ""},
		{"never suspect self", []step{
			aliveStep("self", "1", false, "join/alive"),
			suspectStep("self"),
		}, Alive},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tb := newTable("self", time.Hour)
			now := time.Unix(1000, 0)
			for i, s := range tc.steps {
				now = now.Add(time.Second)
				var got []string
				for _, ev := range s.do(tb, now) {
					got = append(got, ev.Type.String()+"/"+string(ev.Member.State))
					if ev.Member.Since.After(now) {
						t.Errorf("step %d: Since %v after now %v", i, ev.Member.Since, now)
					}
				}
				if !slices.Equal(got, s.want) {
					t.Errorf("step %d: events %v, want %v", i, got, s.want)
				}
			}
			name := "b"
			if tc.name == "never suspect self" {
				name = "self"
			}
			m, _ := tb.get(name)
			if m.State != tc.final {
				t.Errorf("final state %q, want %q", m.State, tc.final)
			}
		})
	}
}

func TestTableSinceAndPrune(t *testing.T) {
	t.Parallel()
	tb := newTable("self", time.Hour)
	t0 := time.Unix(1000, 0)
	tb.alive(Meta{Name: "self"}, false, "", t0)
	tb.alive(Meta{Name: "a"}, false, "", t0)
	tb.alive(Meta{Name: "b"}, false, "", t0)
	tb.alive(Meta{Name: "c"}, false, "", t0)
	tb.alive(Meta{Name: "a"}, false, "", t0.Add(time.Minute)) // no change: Since stays
	if m, _ := tb.get("a"); !m.Since.Equal(t0) {
		t.Errorf("an unchanged member's Since moved to %v", m.Since)
	}
	tb.gone("b", t0.Add(time.Minute))
	tb.gone("self", t0.Add(time.Minute))
	tb.prune(t0.Add(time.Minute + time.Hour))
	if got := names(tb.list()); got != "a=alive,b=dead,c=alive,self=dead" {
		t.Errorf("at the retention: %s", got)
	}
	tb.prune(t0.Add(time.Minute + time.Hour + time.Nanosecond))
	if got := names(tb.list()); got != "a=alive,c=alive,self=dead" {
		t.Errorf("past the retention: %s", got)
	}
	if got := tb.count(Alive); got != 2 {
		t.Errorf("count(Alive) = %d", got)
	}
}

func TestEventsDropOldest(t *testing.T) {
	t.Parallel()
	cfg := testConfig("drop", "s", make([]byte, KeySize))
	cfg.EventBuffer = 2
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	g.mu.Lock()
	for i := range 5 {
		g.emitLocked([]Event{{Type: EventUpdate, Member: Member{Meta: Meta{Name: string(rune('a' + i))}}}})
	}
	g.mu.Unlock()
	if got := g.Dropped(); got != 3 {
		t.Errorf("Dropped() = %d, want 3", got)
	}
	var got []string
	for range 2 {
		got = append(got, (<-g.Events()).Member.Name)
	}
	if !slices.Equal(got, []string{"d", "e"}) {
		t.Errorf("kept %v, want the newest, [d e]", got)
	}
	g.closeEvents()
	g.mu.Lock()
	g.emitLocked([]Event{{Type: EventUpdate}}) // after close: dropped silently, no panic
	g.mu.Unlock()
	if _, open := <-g.Events(); open {
		t.Error("Events() still open")
	}
}

func TestEventTypeString(t *testing.T) {
	t.Parallel()
	for typ, want := range map[EventType]string{
		EventJoin: "join", EventLeave: "leave", EventUpdate: "update",
		EventSuspect: "suspect", EventAlive: "alive", 0: "EventType(0)",
	} {
		if got := typ.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", int(typ), got, want)
		}
	}
}

// TestTableRefuted checks that a suspicion memberlist no longer holds is
// cleared, but not in the moment between memberlist's log line and its
// own suspect mark.
func TestTableSuspectedBefore(t *testing.T) {
	t.Parallel()
	tb := newTable("self", time.Hour)
	t0 := time.Unix(1000, 0)
	tb.alive(Meta{Name: "a"}, false, "127.0.0.1:1", t0)
	tb.alive(Meta{Name: "b"}, false, "127.0.0.1:2", t0)
	if got := tb.suspectedBefore(t0.Add(time.Hour)); len(got) != 0 {
		t.Errorf("suspects with none suspected: %v", got)
	}
	tb.suspect("a", t0)
	tb.suspect("b", t0.Add(2*time.Second))
	if got := tb.suspectedBefore(t0.Add(time.Second)); !maps.Equal(got, map[string]string{"a": "127.0.0.1:1"}) {
		t.Errorf("suspected before t0+1s: %v, want a only", got)
	}
	tb.acked("a", t0.Add(3*time.Second))
	if got := tb.suspectedBefore(t0.Add(time.Hour)); !maps.Equal(got, map[string]string{"b": "127.0.0.1:2"}) {
		t.Errorf("after a answered: %v, want b only", got)
	}
}
