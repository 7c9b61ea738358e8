package ota

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// StepType names what a step does.
type StepType string

// Step types.
const (
	// StepExec runs a command (argv) or a script (by /bin/sh -e).
	StepExec StepType = "exec"
	// StepRead returns a file's content and metadata.
	StepRead StepType = "read"
	// StepWrite replaces a file atomically.
	StepWrite StepType = "write"
	// StepPlaybook runs an Ansible playbook against the node itself.
	StepPlaybook StepType = "playbook"
)

// StepTypes lists every step type, in the order of documentation.
var StepTypes = []StepType{StepExec, StepRead, StepWrite, StepPlaybook}

// Limits of a step.
const (
	// MaxInlineBytes bounds inline content and inline playbooks.
	MaxInlineBytes = 1 << 20
	// DefaultReadBytes is a read step's maxBytes when it is not set.
	DefaultReadBytes = 1 << 20
	// MaxReadBytes bounds a read step's maxBytes: the content travels in
	// the device's result, through the site's and the hub's Raft logs
	// (ResultBudget). A bigger file's digest is an exec of sha256sum.
	MaxReadBytes = 1 << 20
	// MaxSteps bounds the steps of one task.
	MaxSteps = 64
)

// Step is one thing to do on a device. Type selects which of the flat,
// type-specific fields apply; the others must be empty.
type Step struct {
	// Name is a DNS label, unique in the task. It names the step's result
	// and its log files on the node.
	Name string   `json:"name"`
	Type StepType `json:"type"`
	// Timeout bounds the step; zero means only the device timeout bounds
	// it. An exec or playbook step's whole process group is killed at it.
	Timeout metav1.Duration `json:"timeout,omitzero"`
	// ContinueOnError tolerates the step's failure: it is recorded as
	// Failed, the next step runs, and the device can still succeed.
	ContinueOnError bool `json:"continueOnError,omitempty"`

	// Command is the argv of an exec step (no shell).
	Command []string `json:"command,omitempty"`
	// Script is run by /bin/sh -e in an exec step.
	Script string `json:"script,omitempty"`
	// Env is added to the environment of an exec or playbook step.
	Env map[string]string `json:"env,omitempty"`
	// WorkingDir of an exec step, an absolute path; default "/".
	WorkingDir string `json:"workingDir,omitempty"`
	// User runs an exec step as this user (a name or a uid); the daemon
	// must be root.
	User string `json:"user,omitempty"`

	// Path is the absolute file path of a read or write step.
	Path string `json:"path,omitempty"`
	// MaxBytes bounds a read step; a larger file is refused. Default and
	// most: 1 MiB (MaxReadBytes).
	MaxBytes int64 `json:"maxBytes,omitempty"`

	// Content is a write step's inline content, at most 1 MiB.
	Content string `json:"content,omitempty"`
	// ContentFrom names a blob for a write step's content or a playbook,
	// instead of Content or Playbook.
	ContentFrom *ContentFrom `json:"contentFrom,omitempty"`
	// Mode of a written file, in octal ("0644"). Default: the replaced
	// file's mode, else 0644.
	Mode string `json:"mode,omitempty"`
	// Owner of a written file, "user[:group]" (names or ids); the daemon
	// must be root. Default: the replaced file's owner, else the daemon's.
	Owner string `json:"owner,omitempty"`
	// Backup keeps the replaced file as Path + ".outpost-bak".
	Backup bool `json:"backup,omitempty"`

	// Playbook is an inline Ansible playbook (YAML), at most 1 MiB.
	Playbook string `json:"playbook,omitempty"`
}

// ContentFrom names content held in the image cache: a blob of a
// repository of the hub's own registry (`outpost blob push FILE` puts it
// there), which each site fetches over the WAN once and its nodes share.
type ContentFrom struct {
	// Blob is the content's digest, "sha256:<64 hex digits>".
	Blob string `json:"blob"`
	// Size is the content's length in bytes; when set it is checked too.
	Size int64 `json:"size,omitempty"`
	// Repository is the repository of the hub's registry that holds the
	// blob; DefaultContentRepository when empty.
	Repository string `json:"repository,omitempty"`
}

// DefaultContentRepository is where `outpost blob push` puts files and
// where contentFrom looks when it names no repository.
const DefaultContentRepository = "outpost/files"

// RepositoryOrDefault returns the repository the blob is read from.
func (c *ContentFrom) RepositoryOrDefault() string {
	if c.Repository == "" {
		return DefaultContentRepository
	}
	return c.Repository
}

// ReadLimit returns a read step's maxBytes, or DefaultReadBytes when it is
// not set.
func (s *Step) ReadLimit() int64 {
	if s.MaxBytes > 0 {
		return s.MaxBytes
	}
	return DefaultReadBytes
}

// BackupSuffix is appended to a written file's path to name its backup.
const BackupSuffix = ".outpost-bak"
