package consensus

import (
	"github.com/hashicorp/raft"
)

// Status is a snapshot of this member's view of its Raft group.
type Status struct {
	ID           string `json:"id"`
	State        string `json:"state"`
	Leader       string `json:"leaderAddress"`
	LeaderID     string `json:"leader"`
	Term         uint64 `json:"term"`
	CommitIndex  uint64 `json:"commitIndex"`
	AppliedIndex uint64 `json:"appliedIndex"`
	LastIndex    uint64 `json:"lastIndex"`
	Peers        []Peer `json:"peers"`
}

// Peer is one server of the group's configuration.
type Peer struct {
	ID       string `json:"id"`
	Address  string `json:"address"`
	Suffrage string `json:"suffrage"`
}

// Status reports the group as this member sees it. Before Run starts Raft
// the state is "Starting".
func (g *Group) Status() Status {
	st := Status{ID: g.cfg.ID, State: "Starting", AppliedIndex: g.fsm.appliedIndex()}
	r := g.raft.Load()
	if r == nil {
		return st
	}
	st.State = r.State().String()
	addr, id := r.LeaderWithID()
	st.Leader, st.LeaderID = string(addr), string(id)
	st.Term = r.CurrentTerm()
	st.CommitIndex = r.CommitIndex()
	st.LastIndex = r.LastIndex()
	if cf := r.GetConfiguration(); cf.Error() == nil {
		for _, s := range cf.Configuration().Servers {
			st.Peers = append(st.Peers, Peer{ID: string(s.ID), Address: string(s.Address), Suffrage: s.Suffrage.String()})
		}
	}
	return st
}

// IsLeader reports whether this member leads its group.
func (g *Group) IsLeader() bool {
	r := g.raft.Load()
	return r != nil && r.State() == raft.Leader
}
