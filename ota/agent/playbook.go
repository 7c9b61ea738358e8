package agent

import (
	"context"
	_ "embed"
	"fmt"
	"os"
	"path/filepath"

	"github.com/outpost-mesh/outpost/ota"
)

// AnsibleMissingMessage is the error of a playbook step on a node without
// ansible-playbook.
const AnsibleMissingMessage = "ansible-playbook is not installed on this node; install ansible-core or remove the playbook step"

// recapCallback is the Ansible callback plugin that writes the recap file.
//
//go:embed ansible/outpost_recap.py
var recapCallback []byte

// runPlaybook runs a playbook step: ansible-playbook -c local -i localhost,
// in a temporary directory holding the playbook, the recap callback and
// Ansible's temporary files. Ansible's usual output is the step's stdout;
// the recap comes from the callback's file.
func runPlaybook(ctx context.Context, step *ota.Step, env Env, blobs BlobOpener, logDir string) ota.StepResult {
	if (step.Playbook == "") == (step.ContentFrom == nil) {
		return failed(ota.ReasonInvalid, "a playbook step needs exactly one of playbook and contentFrom")
	}
	_, u, _ := credential("")
	vars := stepEnv(u, step.Env, env, nil)
	ansible, err := lookPath("ansible-playbook", vars["PATH"])
	if err != nil {
		return failed(ota.ReasonAnsibleMissing, "%s", AnsibleMissingMessage)
	}

	dir, err := os.MkdirTemp("", "outpost-playbook-")
	if err != nil {
		return failed(ota.ReasonIOError, "playbook: temporary directory: %v", err)
	}
	defer os.RemoveAll(dir)
	if serr := writePlaybookFiles(ctx, step, blobs, dir); serr != nil {
		return serr.result()
	}

	recapFile := filepath.Join(dir, "recap.json")
	vars = stepEnv(u, step.Env, env, ansibleEnv(dir, recapFile, step.Env))
	p := &process{
		path: ansible,
		argv: []string{"ansible-playbook", "-c", "local", "-i", "localhost,", "playbook.yml"},
		env:  envList(vars),
		dir:  dir,
	}
	r := runLogged(ctx, step, p, logDir)
	res, err := readRecap(recapFile)
	if err != nil {
		if r.Phase == ota.StepSucceeded {
			r.Phase, r.Reason, r.Error = ota.StepFailed, ota.ReasonPlaybookFailed, fmt.Sprintf("no recap from ansible-playbook: %v", err)
		} else if r.Reason == ota.ReasonExitCode {
			r.Error = fmt.Sprintf("ansible-playbook %s before its recap; see stderr", r.Error)
		}
		return r
	}
	r.Playbook = &res.result
	if killed(r.Reason) {
		return r
	}
	if res.failed != "" || r.Phase == ota.StepFailed {
		msg := res.failed
		if msg == "" {
			msg = "ansible-playbook " + r.Error
		}
		r.Phase, r.Reason, r.Error = ota.StepFailed, ota.ReasonPlaybookFailed, msg
	}
	return r
}

// writePlaybookFiles lays out dir: playbook.yml, the callback plugin and
// Ansible's temporary directories.
func writePlaybookFiles(ctx context.Context, step *ota.Step, blobs BlobOpener, dir string) *stepError {
	for _, d := range []string{"callback_plugins", "tmp", "home"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
			return stepErr(ota.ReasonIOError, "playbook: %v", err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "callback_plugins", "outpost_recap.py"), recapCallback, 0o600); err != nil {
		return stepErr(ota.ReasonIOError, "playbook: %v", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "playbook.yml"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return stepErr(ota.ReasonIOError, "playbook: %v", err)
	}
	_, _, serr := copyContent(ctx, step.Playbook, step.ContentFrom, blobs, f)
	if cerr := f.Close(); serr == nil && cerr != nil {
		serr = stepErr(ota.ReasonIOError, "playbook: %v", cerr)
	}
	return serr
}

// ansibleEnv is the environment that makes ansible-playbook quiet,
// self-contained in dir and reporting through the recap callback. A step's
// own ANSIBLE_CALLBACKS_ENABLED or ANSIBLE_CALLBACK_PLUGINS are kept and
// ours added to them.
func ansibleEnv(dir, recapFile string, stepVars map[string]string) map[string]string {
	tmp := filepath.Join(dir, "tmp")
	vars := map[string]string{
		"ANSIBLE_NOCOLOR":             "1",
		"ANSIBLE_FORCE_COLOR":         "0",
		"ANSIBLE_HOST_KEY_CHECKING":   "False",
		"ANSIBLE_RETRY_FILES_ENABLED": "False",
		"ANSIBLE_PYTHON_INTERPRETER":  "auto_silent",
		"ANSIBLE_HOME":                filepath.Join(dir, "home"),
		"ANSIBLE_LOCAL_TEMP":          tmp,
		"ANSIBLE_REMOTE_TEMP":         tmp,
		"ANSIBLE_CALLBACK_PLUGINS":    filepath.Join(dir, "callback_plugins"),
		"ANSIBLE_CALLBACKS_ENABLED":   "outpost_recap",
		"OUTPOST_RECAP_FILE":          recapFile,
	}
	for k, v := range stepVars {
		switch k {
		case "ANSIBLE_CALLBACK_PLUGINS":
			vars[k] += string(filepath.ListSeparator) + v
		case "ANSIBLE_CALLBACKS_ENABLED":
			vars[k] += "," + v
		case "OUTPOST_RECAP_FILE":
		default:
			if _, ours := vars[k]; ours {
				vars[k] = v
			}
		}
	}
	return vars
}
