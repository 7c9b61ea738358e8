// Package control moves OTA tasks through the mesh: the hub's controller
// resolves a Task's targets, creates one DeviceResult per device, hands each
// site its assignment and keeps the counts; a site's dispatcher records the
// assignment in site Raft and runs devices within the concurrency windows on
// the node agents; results flow back the same way. The transport between
// them (the hub link, node RPC) is the node package's: this package sees it
// through small interfaces.
package control
