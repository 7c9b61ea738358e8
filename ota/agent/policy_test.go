package agent

import (
	"strings"
	"testing"

	"github.com/outpost-mesh/outpost/ota"
)

func TestPolicyValidate(t *testing.T) {
	t.Parallel()
	for _, ok := range []Policy{{}, DefaultPolicy(), {Allow: []string{"read"}, Paths: []string{"/var/lib/outpost", "/etc"}}} {
		if err := ok.Validate(); err != nil {
			t.Errorf("%+v: %v", ok, err)
		}
	}
	for _, tc := range []struct {
		pol  Policy
		want string
	}{
		{Policy{Allow: []string{"exec", "shell"}}, `--ota-allow "shell"`},
		{Policy{Paths: []string{"var/lib"}}, `--ota-paths "var/lib" must be an absolute path`},
		{Policy{Paths: []string{"/var/../etc"}}, `--ota-paths "/var/../etc"`},
	} {
		if err := tc.pol.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.pol, err, tc.want)
		}
	}
}

func TestPolicyDenied(t *testing.T) {
	t.Parallel()
	pol := Policy{Allow: []string{"read", "write"}}
	for _, typ := range []ota.StepType{ota.StepExec, ota.StepPlaybook} {
		r, _ := runWith(t, ota.Step{Name: "s", Type: typ, Command: []string{"true"}, Playbook: "- hosts: all\n"}, pol, nil)
		wantPhase(t, r, ota.StepFailed, ota.ReasonPolicyDenied)
		if !strings.Contains(r.Error, "--ota-allow read,write") {
			t.Errorf("%s: error %q does not name the flag", typ, r.Error)
		}
	}
}

func TestPolicyPermits(t *testing.T) {
	t.Parallel()
	pol := Policy{Paths: []string{"/var/lib/outpost", "/etc/"}}
	for p, want := range map[string]bool{
		"/var/lib/outpost":       true,
		"/var/lib/outpost/x/y":   true,
		"/var/lib/outpost-other": false,
		"/etc/hosts":             true,
		"/var/lib":               false,
		"/":                      false,
	} {
		if got := pol.permits(p); got != want {
			t.Errorf("permits(%s) = %v", p, got)
		}
	}
	if !(Policy{}).permits("/anything") {
		t.Error("the zero policy must allow /")
	}
}
