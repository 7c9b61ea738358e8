// Package compaction compacts small Badger stores from one check a second
// (every 8 s while a store does not change) instead of Badger's compactor
// goroutines, each of which wakes twenty times
// a second whether or not there is anything to compact. On an idle edge host
// with three stores that was most of the process's wake-ups; on a store that
// stays small (a site node's Raft log, site state, image index) merging every
// level into one when any level is over its target costs about what Badger's
// own leveled compaction does. A store that grows with the fleet (the hub's)
// keeps Badger's compactors.
package compaction
