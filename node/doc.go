// Package node composes Outpost's subsystems into the daemon that runs on
// every host (`outpost node`): the Raft group and its object store, the
// admin API over HTTPS, the local control socket, self-registration and
// metrics. cmd/outpost only parses flags and calls Run.
package node
