package control

import (
	"testing"

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
		name    string
		targets ota.Targets
		want    []string
	}{
		{"by name", ota.Targets{Nodes: []string{"hub-1", "nope"}}, []string{"hub-1"}},
		{"by site", ota.Targets{Sites: []string{"a"}}, []string{"a-1", "a-2"}},
		{"by selector", ota.Targets{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"line": "2"}}}, []string{"a-1", "b-1"}},
		{"union, once each", ota.Targets{Nodes: []string{"a-1"}, Sites: []string{"b"}, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"line": "2"}}}, []string{"a-1", "b-1"}},
		{"nothing", ota.Targets{Sites: []string{"z"}}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := resolve(tc.targets, devices)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, d := range got {
				names = append(names, d.Name)
			}
			if len(names) != len(tc.want) {
				t.Fatalf("resolve = %v, want %v", names, tc.want)
			}
			for i := range names {
				if names[i] != tc.want[i] {
					t.Fatalf("resolve = %v, want %v", names, tc.want)
				}
			}
		})
	}
}

func TestSiteWindow(t *testing.T) {
	t.Parallel()
	num := func(i int) *intstr.IntOrString { v := intstr.FromInt32(int32(i)); return &v }
	pct := func(s string) *intstr.IntOrString { v := intstr.FromString(s); return &v }
	cases := []struct {
		name                 string
		concurrency, perSite *intstr.IntOrString
		site, total          int
		want                 int
	}{
		{"default 50 across 100, half here", nil, nil, 50, 100, 25},
		{"share rounds up", num(1), nil, 2, 3, 1},
		{"never more than the site has", num(50), nil, 3, 10, 3},
		{"percentage", pct("10%"), nil, 100, 1000, 10},
		{"perSite caps", num(100), num(5), 50, 100, 5},
		{"at least one", num(1), nil, 1, 1000, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			spec := &ota.TaskSpec{Concurrency: tc.concurrency, PerSite: tc.perSite}
			if got := siteWindow(spec, tc.site, tc.total); got != tc.want {
				t.Fatalf("siteWindow = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestAssignmentsSendTheSpecOnce(t *testing.T) {
	t.Parallel()
	h := &Hub{tasks: map[string]*hubTask{
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
