package ota

import (
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/outpost-mesh/outpost/consensus"
)

// validSpec is a task with one step of each type: exec, read, write,
// playbook, in that order.
func validSpec() TaskSpec {
	return TaskSpec{
		Targets: Targets{Nodes: []string{"edge-1"}, Sites: []string{"store-7"}},
		Steps: []Step{
			{Name: "install", Type: StepExec, Command: []string{"apt-get", "install", "-y", "foo"}, Env: map[string]string{"DEBIAN_FRONTEND": "noninteractive"}},
			{Name: "query", Type: StepRead, Path: "/var/tmp/query.txt", MaxBytes: 4096},
			{Name: "source", Type: StepWrite, Path: "/etc/apt/sources.list.d/x.list", Content: "deb x y z\n", Mode: "0644", Owner: "root:root", Backup: true},
			{Name: "health", Type: StepPlaybook, Playbook: "- hosts: all\n  tasks:\n    - ansible.builtin.ping:\n"},
		},
		Concurrency:   ptr(intstr.FromString("10%")),
		PerSite:       ptr(intstr.FromInt32(5)),
		FailurePolicy: FailurePolicy{MaxFailures: ptr(intstr.FromInt32(0)), MaxUnreachable: ptr(intstr.FromString("50%"))},
		DeviceTimeout: metav1.Duration{Duration: 5 * time.Minute},
	}
}

func ptr[T any](v T) *T { return &v }

func TestValidateTaskSpecValid(t *testing.T) {
	t.Parallel()
	spec := validSpec()
	if errs := ValidateTaskSpec(&spec, field.NewPath("spec")); len(errs) > 0 {
		t.Fatalf("valid spec: %v", errs.ToAggregate())
	}
	// Every target kind alone is enough; an empty selector selects all.
	for name, tg := range map[string]Targets{
		"nodes":          {Nodes: []string{"a"}},
		"sites":          {Sites: []string{"b"}},
		"selector":       {Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"role": "edge"}}},
		"empty selector": {Selector: &metav1.LabelSelector{}},
	} {
		spec := validSpec()
		spec.Targets = tg
		if errs := ValidateTaskSpec(&spec, field.NewPath("spec")); len(errs) > 0 {
			t.Errorf("%s: %v", name, errs.ToAggregate())
		}
	}
}

