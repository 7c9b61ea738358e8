package ota

import (
	"io/fs"
	"testing"

	"k8s.io/apimachinery/pkg/util/intstr"
)

func TestResolveCount(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name         string
		v            *intstr.IntOrString
		total, def   int
		want         int
		limit        int
		limitDefined bool
	}{
		{"nil takes the default", nil, 100, 50, 50, 0, false},
		{"number", ptr(intstr.FromInt32(7)), 100, 50, 7, 7, true},
		{"percent rounds up", ptr(intstr.FromString("10%")), 15, 50, 2, 1, true},
		{"tiny percent is at least 1", ptr(intstr.FromString("1%")), 10, 50, 1, 0, true},
		{"percent of nothing", ptr(intstr.FromString("50%")), 0, 50, 0, 0, true},
		{"all", ptr(intstr.FromString("100%")), 7, 50, 7, 7, true},
		{"malformed takes the default", ptr(intstr.FromString("abc")), 10, 50, 50, 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := ResolveCount(tc.v, tc.total, tc.def); got != tc.want {
				t.Errorf("ResolveCount = %d, want %d", got, tc.want)
			}
			got, ok := ResolveLimit(tc.v, tc.total)
			if ok != tc.limitDefined || got != tc.limit {
				t.Errorf("ResolveLimit = %d, %v; want %d, %v", got, ok, tc.limit, tc.limitDefined)
			}
		})
	}
}

func TestParseMode(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]fs.FileMode{
		"644":  0o644,
		"0644": 0o644,
		"0755": 0o755,
		"4755": 0o755 | fs.ModeSetuid,
		"1777": 0o777 | fs.ModeSticky,
	} {
		got, err := ParseMode(in)
		if err != nil || got != want {
			t.Errorf("ParseMode(%q) = %v, %v; want %v", in, got, err, want)
		}
		if f := FormatMode(got); len(in) == 4 && f != in {
			t.Errorf("FormatMode(%v) = %q, want %q", got, f, in)
		}
	}
	for _, bad := range []string{"", "64", "0999", "rw-r--r--", "17777", "-644"} {
		if _, err := ParseMode(bad); err == nil {
			t.Errorf("ParseMode(%q): want an error", bad)
		}
	}
}

func TestCountsAdd(t *testing.T) {
	t.Parallel()
	var c Counts
	c.Add(DeviceQueued, 3)
	c.Add(DeviceQueued, -1) // one device moves from queued to running
	c.Add(DeviceRunning, 1)
	c.Add(DeviceTimedOut, 1) // counted as failed
	c.Add(DeviceUnreachable, 1)
	want := Counts{Total: 5, Queued: 2, Running: 1, Failed: 1, Unreachable: 1}
	if c != want {
		t.Fatalf("counts %+v, want %+v", c, want)
	}
}
