package agent

import (
	"context"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/outpost-mesh/outpost/ota"
)

// Device is one device's run of one task attempt: the steps and what
// they need on this node.
type Device struct {
	Env     Env
	Attempt int
	Steps   []ota.Step
	// Timeout bounds the whole run (spec.deviceTimeout); zero means only
	// ctx bounds it. A caller resuming a run after a re-dispatch passes
	// what remains of the device's budget.
	Timeout time.Duration
	Policy  Policy
	// Blobs opens contentFrom blobs; nil fails steps that use one.
	Blobs BlobOpener
	// LogDir holds the steps' full output (see RunStep); one directory
	// per task attempt, "" for none.
	LogDir string
	// Journal records step results on this node; nil records nothing, so
	// a re-dispatch would run the steps again (tests, one-shot runs).
	Journal Journal
}

// RunDevice runs d's steps in order and returns the device's status
// (Phase, Attempt, Steps, StartTime, CompletionTime, Reason, Message; the
// caller owns QueuedTime).
//
// For each step i it first asks the journal:
//   - a recorded result is returned as it is, and the step is not run;
//   - a recorded Running marker means the step started and never
//     finished (the agent died): it is not run again but recorded as
//     Failed with reason Interrupted;
//   - otherwise a Running marker is recorded, the step runs, and its
//     result is recorded before the next step is looked at.
//
// So a step runs at most once per attempt, however often the device is
// dispatched. A failed step stops the run unless it has continueOnError;
// the steps not run are listed as Skipped. The phase is Succeeded when
// every step succeeded or failed with continueOnError, TimedOut when the
// device timeout ended the run, Canceled when ctx did, and Failed
// otherwise. A journal error fails the device with reason JournalError
// and runs nothing more.
func RunDevice(ctx context.Context, d Device) ota.DeviceResultStatus {
	st := ota.DeviceResultStatus{Phase: ota.DeviceRunning, Attempt: d.Attempt, StartTime: now()}
	var dctx context.Context
	var cancel context.CancelFunc
	if d.Timeout > 0 {
		dctx, cancel = context.WithTimeoutCause(ctx, d.Timeout, errDeviceTimeout)
	} else {
		dctx, cancel = context.WithCancel(ctx)
	}
	defer cancel()
	j := d.Journal
	if j == nil {
		j = nopJournal{}
	}

	var stop *stepError // why the remaining steps are skipped
	for i, step := range d.Steps {
		if stop != nil {
			st.Steps = append(st.Steps, skipped(&step, stop))
			continue
		}
		r, err := runOnce(dctx, &d, i, &step, j)
		if err != nil {
			stop = err
			if r == nil {
				st.Steps = append(st.Steps, skipped(&step, stop))
				continue
			}
		}
		st.Steps = append(st.Steps, *r)
		if stop == nil && r.Phase == ota.StepFailed {
			if !step.ContinueOnError {
				stop = stepErr(deviceReason(r.Reason), "step %q failed: %s: %s", step.Name, r.Reason, r.Error)
			} else if st.Message == "" {
				st.Message = fmt.Sprintf("step %q failed and was tolerated (continueOnError): %s", step.Name, r.Error)
			}
		}
	}
	st.CompletionTime = now()
	st.Phase = ota.DeviceSucceeded
	if stop != nil {
		st.Reason, st.Message = stop.reason, stop.msg
		switch stop.reason {
		case ota.ReasonDeviceTimeout:
			st.Phase = ota.DeviceTimedOut
		case ota.ReasonCanceled:
			st.Phase = ota.DeviceCanceled
		default:
			st.Phase = ota.DeviceFailed
		}
	}
	st.Fit() // the result travels whole through RPC, Raft and the hub link
	return st
}

// runOnce returns step i's result from the journal, or runs it between
// a Running marker and its recorded result; a step not recorded is not
// started once ctx is done. A non-nil error stops the device; r is then the
// step's result if it has one.
func runOnce(ctx context.Context, d *Device, i int, step *ota.Step, j Journal) (*ota.StepResult, *stepError) {
	r, ok, err := j.Lookup(i)
	switch {
	case err != nil:
		return nil, stepErr(ota.ReasonJournal, "look up step %q: %v", step.Name, err)
	case ok && (r.Name != step.Name || r.Type != step.Type):
		return nil, stepErr(ota.ReasonJournal, "step %d is %q (%s) but the journal holds %q (%s)", i, step.Name, step.Type, r.Name, r.Type)
	case ok && r.Phase == ota.StepRunning:
		r.Phase, r.Reason = ota.StepFailed, ota.ReasonInterrupted
		r.Error = "the step started but the agent stopped before it finished; it is not run again"
		if err := j.Record(i, r); err != nil {
			return &r, stepErr(ota.ReasonJournal, "record step %q: %v", step.Name, err)
		}
		return &r, nil
	case ok:
		return &r, nil
	}
	if ctx.Err() != nil {
		reason, _ := killReason(ctx)
		return nil, stepErr(reason, "%v before step %q started", context.Cause(ctx), step.Name)
	}
	// A read changes nothing on the node: run again after a crash, it
	// does no harm, so it is not marked before it runs. That saves a
	// read one durable journal write of its two (an fsync on a node; a
	// tenth of a simulated member's work in a 10,000-node read).
	if step.Type != ota.StepRead {
		marker := ota.StepResult{Name: step.Name, Type: step.Type, Phase: ota.StepRunning, StartTime: now()}
		if err := j.Record(i, marker); err != nil {
			return nil, stepErr(ota.ReasonJournal, "record step %q start: %v", step.Name, err)
		}
	}
	r = RunStep(ctx, *step, d.Env, d.Policy, d.Blobs, d.LogDir)
	if err := j.Record(i, r); err != nil {
		return &r, stepErr(ota.ReasonJournal, "record step %q: %v", step.Name, err)
	}
	return &r, nil
}

// deviceReason is the device's reason when a step failed with reason.
func deviceReason(reason string) string {
	switch reason {
	case ota.ReasonDeviceTimeout, ota.ReasonCanceled, ota.ReasonJournal:
		return reason
	}
	return ota.ReasonStepFailed
}

// skipped is the result of a step that did not run because of why.
func skipped(step *ota.Step, why *stepError) ota.StepResult {
	reason := why.reason
	switch reason {
	case ota.ReasonDeviceTimeout, ota.ReasonCanceled, ota.ReasonJournal:
	default:
		reason = ota.ReasonPreviousStepFailed
	}
	return ota.StepResult{Name: step.Name, Type: step.Type, Phase: ota.StepSkipped, Reason: reason, Error: fmt.Sprintf("not run: %s", why.msg)}
}

func now() *metav1.Time {
	t := metav1.Now()
	return &t
}
