package gossip

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"testing"
)

// levelRecorder keeps the level and message of each record.
type levelRecorder struct {
	mu   sync.Mutex
	recs []string
}

func (r *levelRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *levelRecorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = append(r.recs, rec.Level.String()+" "+rec.Message)
	return nil
}
func (r *levelRecorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *levelRecorder) WithGroup(string) slog.Handler      { return r }

func TestLogBridge(t *testing.T) {
	t.Parallel()
	rec := &levelRecorder{}
	var suspects []string
	lg := newMemberlistLogger(&logWriter{
		log:       slog.New(rec),
		onSuspect: func(n string) { suspects = append(suspects, n) },
	})
	lg.Printf("[DEBUG] memberlist: Stream connection from=127.0.0.1:1")
	lg.Printf("[INFO] memberlist: Suspect edge-2 has failed, no acks received")
	lg.Printf("[WARN] memberlist: Refuting a suspect message (from: edge-1)")
	lg.Printf("[ERR] memberlist: Failed to send gossip to 127.0.0.1:2: boom")
	lg.Printf("[ERR] Failed to shutdown transport: boom")
	lg.Printf("Err: Could not set the deadline: boom")
	lg.Printf("[WEIRD] memberlist: odd")
	lg.Printf("[INFO] memberlist: Suspect  has failed, no acks received")
	lg.Print("two\nlines")

	want := []string{
		"DEBUG Stream connection from=127.0.0.1:1",
		"INFO Suspect edge-2 has failed, no acks received",
		"WARN Refuting a suspect message (from: edge-1)",
		"ERROR Failed to send gossip to 127.0.0.1:2: boom",
		"ERROR Failed to shutdown transport: boom",
		"INFO Err: Could not set the deadline: boom",
		"INFO [WEIRD] memberlist: odd",
		"INFO Suspect  has failed, no acks received",
		"INFO two",
		"INFO lines",
	}
	if !slices.Equal(rec.recs, want) {
		t.Errorf("records:\n%q\nwant:\n%q", rec.recs, want)
	}
	if !slices.Equal(suspects, []string{"edge-2"}) {
		t.Errorf("suspects %v, want [edge-2]", suspects)
	}
}

// TestLogBridgeClosed: once the pool has stopped, memberlist's late lines
// (a probe that ends after Shutdown) are dropped, suspects included.
func TestLogBridgeClosed(t *testing.T) {
	t.Parallel()
	rec := &levelRecorder{}
	suspects := 0
	w := &logWriter{log: slog.New(rec), onSuspect: func(string) { suspects++ }}
	lg := newMemberlistLogger(w)
	lg.Printf("[WARN] memberlist: before")
	w.close()
	lg.Printf("[INFO] memberlist: Suspect edge-2 has failed, no acks received")
	if !slices.Equal(rec.recs, []string{"WARN before"}) || suspects != 0 {
		t.Fatalf("records %q, %d suspects; want only the line before close", rec.recs, suspects)
	}
}
