package main

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/outpost-mesh/outpost/ota"
)

// TestPrintGrouped: devices with the same outcome share a group, the
// largest first; a group names its first groupNames devices and counts
// the rest, unless all.
func TestPrintGrouped(t *testing.T) {
	t.Parallel()
	var items []resultObject
	for i := range groupNames + 5 {
		it := resultObject{Spec: ota.DeviceResultSpec{Task: "t", Node: fmt.Sprintf("n%02d", i)}}
		it.Status.Phase = ota.DeviceSucceeded
		items = append(items, it)
	}
	failed := resultObject{Spec: ota.DeviceResultSpec{Task: "t", Node: "bad"}}
	failed.Status.Phase, failed.Status.Reason, failed.Status.Message = ota.DeviceUnreachable, "Offline", "not alive in gossip"
	items = append(items, failed)

	var short, long bytes.Buffer
	printGrouped(&short, items, false)
	printGrouped(&long, items, true)
	lines := strings.Split(strings.TrimSpace(short.String()), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "Succeeded") || !strings.Contains(lines[0], fmt.Sprint(groupNames+5)) || !strings.HasPrefix(lines[2], "Unreachable") {
		t.Fatalf("groups:\n%s", short.String())
	}
	if !strings.HasSuffix(lines[1], fmt.Sprintf("n%02d and 5 more (--all names them)", groupNames-1)) || strings.Contains(lines[1], fmt.Sprintf("n%02d,", groupNames)) {
		t.Errorf("a large group names its first %d devices and counts the rest:\n%s", groupNames, lines[1])
	}
	if !strings.Contains(lines[3], "bad") || !strings.Contains(lines[2], "Offline: not alive in gossip") {
		t.Errorf("the unreachable group:\n%s\n%s", lines[2], lines[3])
	}
	if all := long.String(); !strings.Contains(all, fmt.Sprintf("n%02d\n", groupNames+4)) || strings.Contains(all, "more") {
		t.Errorf("--all names every device:\n%s", all)
	}
}

// TestOutcomeOfSucceeded: a succeeded device's summary counts its steps
// in words that fit one step or several.
func TestOutcomeOfSucceeded(t *testing.T) {
	t.Parallel()
	steps := func(phases ...ota.StepPhase) *ota.DeviceResultStatus {
		st := &ota.DeviceResultStatus{Phase: ota.DeviceSucceeded}
		for i, p := range phases {
			r := ota.StepResult{Name: fmt.Sprintf("s%d", i+1), Phase: p}
			if p == ota.StepFailed {
				code := 3
				r.ExitCode, r.Reason = &code, "ExitCode"
			}
			st.Steps = append(st.Steps, r)
		}
		return st
	}
	blobGone := steps(ota.StepFailed, ota.StepSucceeded, ota.StepFailed)
	blobGone.Steps[2].ExitCode, blobGone.Steps[2].Reason = nil, "BlobUnavailable"
	for _, tc := range []struct {
		st   *ota.DeviceResultStatus
		want string
	}{
		{steps(ota.StepSucceeded), "its step succeeded"},
		{steps(ota.StepSucceeded, ota.StepSucceeded, ota.StepSucceeded), "all 3 steps succeeded"},
		{steps(ota.StepSucceeded, ota.StepFailed), "1 step succeeded, 1 failed with continueOnError: s2 (exit 3)"},
		{steps(ota.StepSucceeded, ota.StepSucceeded, ota.StepFailed), "2 steps succeeded, 1 failed with continueOnError: s3 (exit 3)"},
		{blobGone, "1 step succeeded, 2 failed with continueOnError: s1 (exit 3), s3 (BlobUnavailable)"},
	} {
		if got := outcome(tc.st); got != tc.want {
			t.Errorf("%d steps: %q, want %q", len(tc.st.Steps), got, tc.want)
		}
	}
}

// TestRenderProgressNamesCutOffSites: a site not connected to the hub
// whose devices are not all finished says so on its line; one that has
// finished, or is connected, does not; targets not found are named.
func TestRenderProgressNamesCutOffSites(t *testing.T) {
	t.Parallel()
	var task taskObject
	task.Metadata.Name = "t"
	task.Status.Phase = ota.TaskRunning
	task.Status.Counts = ota.Counts{Total: 5, Succeeded: 3, Queued: 2}
	task.Status.Sites = map[string]ota.Counts{
		"a": {Total: 2, Queued: 2},
		"b": {Total: 2, Succeeded: 2},
		"c": {Total: 1, Succeeded: 1},
	}
	task.Status.NotFound = &ota.NotFound{Nodes: []string{"ghost"}}
	seen := metav1.NewTime(time.Date(2026, 11, 28, 10, 2, 11, 0, time.Local))
	out := renderProgress(&task, map[string]*metav1.Time{"a": &seen, "b": nil}, 0, false)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 5 {
		t.Fatalf("want 5 lines:\n%s", out)
	}
	if want := "not connected to the hub since 10:02:11"; !strings.Contains(lines[2], want) {
		t.Errorf("site a's line %q lacks %q", lines[2], want)
	}
	for _, l := range lines[3:] {
		if strings.Contains(l, "not connected") {
			t.Errorf("a finished or connected site is said to be cut off: %q", l)
		}
	}
	if lines[1] != "  not found, not run: node ghost" {
		t.Errorf("not-found line %q", lines[1])
	}
}

// TestRenderProgressCapsSites: with more sites than lines, the sites
// still running or with failures are shown and the rest summed up, so a
// task on a hundred sites does not print a hundred lines a refresh.
func TestRenderProgressCapsSites(t *testing.T) {
	t.Parallel()
	var task taskObject
	task.Metadata.Name = "t"
	task.Status.Phase = ota.TaskRunning
	task.Status.Sites = map[string]ota.Counts{}
	for i := range 100 {
		task.Status.Sites[fmt.Sprintf("s%03d", i)] = ota.Counts{Total: 100, Succeeded: 100}
	}
	task.Status.Sites["s050"] = ota.Counts{Total: 100, Succeeded: 60, Running: 40}
	task.Status.Sites["s090"] = ota.Counts{Total: 100, Succeeded: 99, Failed: 1}
	task.Status.Sites["s095"] = ota.Counts{Total: 100, Succeeded: 10, Queued: 90}
	out := renderProgress(&task, nil, 5, false)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 1+5 {
		t.Fatalf("want the task's line and 5 for the sites:\n%s", out)
	}
	// The three that need a look, then clean ones by name, in name order.
	var shown []string
	for _, l := range lines[1:5] {
		shown = append(shown, strings.Fields(l)[1])
	}
	if want := []string{"s000", "s050", "s090", "s095"}; !slices.Equal(shown, want) {
		t.Errorf("sites shown %v, want %v:\n%s", shown, want, out)
	}
	if want := "  and 96 more sites: 96 all succeeded (--all-sites shows every site)"; lines[5] != want {
		t.Errorf("summary %q, want %q", lines[5], want)
	}
	// A summary counts what it hides.
	task.Status.Sites["s001"] = ota.Counts{Total: 100, Succeeded: 1, Running: 99}
	out = renderProgress(&task, nil, 3, false)
	if !strings.Contains(out, "and 98 more sites: 96 all succeeded, 1 running, 1 finished with failures") {
		t.Errorf("summary of hidden running and failed sites:\n%s", out)
	}
	if all := renderProgress(&task, nil, 0, false); strings.Count(all, "\n") != 101 {
		t.Errorf("without a limit every site has a line: %d lines", strings.Count(all, "\n"))
	}
}
