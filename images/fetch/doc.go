// Package fetch is the layered fetch chain behind a node's image mirror: a
// registry.Source that answers from the node's store and, on a miss, from
// a site peer that holds the content, then the hub's tier, then the origin
// registry.
//
// Every blob is written once per node through the store's single-flight
// Writer and verified against its digest before it is kept; clients are
// served while the bytes arrive; a broken source is resumed at the
// Writer's offset by the next one; a source that serves wrong bytes is
// reported (Config.OnCorrupt) and the blob fetched again from the next.
// Tags are resolved upstream with a short cache and fall back, when no
// upstream answers, to the digest the site last agreed on.
//
// Tier is the interface every source implements: HTTPTier speaks the OCI
// pull API to another Outpost node (a peer, the hub), Origin speaks it to
// the origin registry through go-containerregistry. See DESIGN.md.
package fetch
