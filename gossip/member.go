package gossip

import (
	"cmp"
	"fmt"
	"slices"
	"time"
)

// State is a member's state as this node sees it.
type State string

// The member states. See DESIGN.md for how each is detected.
const (
	// Alive: the member answers, or nothing says otherwise.
	Alive State = "alive"
	// Suspect: this node's failure detector got no ack from the member; it
	// is declared Dead unless it refutes the suspicion in time.
	Suspect State = "suspect"
	// Dead: the member was declared failed without announcing a leave.
	Dead State = "dead"
	// Left: the member announced that it was leaving, then left.
	Left State = "left"
)

// Member is a node of the site as this node sees it.
type Member struct {
	Meta
	// State is the member's state.
	State State
	// Addr is the member's gossip address, host:port.
	Addr string
	// Since is when the member entered State, by this node's clock.
	Since time.Time
}

// EventType says what changed about a member.
type EventType int

// The event types. They carry an Event prefix because Alive and Suspect
// name States.
const (
	// EventJoin: a member appeared, or came back after being Dead or Left.
	EventJoin EventType = iota + 1
	// EventLeave: a member is gone; its State says whether it Left or is
	// Dead.
	EventLeave
	// EventUpdate: a member's Meta changed.
	EventUpdate
	// EventSuspect: this node suspects that a member has failed.
	EventSuspect
	// EventAlive: a suspect member is alive again.
	EventAlive
)

// String returns the event type's name.
func (t EventType) String() string {
	switch t {
	case EventJoin:
		return "join"
	case EventLeave:
		return "leave"
	case EventUpdate:
		return "update"
	case EventSuspect:
		return "suspect"
	case EventAlive:
		return "alive"
	default:
		return fmt.Sprintf("EventType(%d)", int(t))
	}
}

// Event is a change of a member.
type Event struct {
	// Type is what changed.
	Type EventType
	// Member is the member after the change.
	Member Member
}

// table is the membership as this node sees it: the source of Members. It
// is fed by memberlist's callbacks and is not safe for concurrent use; the
// Gossip serialises calls with its mutex. Each method returns the events
// its change causes.
type table struct {
	self      string
	retention time.Duration
	members   map[string]*entry
	// suspects counts the members in state Suspect, so that the
	// once-a-second check for refuted suspicions costs nothing in a pool
	// that has none.
	suspects int
}

// entry is a member and whether it announced that it is leaving.
type entry struct {
	Member
	leaving bool
}

func newTable(self string, retention time.Duration) *table {
	return &table{self: self, retention: retention, members: make(map[string]*entry)}
}

// alive records that memberlist holds name alive with meta at addr: a join
// (new, or back from Dead or Left) or an update (meta changed).
func (t *table) alive(meta Meta, leaving bool, addr string, now time.Time) []Event {
	e, ok := t.members[meta.Name]
	if !ok || e.State == Dead || e.State == Left {
		e = &entry{Member: Member{Meta: meta, State: Alive, Addr: addr, Since: now}, leaving: leaving}
		t.members[meta.Name] = e
		return []Event{{Type: EventJoin, Member: e.export()}}
	}
	var evs []Event
	changed := !e.Meta.equal(meta)
	e.Meta, e.Addr, e.leaving = meta, addr, leaving
	if e.State == Suspect {
		e.State, e.Since = Alive, now
		t.suspects--
		evs = append(evs, Event{Type: EventAlive, Member: e.export()})
	}
	if changed {
		evs = append(evs, Event{Type: EventUpdate, Member: e.export()})
	}
	return evs
}

// gone records that memberlist declared name dead: Left if it had announced
// its leave, Dead otherwise.
func (t *table) gone(name string, now time.Time) []Event {
	e, ok := t.members[name]
	if !ok || e.State == Dead || e.State == Left {
		return nil
	}
	if e.State == Suspect {
		t.suspects--
	}
	e.State, e.Since = Dead, now
	if e.leaving {
		e.State = Left
	}
	return []Event{{Type: EventLeave, Member: e.export()}}
}

// suspect records that this node's probe of name failed.
func (t *table) suspect(name string, now time.Time) []Event {
	e, ok := t.members[name]
	if !ok || e.State != Alive || name == t.self {
		return nil
	}
	e.State, e.Since = Suspect, now
	t.suspects++
	return []Event{{Type: EventSuspect, Member: e.export()}}
}

// acked records that name answered a direct probe.
func (t *table) acked(name string, now time.Time) []Event {
	e, ok := t.members[name]
	if !ok || e.State != Suspect {
		return nil
	}
	e.State, e.Since = Alive, now
	t.suspects--
	return []Event{{Type: EventAlive, Member: e.export()}}
}

// suspectedBefore returns the address of each member suspected since
// before t, by name.
func (t *table) suspectedBefore(before time.Time) map[string]string {
	if t.suspects == 0 {
		return nil
	}
	out := map[string]string{}
	for name, e := range t.members {
		if e.State == Suspect && e.Since.Before(before) {
			out[name] = e.Addr
		}
	}
	return out
}

// prune forgets the members that have been Dead or Left for longer than the
// retention. The local member is never pruned.
func (t *table) prune(now time.Time) {
	for name, e := range t.members {
		if t.expired(name, e.State, e.Since, now) {
			delete(t.members, name)
		}
	}
}

// expired reports whether a member in state since then is past the
// retention: Dead or Left for longer, and not the local member.
func (t *table) expired(name string, state State, since, now time.Time) bool {
	return (state == Dead || state == Left) && name != t.self && now.Sub(since) > t.retention
}

// get returns a copy of the member called name.
func (t *table) get(name string) (Member, bool) {
	e, ok := t.members[name]
	if !ok {
		return Member{}, false
	}
	return e.export(), true
}

// list returns copies of all members, sorted by name.
func (t *table) list() []Member {
	out := make([]Member, 0, len(t.members))
	for _, e := range t.members {
		out = append(out, e.export())
	}
	slices.SortFunc(out, func(a, b Member) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// count returns how many members are in state s.
func (t *table) count(s State) int {
	n := 0
	for _, e := range t.members {
		if e.State == s {
			n++
		}
	}
	return n
}

// export returns a copy of the member that shares nothing with the table.
func (e *entry) export() Member {
	m := e.Member
	m.Meta = m.Meta.clone()
	return m
}
