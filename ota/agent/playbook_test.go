package agent

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outpost-mesh/outpost/ota"
)

// needAnsible skips the test when ansible-playbook is not installed (CI
// installs ansible-core).
func needAnsible(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("ansible-playbook"); err != nil {
		t.Fatal("ansible-playbook is not installed (apt-get install ansible-core) (scripts/test-deps.sh installs it)")
	}
}

func TestPlaybookMissingAnsible(t *testing.T) {
	t.Parallel()
	r, _ := run(t, ota.Step{
		Name: "health", Type: ota.StepPlaybook, Playbook: "- hosts: all\n  tasks: []\n",
		Env: map[string]string{"PATH": t.TempDir()},
	})
	wantPhase(t, r, ota.StepFailed, ota.ReasonAnsibleMissing)
	if r.Error != "ansible-playbook is not installed on this node; install ansible-core or remove the playbook step" {
		t.Errorf("message %q", r.Error)
	}
}

func TestPlaybookHealthCheck(t *testing.T) {
	t.Parallel()
	needAnsible(t)
	target := writeFile(t, t.TempDir(), "present", "x", 0o644)
	r, logDir := run(t, ota.Step{Name: "health", Type: ota.StepPlaybook, Playbook: `
- name: health check
  hosts: all
  gather_facts: false
  tasks:
    - name: hello
      ansible.builtin.debug:
        msg: "node {{ lookup('env', 'OUTPOST_NODE') }}"
    - name: look
      ansible.builtin.stat:
        path: ` + target + `
      register: st
    - name: it is there
      ansible.builtin.assert:
        that: st.stat.exists
    - name: skipped
      ansible.builtin.debug: {msg: never}
      when: false
- name: second play
  hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.command: /bin/true
`})
	wantPhase(t, r, ota.StepSucceeded, "")
	if r.ExitCode == nil || *r.ExitCode != 0 {
		t.Errorf("exit %v", r.ExitCode)
	}
	pb := r.Playbook
	if pb == nil || len(pb.Recap) != 1 || len(pb.Plays) != 2 {
		t.Fatalf("playbook result %+v", pb)
	}
	want := ota.PlayRecap{Host: "localhost", OK: 4, Changed: 1, Skipped: 1}
	if pb.Recap[0] != want {
		t.Errorf("recap %+v, want %+v", pb.Recap[0], want)
	}
	if p := pb.Plays[0]; p != (ota.PlayRecap{Play: "health check", Host: "localhost", OK: 3, Skipped: 1}) {
		t.Errorf("play 1 %+v", p)
	}
	if p := pb.Plays[1]; p != (ota.PlayRecap{Play: "second play", Host: "localhost", OK: 1, Changed: 1}) {
		t.Errorf("play 2 %+v", p)
	}
	out := r.Stdout.String()
	if !strings.Contains(out, "node edge-1") || !strings.Contains(out, "PLAY RECAP") {
		t.Errorf("stdout lacks Ansible's output:\n%s", out)
	}
	if log := readFile(t, filepath.Join(logDir, "health.stdout")); log != out {
		t.Errorf("log file differs from stdout")
	}
}

func TestPlaybookFailure(t *testing.T) {
	t.Parallel()
	needAnsible(t)
	r, _ := run(t, ota.Step{Name: "health", Type: ota.StepPlaybook, Playbook: `
- name: checks
  hosts: all
  gather_facts: false
  tasks:
    - name: tolerated
      ansible.builtin.command: /bin/false
      ignore_errors: true
    - block:
        - name: rescued
          ansible.builtin.command: /bin/false
      rescue:
        - ansible.builtin.debug: {msg: recovered}
    - name: disk is fine
      ansible.builtin.fail:
        msg: the disk is full
    - name: not reached
      ansible.builtin.debug: {msg: x}
`})
	wantPhase(t, r, ota.StepFailed, ota.ReasonPlaybookFailed)
	if !strings.Contains(r.Error, `task "disk is fine" on localhost: the disk is full`) {
		t.Errorf("error %q", r.Error)
	}
	if r.ExitCode == nil || *r.ExitCode != 2 {
		t.Errorf("exit %v", r.ExitCode)
	}
	want := ota.PlayRecap{Play: "checks", Host: "localhost", OK: 2, Changed: 1, Failed: 1, Rescued: 1, Ignored: 1}
	if r.Playbook == nil || len(r.Playbook.Plays) != 1 || r.Playbook.Plays[0] != want {
		t.Fatalf("plays %+v, want %+v", r.Playbook, want)
	}
	if got := r.Playbook.Recap[0]; got.Failed != 1 || got.Rescued != 1 || got.Ignored != 1 {
		t.Errorf("recap %+v", got)
	}
}

func TestPlaybookSyntaxError(t *testing.T) {
	t.Parallel()
	needAnsible(t)
	r, _ := run(t, ota.Step{Name: "health", Type: ota.StepPlaybook, Playbook: "- hosts: all\n  tasks:\n    - no.such.module: {}\n"})
	wantPhase(t, r, ota.StepFailed, ota.ReasonExitCode)
	if !strings.Contains(r.Error, "before its recap") || !strings.Contains(r.Stderr.String(), "no.such.module") {
		t.Errorf("error %q stderr %q", r.Error, r.Stderr.String())
	}
}

func TestPlaybookContentFrom(t *testing.T) {
	t.Parallel()
	needAnsible(t)
	pb := "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug: {msg: from a blob}\n"
	digest := "sha256:" + sha(pb)
	r, _ := runWith(t, ota.Step{Name: "health", Type: ota.StepPlaybook, ContentFrom: &ota.ContentFrom{Blob: digest}},
		DefaultPolicy(), blobStore(map[string]string{digest: pb}))
	wantPhase(t, r, ota.StepSucceeded, "")
	if !strings.Contains(r.Stdout.String(), "from a blob") {
		t.Errorf("stdout %s", r.Stdout.String())
	}
}

func TestParseRecap(t *testing.T) {
	t.Parallel()
	// ansible.posix's json callback output parses too.
	data := `{"plays":[{"play":{"name":"p","id":"x"},"tasks":[
	  {"task":{"name":"a"},"hosts":{"h1":{"changed":true},"h2":{"unreachable":true,"msg":"no route"}}}]}],
	  "stats":{"h1":{"ok":1,"changed":1,"failures":0,"unreachable":0,"skipped":0,"rescued":0,"ignored":0},
	           "h2":{"ok":0,"changed":0,"failures":0,"unreachable":1,"skipped":0,"rescued":0,"ignored":0}}}`
	res, err := parseRecap([]byte(data))
	if err != nil {
		t.Fatal(err)
	}
	if res.failed != `play "p", task "a" on h2: no route` {
		t.Errorf("failed %q", res.failed)
	}
	if len(res.result.Plays) != 2 || res.result.Plays[1] != (ota.PlayRecap{Play: "p", Host: "h2", Unreachable: 1}) {
		t.Errorf("plays %+v", res.result.Plays)
	}
	if _, err := parseRecap([]byte("not json")); err == nil {
		t.Error("want an error")
	}
}
