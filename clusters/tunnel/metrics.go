package tunnel

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// hubCounters are the hub's counters since NewHub, per target.
type hubCounters struct {
	carried  [3]atomic.Uint64 // connections carried to the agent, by Target
	refused  [3]atomic.Uint64 // connections closed for want of an agent or a stream
	active   [3]atomic.Int64  // connections being carried
	up, down [3]atomic.Uint64 // bytes client → edge and edge → client
	agentsIn atomic.Uint64    // agent sessions accepted
}

// of returns the index of a Target in the counters (0 for an unknown one).
func of(t Target) int {
	if t == TargetKubeAPI || t == TargetPlatformAPI {
		return int(t)
	}
	return 0
}

// HubStats is a snapshot of a Hub's tunnels and counters.
type HubStats struct {
	// Agents is how many clusters have an agent connected; Bound how many
	// have their ports bound.
	Agents, Bound int
	// AgentSessions counts agent sessions accepted since the hub started.
	AgentSessions uint64
	// Targets holds the counters of each target by its name (kube-api,
	// platform-api).
	Targets map[string]TargetStats
}

// TargetStats counts the connections of one target.
type TargetStats struct {
	// Carried counts connections sent through an agent, Refused those
	// closed because no agent was connected or it opened no stream, Active
	// those being carried now.
	Carried, Refused uint64
	Active           int64
	// BytesUp went from clients to the edge, BytesDown back.
	BytesUp, BytesDown uint64
}

// Stats returns the hub's current tunnels and counters.
func (h *Hub) Stats() HubStats {
	h.mu.Lock()
	st := HubStats{Agents: len(h.agents), Bound: len(h.bindings), Targets: map[string]TargetStats{}}
	h.mu.Unlock()
	st.AgentSessions = h.n.agentsIn.Load()
	for _, t := range []Target{TargetKubeAPI, TargetPlatformAPI} {
		i := of(t)
		st.Targets[t.String()] = TargetStats{
			Carried: h.n.carried[i].Load(), Refused: h.n.refused[i].Load(), Active: h.n.active[i].Load(),
			BytesUp: h.n.up[i].Load(), BytesDown: h.n.down[i].Load(),
		}
	}
	return st
}

var (
	descAgents   = prometheus.NewDesc("outpost_tunnel_agents", "Clusters whose tunnel agent is connected to this hub member.", nil, nil)
	descBound    = prometheus.NewDesc("outpost_tunnel_bound_clusters", "Clusters whose tunnel ports are bound on this hub member.", nil, nil)
	descSessions = prometheus.NewDesc("outpost_tunnel_agent_sessions_total", "Tunnel agent sessions accepted.", nil, nil)
	descCarried  = prometheus.NewDesc("outpost_tunnel_connections_total", "Connections carried through a tunnel agent.", []string{"target"}, nil)
	descRefused  = prometheus.NewDesc("outpost_tunnel_connections_refused_total", "Connections closed because no agent was connected or it opened no stream.", []string{"target"}, nil)
	descActive   = prometheus.NewDesc("outpost_tunnel_connections_active", "Connections being carried through a tunnel agent.", []string{"target"}, nil)
	descBytes    = prometheus.NewDesc("outpost_tunnel_bytes_total", "Bytes carried through tunnels, by direction (up: client to edge).", []string{"target", "direction"}, nil)
)

// Collector returns the hub's Prometheus metrics. Register it once.
func (h *Hub) Collector() prometheus.Collector { return collector{h} }

type collector struct{ h *Hub }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descAgents, descBound, descSessions, descCarried, descRefused, descActive, descBytes} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	st := c.h.Stats()
	ch <- prometheus.MustNewConstMetric(descAgents, prometheus.GaugeValue, float64(st.Agents))
	ch <- prometheus.MustNewConstMetric(descBound, prometheus.GaugeValue, float64(st.Bound))
	ch <- prometheus.MustNewConstMetric(descSessions, prometheus.CounterValue, float64(st.AgentSessions))
	for name, t := range st.Targets {
		ch <- prometheus.MustNewConstMetric(descCarried, prometheus.CounterValue, float64(t.Carried), name)
		ch <- prometheus.MustNewConstMetric(descRefused, prometheus.CounterValue, float64(t.Refused), name)
		ch <- prometheus.MustNewConstMetric(descActive, prometheus.GaugeValue, float64(t.Active), name)
		ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(t.BytesUp), name, "up")
		ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(t.BytesDown), name, "down")
	}
}
