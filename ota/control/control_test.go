package control

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/outpost-mesh/outpost/ota"
)

func TestResolveTargets(t *testing.T) {
	t.Parallel()
	devices := []Device{
		{Name: "b-1", Site: "b", Labels: map[string]string{"line": "2"}},
		{Name: "a-2", Site: "a", Labels: map[string]string{"line": "1"}},
		{Name: "a-1", Site: "a", Labels: map[string]string{"line": "2"}},
		{Name: "hub-1", Site: "hub"},
	}
	cases := []struct {
		name     string
		targets  ota.Targets
		want     []string
		notFound *ota.NotFound
	}{
		{"by name", ota.Targets{Nodes: []string{"hub-1", "nope"}}, []string{"hub-1"}, &ota.NotFound{Nodes: []string{"nope"}}},
		{"by site", ota.Targets{Sites: []string{"a"}}, []string{"a-1", "a-2"}, nil},
		{"by selector", ota.Targets{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"line": "2"}}}, []string{"a-1", "b-1"}, nil},
		{"empty selector: every node", ota.Targets{Selector: &metav1.LabelSelector{}}, []string{"a-1", "a-2", "b-1", "hub-1"}, nil},
		{"union, once each", ota.Targets{Nodes: []string{"a-1"}, Sites: []string{"b"}, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"line": "2"}}}, []string{"a-1", "b-1"}, nil},
		{"nothing", ota.Targets{Sites: []string{"z"}}, nil, &ota.NotFound{Sites: []string{"z"}}},
		{"some names not found", ota.Targets{Nodes: []string{"x", "a-1", "w"}, Sites: []string{"b", "z"}}, []string{"a-1", "b-1"}, &ota.NotFound{Nodes: []string{"w", "x"}, Sites: []string{"z"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, notFound, err := resolve(tc.targets, devices)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, d := range got {
				names = append(names, d.Name)
			}
			if !slices.Equal(names, tc.want) {
				t.Errorf("resolve = %v, want %v", names, tc.want)
			}
			if !reflect.DeepEqual(notFound, tc.notFound) {
				t.Errorf("not found %+v, want %+v", notFound, tc.notFound)
			}
		})
	}
}

// TestSiteWindows: the task's concurrency is shared among the sites with
// devices still to run, by their devices, never more in all than it
// allows, each capped by perSite and by what it has.
func TestSiteWindows(t *testing.T) {
	t.Parallel()
	num := func(i int) *intstr.IntOrString { v := intstr.FromInt32(int32(i)); return &v }
	pct := func(s string) *intstr.IntOrString { v := intstr.FromString(s); return &v }
	hundredSites := map[string]int{}
	for i := range 100 {
		hundredSites[fmt.Sprintf("s%03d", i)] = 100
	}
	cases := []struct {
		name                 string
		concurrency, perSite *intstr.IntOrString
		devices              map[string]int
		total, sum           int
		want                 map[string]int
	}{
		{"default 50, half here", nil, nil, map[string]int{"a": 50, "b": 50}, 100, 50, map[string]int{"a": 25, "b": 25}},
		{"one at a time across two sites", num(1), nil, map[string]int{"a": 2, "b": 1}, 3, 1, map[string]int{"a": 1, "b": 0}},
		{"the rest once the other site finished", num(1), nil, map[string]int{"b": 1}, 3, 1, map[string]int{"b": 1}},
		{"never more than the sites have", num(50), nil, map[string]int{"a": 3}, 10, 3, map[string]int{"a": 3}},
		{"percentage of the task", pct("10%"), nil, map[string]int{"a": 100, "b": 900}, 1000, 100, map[string]int{"a": 10, "b": 90}},
		{"perSite caps", num(100), num(5), map[string]int{"a": 50, "b": 50}, 100, 10, map[string]int{"a": 5, "b": 5}},
		{"capped shares go to the others", num(10), num(3), map[string]int{"a": 1, "b": 20, "c": 20}, 41, 7, map[string]int{"a": 1, "b": 3, "c": 3}},
		{"fewer than the sites", num(50), nil, hundredSites, 10000, 50, nil},
		{"every device at once", pct("100%"), nil, hundredSites, 10000, 10000, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			spec := &ota.TaskSpec{Concurrency: tc.concurrency, PerSite: tc.perSite}
			got := siteWindows(spec, tc.devices, tc.total)
			sum := 0
			for site, w := range got {
				if w < 0 || w > tc.devices[site] {
					t.Errorf("site %s: window %d of %d devices", site, w, tc.devices[site])
				}
				sum += w
			}
			if sum != tc.sum || tc.want != nil && !maps.Equal(got, tc.want) {
				t.Fatalf("siteWindows = %v (%d in all), want %v (%d)", got, sum, tc.want, tc.sum)
			}
		})
	}
}

func TestAssignmentsSendTheSpecOnce(t *testing.T) {
	t.Parallel()
	h := &Hub{seen: map[string]time.Time{}, tasks: map[string]*hubTask{
		"u1": {name: "t", uid: "u1", attempt: 1, version: 2, spec: ota.TaskSpec{}, sites: map[string][]string{"a": {"a-1", "a-2"}}, total: 2, fresh: true},
	}}
	first := h.Assignments("a", SiteState{})
	if len(first) != 1 || first[0].Spec == nil || len(first[0].Devices) != 2 {
		t.Fatalf("first assignment %+v: want the spec and both devices", first)
	}
	if again := h.Assignments("a", SiteState{"u1": 1}); len(again) != 1 || again[0].Spec != nil || again[0].Version != 2 {
		t.Fatalf("newer version %+v: want the version without the spec", again)
	}
	if none := h.Assignments("a", SiteState{"u1": 2}); len(none) != 0 {
		t.Fatalf("site up to date got %+v", none)
	}
	if other := h.Assignments("b", SiteState{}); len(other) != 0 {
		t.Fatalf("site without devices got %+v", other)
	}
}
