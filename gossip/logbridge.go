package gossip

import (
	"bytes"
	"context"
	"log"
	"log/slog"
	"strings"
	"sync"
)

// memberlist logs through a *log.Logger, one Printf a line, in the form
// "[LEVEL] memberlist: message". logWriter is that logger's output: it turns
// each line into a slog record at the matching level (DEBUG at Debug, INFO at
// Info, WARN at Warn, ERR at Error), without the prefix.
//
// It also watches for the one line that reports a failure-detector verdict
// memberlist offers no callback for: "Suspect <node> has failed, no acks
// received", printed by a node's prober just before it marks <node>
// suspect. See DESIGN.md.
type logWriter struct {
	log *slog.Logger
	// onSuspect is called with the node name of each suspect line; it must
	// not call into memberlist.
	onSuspect func(node string)

	// mu orders writes before close: memberlist's prober can finish a
	// probe, and log it, after Shutdown has returned; once the pool is
	// stopped its lines are dropped, not written to a logger whose owner
	// (a test's output) may be gone.
	mu     sync.RWMutex
	closed bool
}

// close drops every line written from now on, once the writes under way
// have ended.
func (w *logWriter) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
}

// newMemberlistLogger returns the *log.Logger to give memberlist.
func newMemberlistLogger(w *logWriter) *log.Logger {
	return log.New(w, "", 0)
}

// Write logs each line of p. It never fails.
func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		return len(p), nil
	}
	for line := range bytes.Lines(p) {
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			continue
		}
		level, msg := parseMemberlistLine(string(line))
		w.log.Log(context.Background(), level, msg)
		if node, ok := suspectedNode(msg); ok && w.onSuspect != nil {
			w.onSuspect(node)
		}
	}
	return len(p), nil
}

// parseMemberlistLine splits a memberlist log line into its level and its
// message. A line without a known level is logged at Info, whole.
func parseMemberlistLine(line string) (slog.Level, string) {
	rest, ok := strings.CutPrefix(line, "[")
	if !ok {
		return slog.LevelInfo, line
	}
	tag, msg, ok := strings.Cut(rest, "] ")
	if !ok {
		return slog.LevelInfo, line
	}
	var level slog.Level
	switch tag {
	case "TRACE", "DEBUG":
		level = slog.LevelDebug
	case "INFO":
		level = slog.LevelInfo
	case "WARN":
		level = slog.LevelWarn
	case "ERR", "ERROR":
		level = slog.LevelError
	default:
		return slog.LevelInfo, line
	}
	msg = strings.TrimPrefix(msg, "memberlist: ")
	return level, msg
}

// suspectedNode returns the node named by memberlist's "Suspect <node> has
// failed, no acks received" message.
func suspectedNode(msg string) (string, bool) {
	rest, ok := strings.CutPrefix(msg, "Suspect ")
	if !ok {
		return "", false
	}
	node, ok := strings.CutSuffix(rest, " has failed, no acks received")
	if !ok || node == "" {
		return "", false
	}
	return node, true
}
