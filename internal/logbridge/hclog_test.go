package logbridge

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestHCLogLevels(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	l := HCLog(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})))
	l.Info("raft chatter")
	l.Warn("raft warning", "peer", "n2")
	l.Named("snapshot").Error("raft error")
	out := buf.String()
	if strings.Contains(out, "raft chatter") {
		t.Error("hclog Info reached an Info-level handler; it should be Debug")
	}
	if !strings.Contains(out, "level=WARN") || !strings.Contains(out, "peer=n2") {
		t.Errorf("warning missing or without its attributes: %s", out)
	}
	if !strings.Contains(out, "logger=snapshot") || !strings.Contains(out, "level=ERROR") {
		t.Errorf("named error missing: %s", out)
	}
	if l.IsDebug() || !l.IsWarn() {
		t.Error("level queries do not follow the handler")
	}
}
