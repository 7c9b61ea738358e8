package consensus

import (
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
)

// Collector returns the group's Prometheus metrics: Raft state, term,
// commit, applied and last index, write latency and store sizes. Register
// it once.
func (g *Group) Collector() prometheus.Collector {
	c := &collector{
		g: g,
		apply: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "outpost_raft_apply_duration_seconds",
			Help:    "Time from proposing a write to its application on the leader.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
	}
	g.store.observeApply = func(d time.Duration) { c.apply.Observe(d.Seconds()) }
	return c
}

var (
	descState   = prometheus.NewDesc("outpost_raft_state", "1 for the Raft state this member is in.", []string{"state"}, nil)
	descTerm    = prometheus.NewDesc("outpost_raft_term", "Current Raft term.", nil, nil)
	descCommit  = prometheus.NewDesc("outpost_raft_commit_index", "Raft commit index.", nil, nil)
	descApplied = prometheus.NewDesc("outpost_raft_applied_index", "Index of the last command applied to the state store.", nil, nil)
	descLast    = prometheus.NewDesc("outpost_raft_last_index", "Last index in the Raft log.", nil, nil)
	descPeers   = prometheus.NewDesc("outpost_raft_peers", "Servers in the Raft configuration.", nil, nil)
	descSize    = prometheus.NewDesc("outpost_store_size_bytes", "On-disk size of a Badger store.", []string{"store"}, nil)
)

type collector struct {
	g     *Group
	apply prometheus.Histogram
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descState, descTerm, descCommit, descApplied, descLast, descPeers, descSize} {
		ch <- d
	}
	c.apply.Describe(ch)
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := c.g.Status()
	for _, s := range []string{"Starting", raft.Follower.String(), raft.Candidate.String(), raft.Leader.String(), raft.Shutdown.String()} {
		v := 0.0
		if s == st.State {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(descState, prometheus.GaugeValue, v, s)
	}
	ch <- prometheus.MustNewConstMetric(descTerm, prometheus.GaugeValue, float64(st.Term))
	ch <- prometheus.MustNewConstMetric(descCommit, prometheus.GaugeValue, float64(st.CommitIndex))
	ch <- prometheus.MustNewConstMetric(descApplied, prometheus.GaugeValue, float64(st.AppliedIndex))
	ch <- prometheus.MustNewConstMetric(descLast, prometheus.GaugeValue, float64(st.LastIndex))
	ch <- prometheus.MustNewConstMetric(descPeers, prometheus.GaugeValue, float64(len(st.Peers)))
	lsm, vlog := c.g.st.db.Size()
	ch <- prometheus.MustNewConstMetric(descSize, prometheus.GaugeValue, float64(lsm+vlog), "state")
	if n, err := c.g.logs.Size(); err == nil {
		ch <- prometheus.MustNewConstMetric(descSize, prometheus.GaugeValue, float64(n), "log")
	}
	c.apply.Collect(ch)
}
