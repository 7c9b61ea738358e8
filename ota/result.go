package ota

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Labels the controller puts on every DeviceResult, so that results can be
// listed by task, site, node and phase with a label selector.
const (
	LabelTask  = Group + "/task"
	LabelSite  = Group + "/site"
	LabelNode  = Group + "/node"
	LabelPhase = Group + "/phase"
)

// DeviceResultSpec names the task and device a DeviceResult belongs to.
type DeviceResultSpec struct {
	Task string `json:"task"`
	Node string `json:"node"`
	Site string `json:"site,omitempty"`
}

// DevicePhase is where one device is in a task.
type DevicePhase string

// Device phases.
const (
	DeviceQueued    DevicePhase = "Queued"
	DeviceRunning   DevicePhase = "Running"
	DeviceSucceeded DevicePhase = "Succeeded"
	// DeviceFailed: a step without continueOnError failed.
	DeviceFailed DevicePhase = "Failed"
	// DeviceTimedOut: the device timeout ended the run.
	DeviceTimedOut DevicePhase = "TimedOut"
	// DeviceUnreachable: the device was offline past the delivery deadline.
	DeviceUnreachable DevicePhase = "Unreachable"
	DeviceCanceled    DevicePhase = "Canceled"
)

// Finished reports whether p is a final phase.
func (p DevicePhase) Finished() bool {
	switch p {
	case DeviceSucceeded, DeviceFailed, DeviceTimedOut, DeviceUnreachable, DeviceCanceled:
		return true
	}
	return false
}

// DeviceResultStatus is what one device did for one task.
type DeviceResultStatus struct {
	Phase DevicePhase `json:"phase,omitempty"`
	// Attempt is the task attempt this result belongs to (1 for the first
	// run, +1 per retry).
	Attempt int `json:"attempt,omitempty"`
	// Steps are the results of the steps, in order; steps after a failure
	// are listed as Skipped.
	Steps          []StepResult `json:"steps,omitempty"`
	QueuedTime     *metav1.Time `json:"queuedTime,omitempty"`
	StartTime      *metav1.Time `json:"startTime,omitempty"`
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`
	// Reason is a CamelCase word for why the device is in its phase
	// (one of the Reason constants); Message says it for people.
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
}

// StepPhase is the outcome of one step.
type StepPhase string

// Step phases.
const (
	// StepRunning is recorded on the node before a step starts, so that a
	// step interrupted by a crash is never run again.
	StepRunning   StepPhase = "Running"
	StepSucceeded StepPhase = "Succeeded"
	StepFailed    StepPhase = "Failed"
	// StepSkipped: the step did not run (an earlier step failed, or the
	// device timed out or was canceled first).
	StepSkipped StepPhase = "Skipped"
)

// StepResult is one step's outcome on one device.
type StepResult struct {
	Name  string    `json:"name"`
	Type  StepType  `json:"type"`
	Phase StepPhase `json:"phase"`
	// ExitCode of an exec or playbook process that exited; nil when it
	// did not start or was killed by a signal.
	ExitCode *int `json:"exitCode,omitempty"`
	// Stdout and Stderr of an exec or playbook step, head and tail.
	Stdout         Output       `json:"stdout,omitzero"`
	Stderr         Output       `json:"stderr,omitzero"`
	StartTime      *metav1.Time `json:"startTime,omitempty"`
	DurationMillis int64        `json:"durationMillis"`
	// Reason is a CamelCase word for a failure (one of the Reason
	// constants); Error says it for people.
	Reason string `json:"reason,omitempty"`
	Error  string `json:"error,omitempty"`

	// Read is a read step's result.
	Read *ReadResult `json:"read,omitempty"`
	// Write is a write step's result.
	Write *WriteResult `json:"write,omitempty"`
	// Playbook is a playbook step's result.
	Playbook *PlaybookResult `json:"playbook,omitempty"`
}

// OutputLimit is how much of a stream the head and the tail each keep.
const OutputLimit = 64 << 10

// Output is a captured stream: its first and last OutputLimit bytes. When
// the stream fits in Head, Tail is empty; Head+Tail is the whole stream
// unless Truncated, in which case the bytes between them were dropped. The
// full stream is in the node's log files.
type Output struct {
	Head       string `json:"head,omitempty"`
	Tail       string `json:"tail,omitempty"`
	TotalBytes int64  `json:"totalBytes,omitempty"`
	Truncated  bool   `json:"truncated,omitempty"`
}

// String returns head and tail with a marker where bytes were dropped.
func (o Output) String() string {
	if o.Truncated {
		return o.Head + "\n[... output truncated ...]\n" + o.Tail
	}
	return o.Head + o.Tail
}

// Encodings of read content.
const (
	EncodingUTF8   = "utf-8"
	EncodingBase64 = "base64"
)

// ReadResult is a file read by a read step.
type ReadResult struct {
	// Content is the file's bytes: as is when they are valid UTF-8, else
	// base64 (see Encoding).
	Content  string `json:"content"`
	Encoding string `json:"encoding"`
	Size     int64  `json:"size"`
	// Mode is the permission bits in octal, e.g. "0644".
	Mode  string      `json:"mode"`
	Mtime metav1.Time `json:"mtime"`
	// SHA256 of the content, lowercase hex.
	SHA256 string `json:"sha256"`
	// Omitted says Content was left out: the device's result would have
	// been over ResultBudget with it (several large reads).
	Omitted bool `json:"omitted,omitempty"`
}

// WriteResult is a file written by a write step.
type WriteResult struct {
	// SHA256 of the written content, lowercase hex.
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
	// BackupPath is where the replaced file was kept, when backup was
	// asked and a file was replaced.
	BackupPath string `json:"backupPath,omitempty"`
}

// PlaybookResult is what a playbook did, from Ansible's own accounting.
type PlaybookResult struct {
	// Recap is Ansible's PLAY RECAP: one entry per host (Play is empty),
	// over the whole playbook. The step's phase is decided from it.
	Recap []PlayRecap `json:"recap,omitempty"`
	// Plays are the task outcomes of each play, one entry per play and
	// host, in play order.
	Plays []PlayRecap `json:"plays,omitempty"`
}

// PlayRecap is what a play (or the playbook) did on one host, in Ansible's
// recap terms: OK counts every task that did not fail (changed ones and
// ignored failures included).
type PlayRecap struct {
	Play        string `json:"play,omitempty"`
	Host        string `json:"host,omitempty"`
	OK          int    `json:"ok"`
	Changed     int    `json:"changed"`
	Failed      int    `json:"failed"`
	Unreachable int    `json:"unreachable"`
	Skipped     int    `json:"skipped"`
	Rescued     int    `json:"rescued,omitempty"`
	Ignored     int    `json:"ignored,omitempty"`
}