func TestValidateTaskSpecInvalid(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("x", MaxInlineBytes+1)
	cases := []struct {
		name   string
		mutate func(s *TaskSpec)
		path   string
		typ    field.ErrorType
	}{
		{"unknown step type", func(s *TaskSpec) { s.Steps[1].Type = "shell" }, "spec.steps[1].type", field.ErrorTypeNotSupported},
		{"missing step type", func(s *TaskSpec) { s.Steps[1].Type = "" }, "spec.steps[1].type", field.ErrorTypeRequired},
		{"empty command and script", func(s *TaskSpec) { s.Steps[0].Command = nil }, "spec.steps[0].command", field.ErrorTypeRequired},
		{"command and script both", func(s *TaskSpec) { s.Steps[0].Script = "echo hi" }, "spec.steps[0].command", field.ErrorTypeInvalid},
		{"empty program", func(s *TaskSpec) { s.Steps[0].Command = []string{""} }, "spec.steps[0].command[0]", field.ErrorTypeInvalid},
		{"relative write path", func(s *TaskSpec) { s.Steps[2].Path = "etc/x.list" }, "spec.steps[2].path", field.ErrorTypeInvalid},
		{"write path with ..", func(s *TaskSpec) { s.Steps[2].Path = "/etc/apt/../shadow" }, "spec.steps[2].path", field.ErrorTypeInvalid},
		{"write path /", func(s *TaskSpec) { s.Steps[2].Path = "/" }, "spec.steps[2].path", field.ErrorTypeInvalid},
		{"write path missing", func(s *TaskSpec) { s.Steps[2].Path = "" }, "spec.steps[2].path", field.ErrorTypeRequired},
		{"relative read path", func(s *TaskSpec) { s.Steps[1].Path = "query.txt" }, "spec.steps[1].path", field.ErrorTypeInvalid},
		{"read path with ..", func(s *TaskSpec) { s.Steps[1].Path = "/var/../etc/shadow" }, "spec.steps[1].path", field.ErrorTypeInvalid},
		{"oversized inline content", func(s *TaskSpec) { s.Steps[2].Content = big }, "spec.steps[2].content", field.ErrorTypeTooLong},
		{"content and contentFrom", func(s *TaskSpec) {
			s.Steps[2].ContentFrom = &ContentFrom{Blob: "sha256:" + strings.Repeat("a", 64)}
		}, "spec.steps[2].content", field.ErrorTypeInvalid},
		{"bad blob digest", func(s *TaskSpec) {
			s.Steps[2].Content, s.Steps[2].ContentFrom = "", &ContentFrom{Blob: "md5:abc"}
		}, "spec.steps[2].contentFrom.blob", field.ErrorTypeInvalid},
		{"bad contentFrom repository", func(s *TaskSpec) {
			s.Steps[2].Content, s.Steps[2].ContentFrom = "", &ContentFrom{Blob: "sha256:" + strings.Repeat("a", 64), Repository: "../Files"}
		}, "spec.steps[2].contentFrom.repository", field.ErrorTypeInvalid},
		{"oversized inline playbook", func(s *TaskSpec) { s.Steps[3].Playbook = big }, "spec.steps[3].playbook", field.ErrorTypeTooLong},
		{"playbook missing", func(s *TaskSpec) { s.Steps[3].Playbook = "" }, "spec.steps[3].playbook", field.ErrorTypeRequired},
		{"playbook not a list", func(s *TaskSpec) { s.Steps[3].Playbook = "hosts: all\n" }, "spec.steps[3].playbook", field.ErrorTypeInvalid},
		{"playbook not YAML", func(s *TaskSpec) { s.Steps[3].Playbook = "- [unclosed\n" }, "spec.steps[3].playbook", field.ErrorTypeInvalid},
		{"concurrency 0", func(s *TaskSpec) { s.Concurrency = ptr(intstr.FromInt32(0)) }, "spec.concurrency", field.ErrorTypeInvalid},
		{"concurrency \"0\"", func(s *TaskSpec) { s.Concurrency = ptr(intstr.FromString("0")) }, "spec.concurrency", field.ErrorTypeInvalid},
		{"concurrency negative", func(s *TaskSpec) { s.Concurrency = ptr(intstr.FromInt32(-3)) }, "spec.concurrency", field.ErrorTypeInvalid},
		{"concurrency 150%", func(s *TaskSpec) { s.Concurrency = ptr(intstr.FromString("150%")) }, "spec.concurrency", field.ErrorTypeInvalid},
		{"concurrency 0%", func(s *TaskSpec) { s.Concurrency = ptr(intstr.FromString("0%")) }, "spec.concurrency", field.ErrorTypeInvalid},
		{"concurrency abc", func(s *TaskSpec) { s.Concurrency = ptr(intstr.FromString("abc")) }, "spec.concurrency", field.ErrorTypeInvalid},
		{"concurrency -5%", func(s *TaskSpec) { s.Concurrency = ptr(intstr.FromString("-5%")) }, "spec.concurrency", field.ErrorTypeInvalid},
		{"perSite 0", func(s *TaskSpec) { s.PerSite = ptr(intstr.FromInt32(0)) }, "spec.perSite", field.ErrorTypeInvalid},
		{"perSite 101%", func(s *TaskSpec) { s.PerSite = ptr(intstr.FromString("101%")) }, "spec.perSite", field.ErrorTypeInvalid},
		{"maxFailures negative", func(s *TaskSpec) { s.FailurePolicy.MaxFailures = ptr(intstr.FromInt32(-1)) }, "spec.failurePolicy.maxFailures", field.ErrorTypeInvalid},
		{"maxFailures 200%", func(s *TaskSpec) { s.FailurePolicy.MaxFailures = ptr(intstr.FromString("200%")) }, "spec.failurePolicy.maxFailures", field.ErrorTypeInvalid},
		{"maxUnreachable text", func(s *TaskSpec) { s.FailurePolicy.MaxUnreachable = ptr(intstr.FromString("some")) }, "spec.failurePolicy.maxUnreachable", field.ErrorTypeInvalid},
		{"selector bad label key", func(s *TaskSpec) {
			s.Targets.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"bad key!": "x"}}
		}, "spec.targets.selector.matchLabels", field.ErrorTypeInvalid},
		{"selector bad operator", func(s *TaskSpec) {
			s.Targets.Selector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "role", Operator: "Near"}}}
		}, "spec.targets.selector.matchExpressions[0].operator", field.ErrorTypeInvalid},
		{"selector In without values", func(s *TaskSpec) {
			s.Targets.Selector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "role", Operator: metav1.LabelSelectorOpIn}}}
		}, "spec.targets.selector.matchExpressions[0].values", field.ErrorTypeRequired},
		{"no targets", func(s *TaskSpec) { s.Targets = Targets{} }, "spec.targets", field.ErrorTypeRequired},
		{"bad node name", func(s *TaskSpec) { s.Targets.Nodes = []string{"Edge_1"} }, "spec.targets.nodes[0]", field.ErrorTypeInvalid},
		{"duplicate site", func(s *TaskSpec) { s.Targets.Sites = []string{"a", "a"} }, "spec.targets.sites[1]", field.ErrorTypeDuplicate},
		{"no steps", func(s *TaskSpec) { s.Steps = nil }, "spec.steps", field.ErrorTypeRequired},
		{"too many steps", func(s *TaskSpec) {
			for i := range MaxSteps {
				s.Steps = append(s.Steps, Step{Name: "s" + strings.Repeat("x", i), Type: StepExec, Script: "true"})
			}
		}, "spec.steps", field.ErrorTypeTooMany},
		{"duplicate step names", func(s *TaskSpec) { s.Steps[1].Name = "install" }, "spec.steps[1].name", field.ErrorTypeDuplicate},
		{"step name not a DNS label", func(s *TaskSpec) { s.Steps[0].Name = "Install_Step" }, "spec.steps[0].name", field.ErrorTypeInvalid},
		{"step name missing", func(s *TaskSpec) { s.Steps[0].Name = "" }, "spec.steps[0].name", field.ErrorTypeRequired},
		{"mode not octal", func(s *TaskSpec) { s.Steps[2].Mode = "0999" }, "spec.steps[2].mode", field.ErrorTypeInvalid},
		{"mode symbolic", func(s *TaskSpec) { s.Steps[2].Mode = "rw-r--r--" }, "spec.steps[2].mode", field.ErrorTypeInvalid},
		{"mode too big", func(s *TaskSpec) { s.Steps[2].Mode = "17777" }, "spec.steps[2].mode", field.ErrorTypeInvalid},
		{"owner malformed", func(s *TaskSpec) { s.Steps[2].Owner = "a:b:c" }, "spec.steps[2].owner", field.ErrorTypeInvalid},
		{"owner empty group", func(s *TaskSpec) { s.Steps[2].Owner = "root:" }, "spec.steps[2].owner", field.ErrorTypeInvalid},
		{"negative step timeout", func(s *TaskSpec) { s.Steps[0].Timeout = metav1.Duration{Duration: -time.Second} }, "spec.steps[0].timeout", field.ErrorTypeInvalid},
		{"negative deviceTimeout", func(s *TaskSpec) { s.DeviceTimeout = metav1.Duration{Duration: -time.Minute} }, "spec.deviceTimeout", field.ErrorTypeInvalid},
		{"negative deliveryDeadline", func(s *TaskSpec) { s.DeliveryDeadline = metav1.Duration{Duration: -time.Minute} }, "spec.deliveryDeadline", field.ErrorTypeInvalid},
		{"maxBytes over 1 MiB", func(s *TaskSpec) { s.Steps[1].MaxBytes = MaxReadBytes + 1 }, "spec.steps[1].maxBytes", field.ErrorTypeInvalid},
		{"maxBytes negative", func(s *TaskSpec) { s.Steps[1].MaxBytes = -1 }, "spec.steps[1].maxBytes", field.ErrorTypeInvalid},
		{"reserved env", func(s *TaskSpec) { s.Steps[0].Env = map[string]string{"OUTPOST_NODE": "x"} }, "spec.steps[0].env[OUTPOST_NODE]", field.ErrorTypeForbidden},
		{"bad env name", func(s *TaskSpec) { s.Steps[0].Env = map[string]string{"1=X": "x"} }, "spec.steps[0].env[1=X]", field.ErrorTypeInvalid},
		{"relative workingDir", func(s *TaskSpec) { s.Steps[0].WorkingDir = "tmp" }, "spec.steps[0].workingDir", field.ErrorTypeInvalid},
		{"exec with a path", func(s *TaskSpec) { s.Steps[0].Path = "/etc/x" }, "spec.steps[0].path", field.ErrorTypeForbidden},
		{"read with content", func(s *TaskSpec) { s.Steps[1].Content = "x" }, "spec.steps[1].content", field.ErrorTypeForbidden},
		{"write with command", func(s *TaskSpec) { s.Steps[2].Command = []string{"true"} }, "spec.steps[2].command", field.ErrorTypeForbidden},
		{"playbook with user", func(s *TaskSpec) { s.Steps[3].User = "root" }, "spec.steps[3].user", field.ErrorTypeForbidden},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			spec := validSpec()
			tc.mutate(&spec)
			errs := ValidateTaskSpec(&spec, field.NewPath("spec"))
			for _, e := range errs {
				if e.Field == tc.path && e.Type == tc.typ {
					return
				}
			}
			t.Fatalf("want %s at %s, got %v", tc.typ, tc.path, errs.ToAggregate())
		})
	}
}

