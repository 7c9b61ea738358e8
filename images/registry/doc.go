// Package registry serves the OCI distribution API over HTTP: the pull
// endpoints every node's local mirror answers containerd and Docker with,
// and, behind an option, the push and content-management endpoints of the
// hub's own registry.
//
// Reads go through a Source: the node's fetch chain (store, site peer, hub
// tier, origin) or, for a registry that holds its own content, the Store
// Source over images/store. Every request names the upstream registry it
// is for in containerd's ?ns=<host> query parameter; a request without one
// is for Config.DefaultNamespace. Pushes land in images/store through its
// verified writer.
//
// See DESIGN.md for the routing, the Source contract and the error
// mapping.
package registry
