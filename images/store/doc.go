// Package store is a node's content store for container images: blob files
// addressed by their digest under a directory, and the metadata that makes
// them an image cache (manifests, tags, repository links, referrers, pins,
// pull counts, access times) in a Badger database the node may share with
// other subsystems under a key prefix.
//
// Every blob is verified against its digest while it is written and becomes
// visible only once whole and verified (temp file, fsync, rename). Writes are
// single flight per digest: Begin hands one caller a Writer and every other
// reader of that digest follows the write as it arrives (Open), so a fetch can
// stream to its client and to the disk at once. A broken source is resumed
// from Writer.Offset with the next source. A disk quota evicts the least
// recently used blobs, never one that is pinned or open for reading.
//
// See DESIGN.md for the layout on disk, the metadata keys and the crash
// rules.
package store