func TestValidateTooLongDoesNotEchoContent(t *testing.T) {
	t.Parallel()
	spec := validSpec()
	spec.Steps[2].Content = strings.Repeat("secret", MaxInlineBytes/6+1)
	errs := ValidateTaskSpec(&spec, field.NewPath("spec"))
	if len(errs) != 1 || strings.Contains(errs.ToAggregate().Error(), "secret") {
		t.Fatalf("want one error without the content, got %.300v", errs.ToAggregate())
	}
}

// TestValidateTaskUpdate: once created, a task's spec changes only in its
// steering (halted, canceled, retry); every other field is refused by
// name, a cancel is not undone and retry only rises.
func TestValidateTaskUpdate(t *testing.T) {
	t.Parallel()
	object := func(s TaskSpec) *consensus.Object {
		obj := &consensus.Object{}
		if err := obj.SetSpec(s); err != nil {
			t.Fatal(err)
		}
		return obj
	}
	cases := []struct {
		name   string
		old    func(s *TaskSpec)
		mutate func(s *TaskSpec)
		paths  []string
	}{
		{"halt", nil, func(s *TaskSpec) { s.Halted = true }, nil},
		{"cancel and retry", nil, func(s *TaskSpec) { s.Canceled, s.Retry = true, 2 }, nil},
		{"a step", nil, func(s *TaskSpec) { s.Steps[0].Command = []string{"true"} }, []string{"spec.steps"}},
		{"targets and concurrency", nil, func(s *TaskSpec) {
			s.Targets.Nodes = append(s.Targets.Nodes, "edge-2")
			s.Concurrency = ptr(intstr.FromInt32(1))
		}, []string{"spec.targets", "spec.concurrency"}},
		{"limits", nil, func(s *TaskSpec) {
			s.FailurePolicy.MaxFailures, s.PerSite = nil, nil
			s.DeviceTimeout.Duration, s.DeliveryDeadline.Duration = time.Minute, time.Minute
		}, []string{"spec.perSite", "spec.failurePolicy", "spec.deviceTimeout", "spec.deliveryDeadline"}},
		{"uncancel", func(s *TaskSpec) { s.Canceled = true }, func(s *TaskSpec) { s.Canceled = false }, []string{"spec.canceled"}},
		{"retry lowered", func(s *TaskSpec) { s.Retry = 3 }, func(s *TaskSpec) { s.Retry = 1 }, []string{"spec.retry"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			old, next := validSpec(), validSpec()
			if tc.old != nil {
				tc.old(&old)
				tc.old(&next)
			}
			tc.mutate(&next)
			errs := validateTaskUpdate(object(next), object(old))
			var paths []string
			for _, e := range errs {
				paths = append(paths, e.Field)
			}
			if !slices.Equal(paths, tc.paths) {
				t.Errorf("refused %v, want %v (%v)", paths, tc.paths, errs.ToAggregate())
			}
		})
	}
}
