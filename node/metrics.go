package node

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metricsHandler serves the node's Prometheus metrics.
func (n *Node) metricsHandler() http.Handler {
	return promhttp.HandlerFor(n.reg, promhttp.HandlerOpts{ErrorLog: nil})
}

// transportCollectors are the node's transport metrics.
func (n *Node) transportCollectors() []prometheus.Collector {
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "outpost_transport_connections",
			Help: "Open QUIC connections, dialed and accepted.",
		}, func() float64 { return float64(n.ep.ConnectionCount()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "outpost_transport_revoked_connections_closed_total",
			Help: "QUIC connections closed because their peer was revoked.",
		}, func() float64 { return float64(n.revokedConns.Load()) }),
	}
}
