package ota

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// TestJSONLenIsEncodingJSONs: jsonLen counts what encoding/json writes
// for a string, escapes and invalid UTF-8 included.
func TestJSONLenIsEncodingJSONs(t *testing.T) {
	t.Parallel()
	for _, s := range []string{
		"", "plain", `quote " and \ backslash`, "tab\tnew\nline\rret", "\x00\x01\x1f ctl",
		"<html> & co", "é ü 日本 🙂", "line\u2028sep\u2029para", "bad \xff\xfe utf8 \xc3", "\xe6\x97",
	} {
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := jsonLen(s), len(b)-2; got != want {
			t.Errorf("jsonLen(%q) = %d, want %d (%s)", s, got, want, b)
		}
	}
}

// TestFitTrimsOutputsToTheBudget: a device whose 64 exec steps kept their
// full heads and tails is over the budget; fitted, it is under, each
// output a shorter head and tail of the same stream (its start and end,
// whole runes), marked truncated with its total kept.
func TestFitTrimsOutputsToTheBudget(t *testing.T) {
	t.Parallel()
	head := strings.Repeat("héllo wörld ", OutputLimit/10)[:OutputLimit-1] // ends inside a rune
	tail := strings.Repeat("日本語 <tail> ", OutputLimit/18)
	st := DeviceResultStatus{Phase: DeviceSucceeded}
	for range MaxSteps {
		out := Output{Head: head, Tail: tail, TotalBytes: 1 << 20, Truncated: true}
		short := Output{Head: "just this", TotalBytes: 9}
		st.Steps = append(st.Steps, StepResult{Name: "s", Type: StepExec, Phase: StepSucceeded, Stdout: out, Stderr: short})
	}
	if !st.Fit() {
		t.Fatal("Fit left a result over its budget alone")
	}
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > ResultBudget || st.SizeBound() < len(b) {
		t.Fatalf("fitted: %d bytes encoded (bound %d), want at most %d and the bound at least that", len(b), st.SizeBound(), ResultBudget)
	}
	for i, r := range st.Steps {
		o := r.Stdout
		if !o.Truncated || o.TotalBytes != 1<<20 || o.Head == "" || o.Tail == "" ||
			!strings.HasPrefix(head, o.Head) || !strings.HasSuffix(tail, o.Tail) || !utf8.ValidString(o.Head) || !utf8.ValidString(o.Tail) {
			t.Fatalf("step %d stdout: head %d bytes, tail %d, truncated %v, total %d: want a shorter valid head and tail of the stream", i, len(o.Head), len(o.Tail), o.Truncated, o.TotalBytes)
		}
		if r.Stderr.Head != "just this" || r.Stderr.Truncated {
			t.Fatalf("step %d stderr %+v: a short stream must stay whole", i, r.Stderr)
		}
	}

	// A stream that fit in its head keeps its end as the tail.
	o := Output{Head: "0123456789", TotalBytes: 10}
	o.shrink(3)
	if o.Head != "012" || o.Tail != "789" || !o.Truncated {
		t.Fatalf("shrunk to 3: %+v, want head 012, tail 789, truncated", o)
	}
	o = Output{Head: "012345", TotalBytes: 6}
	o.shrink(3)
	if o.Head != "012" || o.Tail != "345" || o.Truncated {
		t.Fatalf("shrunk to 3: %+v, want head 012, tail 345, the whole stream", o)
	}
}

// TestFitOmitsReadsLastFirst: reads that together pass the budget keep
// the first contents and leave out the last ones; a small result is left
// alone.
func TestFitOmitsReadsLastFirst(t *testing.T) {
	t.Parallel()
	content := base64.StdEncoding.EncodeToString(make([]byte, MaxReadBytes))
	st := DeviceResultStatus{Phase: DeviceSucceeded}
	for range 3 {
		st.Steps = append(st.Steps, StepResult{Name: "r", Type: StepRead, Phase: StepSucceeded,
			Read: &ReadResult{Content: content, Encoding: EncodingBase64, Size: MaxReadBytes, SHA256: strings.Repeat("a", 64)}})
	}
	small := st
	small.Steps = small.Steps[:1]
	if small.Fit() || small.Steps[0].Read.Content != content {
		t.Fatal("Fit trimmed a result within its budget")
	}
	if !st.Fit() {
		t.Fatal("Fit left a result over its budget alone")
	}
	var kept []bool
	for _, r := range st.Steps {
		kept = append(kept, r.Read.Content != "")
		if r.Read.Omitted == (r.Read.Content != "") || r.Read.Size != MaxReadBytes {
			t.Fatalf("read %+v: omitted must say the content was left out, the size stay", r.Read.Omitted)
		}
	}
	if !kept[0] || kept[2] {
		t.Fatalf("contents kept %v: want the first kept and the last left out", kept)
	}
	if b, _ := json.Marshal(st); len(b) > ResultBudget {
		t.Fatalf("fitted: %d bytes encoded, want at most %d", len(b), ResultBudget)
	}
}
