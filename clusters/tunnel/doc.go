// Package tunnel is the reverse tunnel of proxy clusters: an agent in the
// edge cluster dials the hub over QUIC (nothing at the edge listens),
// authenticates with the cluster token and reports how to reach its API
// server (CA, server name, credentials); the hub binds the cluster's API
// and platform ports and carries each TCP connection accepted on them over
// a QUIC stream of its own to the agent, which dials the edge service. TLS
// runs end to end: the tunnel moves bytes.
//
// Hub is the hub leader's side and implements clusters.Tunnels; Agent is the
// edge side, run by `outpost agent`. DESIGN.md says why it is built this
// way.
package tunnel
