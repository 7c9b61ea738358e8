// Package logbridge routes the logs of libraries that bring their own logger
// (hashicorp/raft's hclog, memberlist's *log.Logger, Badger's logger) into
// the daemon's log/slog handler, so that every line has the same format and
// level filter.
package logbridge
