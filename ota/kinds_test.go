package ota

import (
	"os"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"

	"github.com/outpost-mesh/outpost/consensus"
)

// decodeTask decodes a YAML manifest as the API does: strictly, through
// TaskKind.
func decodeTask(t *testing.T, manifest []byte) (*consensus.Object, error) {
	t.Helper()
	data, err := yaml.YAMLToJSON(manifest)
	if err != nil {
		t.Fatalf("yaml: %v", err)
	}
	return TaskKind.Decode(data)
}

func TestOnboardExample(t *testing.T) {
	t.Parallel()
	manifest, err := os.ReadFile("testdata/onboard.yaml")
	if err != nil {
		t.Fatal(err)
	}
	obj, err := decodeTask(t, manifest)
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	if errs := TaskKind.Validate(obj); len(errs) > 0 {
		t.Fatalf("validate: %v", errs.ToAggregate())
	}
	var spec TaskSpec
	if err := obj.DecodeSpec(&spec); err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, s := range spec.Steps {
		types = append(types, string(s.Type))
	}
	if got := strings.Join(types, ","); got != "write,exec,exec,read,exec,playbook" {
		t.Errorf("step types %s", got)
	}
	if spec.DeviceTimeoutOrDefault() != 10*time.Minute || spec.DeliveryDeadlineOrDefault() != time.Hour {
		t.Errorf("timeouts %v %v", spec.DeviceTimeout, spec.DeliveryDeadline)
	}
	if got := ResolveCount(spec.Concurrency, 1000, DefaultConcurrency); got != 200 {
		t.Errorf("concurrency of 1000 = %d, want 200", got)
	}
}

func TestDecodeStrict(t *testing.T) {
	t.Parallel()
	cases := []struct{ name, manifest, want string }{
		{"unknown step field", `
apiVersion: ota.outpost.dev/v1alpha1
kind: Task
metadata: {name: t}
spec:
  targets: {nodes: [a]}
  steps: [{name: a, type: exec, comand: ["true"]}]
`, `unknown field "spec.steps[0].comand"`},
		{"wrong type", `
apiVersion: ota.outpost.dev/v1alpha1
kind: Task
metadata: {name: t}
spec:
  targets: {nodes: a}
  steps: [{name: a, type: exec, command: ["true"]}]
`, "spec.targets.nodes"},
		{"bad duration", `
apiVersion: ota.outpost.dev/v1alpha1
kind: Task
metadata: {name: t}
spec:
  targets: {nodes: [a]}
  deviceTimeout: soon
  steps: [{name: a, type: exec, command: ["true"]}]
`, `invalid duration "soon"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := decodeTask(t, []byte(tc.manifest))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want an error naming %q, got %v", tc.want, err)
			}
		})
	}
}

func TestValidateThroughKind(t *testing.T) {
	t.Parallel()
	obj, err := decodeTask(t, []byte(`
apiVersion: ota.outpost.dev/v1alpha1
kind: Task
metadata: {name: t}
spec:
  targets: {}
  concurrency: "150%"
  steps:
    - {name: a, type: exec}
    - {name: b, type: shell}
`))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, e := range TaskKind.Validate(obj) {
		got[e.Field] = true
	}
	for _, want := range []string{"spec.targets", "spec.concurrency", "spec.steps[0].command", "spec.steps[1].type"} {
		if !got[want] {
			t.Errorf("no error at %s; got %v", want, got)
		}
	}
}

func TestRegister(t *testing.T) {
	t.Parallel()
	r := consensus.NewRegistry()
	if err := Register(r); err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{"Task", "DeviceResult"} {
		k, ok := r.ForKind(Group+"/"+Version, kind)
		if !ok || k.Namespaced || len(k.Columns) == 0 {
			t.Errorf("%s: registered %v, kind %+v", kind, ok, k)
		}
	}
	if k, ok := r.ForResource(Group, Version, "deviceresults"); !ok || k.ShortNames[0] != "dr" {
		t.Errorf("deviceresults: %v %v", ok, k)
	}
	if err := Register(r); err == nil {
		t.Error("registering twice: want an error")
	}
	// A result's name and task label follow its spec (List reads a task's
	// results by their names' prefix).
	for _, tc := range []struct{ meta, spec, want string }{
		{`{"name":"t.","labels":{"ota.outpost.dev/task":"t"}}`, `{"task":"t"}`, "spec.node"},
		{`{"name":"x","labels":{"ota.outpost.dev/task":"t"}}`, `{"task":"t","node":"n"}`, "metadata.name"},
		{`{"name":"t.n"}`, `{"task":"t","node":"n"}`, "metadata.labels[ota.outpost.dev/task]"},
		{`{"name":"t.n","labels":{"ota.outpost.dev/task":"u"}}`, `{"task":"t","node":"n"}`, "metadata.labels[ota.outpost.dev/task]"},
		{`{"name":"t.n","labels":{"ota.outpost.dev/task":"t"}}`, `{"task":"t","node":"n"}`, ""},
	} {
		dr, err := DeviceResultKind.Decode([]byte(`{"apiVersion":"ota.outpost.dev/v1alpha1","kind":"DeviceResult","metadata":` + tc.meta + `,"spec":` + tc.spec + `,"status":{"phase":"Queued","steps":[{"name":"a","type":"exec","phase":"Succeeded","durationMillis":3,"stdout":{"head":"hi"}}]}}`))
		if err != nil {
			t.Fatal(err)
		}
		errs := DeviceResultKind.Validate(dr)
		if tc.want == "" && len(errs) != 0 || tc.want != "" && (len(errs) != 1 || errs[0].Field != tc.want) {
			t.Errorf("%s %s: got %v, want an error on %q", tc.meta, tc.spec, errs, tc.want)
		}
	}
}

// TestResultNamePrefix: a selector that fixes the task narrows a list to
// that task's result names; any other reads every result.
func TestResultNamePrefix(t *testing.T) {
	t.Parallel()
	for sel, want := range map[string]string{
		LabelTask + "=t":                     "t.",
		LabelTask + "=t," + LabelSite + "=s": "t.",
		LabelTask + " in (t)":                "t.",
		LabelTask + " in (t,u)":              "",
		LabelTask + "!=t":                    "",
		LabelSite + "=s":                     "",
		"":                                   "",
	} {
		s, err := labels.Parse(sel)
		if err != nil {
			t.Fatal(err)
		}
		if got := resultNamePrefix(s); got != want {
			t.Errorf("%q: prefix %q, want %q", sel, got, want)
		}
	}
}
