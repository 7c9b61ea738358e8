// Package gossip keeps a site's membership: one hashicorp/memberlist pool per
// site, encrypted with the site's 32-byte key, in which every node gossips a
// small Meta (name, site, role, version, platform, labels, QUIC and API
// addresses, whether it is a Raft voter).
//
// A Gossip is built with New and run with Run. It reports the members it
// knows, including suspect and recently dead or left ones, through Members
// and Local, and their changes through Events. See DESIGN.md for the member
// states, the event policy and how keys are handled.
package gossip
