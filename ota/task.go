package ota

import (
	"fmt"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Group and Version of the OTA resources.
const (
	Group   = "ota.outpost.dev"
	Version = "v1alpha1"
)

// Defaults of a Task spec.
const (
	// DefaultConcurrency is how many devices of a task run at once when
	// spec.concurrency is not set.
	DefaultConcurrency = 50
	// DefaultDeviceTimeout bounds one device's run of all steps.
	DefaultDeviceTimeout = 10 * time.Minute
	// DefaultDeliveryDeadline is how long an offline device is waited for
	// before it is Unreachable.
	DefaultDeliveryDeadline = time.Hour
)

// TaskSpec is what an operator asks: these steps, on these targets, this
// many at a time, stopping past these failures.
type TaskSpec struct {
	// Targets select the nodes; they are resolved once, when the task
	// starts, and listed in status.targets.
	Targets Targets `json:"targets"`
	// Steps run in order on every target.
	Steps []Step `json:"steps"`
	// Concurrency is how many devices run at once across the task: a
	// number or a percentage of the targets ("10%"). Default 50.
	Concurrency *intstr.IntOrString `json:"concurrency,omitempty"`
	// PerSite caps the devices running at once within each site: a number
	// or a percentage of the site's targets. Unset means no cap beyond
	// Concurrency.
	PerSite *intstr.IntOrString `json:"perSite,omitempty"`
	// FailurePolicy halts the task past a number of failed or unreachable
	// devices.
	FailurePolicy FailurePolicy `json:"failurePolicy,omitzero"`
	// DeviceTimeout bounds one device's run of all its steps. Default 10m.
	DeviceTimeout metav1.Duration `json:"deviceTimeout,omitzero"`
	// DeliveryDeadline is how long to wait for a device that is offline
	// before it is Unreachable; a device back in time runs. Default 1h.
	DeliveryDeadline metav1.Duration `json:"deliveryDeadline,omitzero"`
	// Halted stops new devices from starting; running ones finish.
	// `outpost task halt` sets it and `resume` clears it.
	Halted bool `json:"halted,omitempty"`
	// Canceled cancels the task: queued devices are canceled and running
	// ones killed (`outpost task cancel`). It cannot be undone.
	Canceled bool `json:"canceled,omitempty"`
	// Retry, when raised, re-runs the failed, timed-out and unreachable
	// devices once more in the same task (`outpost task retry --failed`).
	Retry int `json:"retry,omitempty"`
}

// TaskFinalizer is on every running or halted task: deleting such a task
// first cancels it (queued devices canceled, running ones killed), and the
// hub removes the finalizer, and so the task, once none of its devices runs
// or after a grace period (a site cut off from the hub cannot be told).
const TaskFinalizer = Group + "/stop-devices"

// Targets select nodes by name, by site and by label. A node matching any
// of them is a target; at least one must be given.
type Targets struct {
	// Nodes are node names.
	Nodes []string `json:"nodes,omitempty"`
	// Sites are site names: every node of each site.
	Sites []string `json:"sites,omitempty"`
	// Selector matches node labels. An empty selector ({}) matches every
	// node.
	Selector *metav1.LabelSelector `json:"selector,omitempty"`
}

// FailurePolicy says when a task halts: past either limit no new device
// starts, running devices finish and the task is Halted. A limit is a
// number or a percentage of the targets; unset means no limit.
type FailurePolicy struct {
	// MaxFailures is how many devices may fail (Failed or TimedOut)
	// before the task halts; 0 halts at the first failure.
	MaxFailures *intstr.IntOrString `json:"maxFailures,omitempty"`
	// MaxUnreachable is how many devices may be Unreachable before the
	// task halts.
	MaxUnreachable *intstr.IntOrString `json:"maxUnreachable,omitempty"`
}

// DeviceTimeoutOrDefault returns spec.deviceTimeout, or DefaultDeviceTimeout
// when it is not set.
func (s *TaskSpec) DeviceTimeoutOrDefault() time.Duration {
	if s.DeviceTimeout.Duration > 0 {
		return s.DeviceTimeout.Duration
	}
	return DefaultDeviceTimeout
}

// DeliveryDeadlineOrDefault returns spec.deliveryDeadline, or
// DefaultDeliveryDeadline when it is not set.
func (s *TaskSpec) DeliveryDeadlineOrDefault() time.Duration {
	if s.DeliveryDeadline.Duration > 0 {
		return s.DeliveryDeadline.Duration
	}
	return DefaultDeliveryDeadline
}

// TaskPhase is where a task is in its life.
type TaskPhase string

// Task phases.
const (
	// TaskPending: accepted, targets not resolved yet.
	TaskPending TaskPhase = "Pending"
	// TaskRunning: targets fixed, devices queued or running.
	TaskRunning TaskPhase = "Running"
	// TaskSucceeded: every device succeeded.
	TaskSucceeded TaskPhase = "Succeeded"
	// TaskFailed: every device finished and at least one did not succeed,
	// or the targets matched no node.
	TaskFailed TaskPhase = "Failed"
	// TaskHalted: the failure policy stopped new devices from starting.
	TaskHalted TaskPhase = "Halted"
	// TaskCanceled: an operator canceled the task.
	TaskCanceled TaskPhase = "Canceled"
)

// TaskStatus is the hub's view of a task.
type TaskStatus struct {
	Phase TaskPhase `json:"phase,omitempty"`
	// Counts are the devices in each state, across the task.
	Counts Counts `json:"counts,omitzero"`
	// Sites are the counts per site.
	Sites map[string]Counts `json:"sites,omitempty"`
	// Targets are the node names the targets resolved to when the task
	// started; they do not change afterwards.
	Targets []string `json:"targets,omitempty"`
	// NotFound are the names in spec.targets that matched no node when the
	// task started (a node not in the mesh, a site without nodes); the
	// devices that did match run.
	NotFound *NotFound `json:"notFound,omitempty"`
	// StepCount is the number of steps, for the table.
	StepCount int `json:"stepCount,omitempty"`
	// Attempt counts runs of the task: 1 for the first, +1 each retry.
	Attempt        int                `json:"attempt,omitempty"`
	StartTime      *metav1.Time       `json:"startTime,omitempty"`
	CompletionTime *metav1.Time       `json:"completionTime,omitempty"`
	Conditions     []metav1.Condition `json:"conditions,omitempty"`
	// Retries is the spec.retry this status has acted on.
	Retries int `json:"retries,omitempty"`
}

// NotFound are target names that matched no node.
type NotFound struct {
	Nodes []string `json:"nodes,omitempty"`
	Sites []string `json:"sites,omitempty"`
}

// String lists the names, at most ten, as "node a, node b, site c".
func (n *NotFound) String() string {
	var parts []string
	for _, name := range n.Nodes {
		parts = append(parts, "node "+name)
	}
	for _, name := range n.Sites {
		parts = append(parts, "site "+name)
	}
	if len(parts) > 10 {
		parts = append(parts[:10], fmt.Sprintf("and %d more", len(parts)-10))
	}
	return strings.Join(parts, ", ")
}

// Counts are device counts by state. Total is the sum of the others.
type Counts struct {
	Total       int `json:"total"`
	Queued      int `json:"queued"`
	Running     int `json:"running"`
	Succeeded   int `json:"succeeded"`
	Failed      int `json:"failed"`
	Unreachable int `json:"unreachable"`
	Canceled    int `json:"canceled"`
}

// Finished is how many devices have ended: succeeded, failed (or timed
// out), unreachable or canceled.
func (c Counts) Finished() int { return c.Succeeded + c.Failed + c.Unreachable + c.Canceled }

// Add counts n devices in phase p; TimedOut counts as failed, and n may be
// negative to move a device out of a phase.
func (c *Counts) Add(p DevicePhase, n int) {
	c.Total += n
	switch p {
	case DeviceQueued:
		c.Queued += n
	case DeviceRunning:
		c.Running += n
	case DeviceSucceeded:
		c.Succeeded += n
	case DeviceFailed, DeviceTimedOut:
		c.Failed += n
	case DeviceUnreachable:
		c.Unreachable += n
	case DeviceCanceled:
		c.Canceled += n
	}
}
