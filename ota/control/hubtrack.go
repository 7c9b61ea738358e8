package control

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/outpost-mesh/outpost/consensus"
	"github.com/outpost-mesh/outpost/ota"
)

// track keeps a running task's cache, counts and phase current.
func (h *Hub) track(ctx context.Context, obj *consensus.Object, spec *ota.TaskSpec, st *ota.TaskStatus) error {
	uid := string(obj.UID)
	h.mu.Lock()
	t, cached := h.tasks[uid]
	h.mu.Unlock()
	if cached {
		h.steer(t, spec, st)
	}
	if spec.Retry > st.Retries {
		return h.retry(ctx, obj, spec, st)
	}
	if !cached {
		// A new leader, or a task started by another: where its devices
		// are, from its results.
		results, err := taskResults(ctx, h.cfg.Store, obj.Name)
		if err != nil {
			return err
		}
		t = &hubTask{name: obj.Name, uid: uid, attempt: max(st.Attempt, 1), version: 1, spec: *spec,
			sites: map[string][]string{}, retry: map[string][]string{}, halted: spec.Halted || policyHalted(st), cancel: spec.Canceled}
		for _, r := range results.Items {
			var rs ota.DeviceResultSpec
			var rst ota.DeviceResultStatus
			if r.DecodeSpec(&rs) == nil && r.DecodeStatus(&rst) == nil {
				t.sites[rs.Site] = append(t.sites[rs.Site], rs.Node)
				if rst.Attempt == t.attempt && t.attempt > 1 {
					t.retry[rs.Site] = append(t.retry[rs.Site], rs.Node)
				}
			}
		}
		t.total = len(results.Items)
		h.mu.Lock()
		h.tasks[uid] = t
		h.mu.Unlock()
	}
	counts, sites, err := h.tally.counts(ctx, h.cfg.Store, obj.Name, obj.UID)
	if err != nil {
		return err
	}
	h.rebalance(t, sites)
	next := *st
	next.Conditions = slices.Clone(st.Conditions)
	next.Counts, next.Sites = h.withRunning(uid, counts, sites), sites
	if !spec.Halted && next.Phase == ota.TaskHalted && !policyHalted(&next) {
		next.Phase = ota.TaskRunning
		meta.RemoveStatusCondition(&next.Conditions, "Halted")
	}
	if spec.Halted && next.Phase == ota.TaskRunning {
		next.Phase = ota.TaskHalted
		meta.SetStatusCondition(&next.Conditions, metav1.Condition{Type: "Halted", Status: metav1.ConditionTrue, Reason: "Operator",
			Message: "halted by spec.halted; no new device starts, running ones finish; resume with `outpost task resume`"})
	}
	h.evaluate(spec, &next, t)
	now := metav1.Now()
	meta.SetStatusCondition(&next.Conditions, metav1.Condition{Type: "Counted", Status: metav1.ConditionTrue, Reason: "Counted",
		Message: fmt.Sprintf("%d of %d devices finished", next.Counts.Finished(), next.Counts.Total), LastTransitionTime: now})
	if reflect.DeepEqual(&next, st) {
		return nil // nothing new
	}
	// A task's status carries its targets (ten thousand names, for a big
	// one): progress alone is written at most every statusEvery, a change
	// of phase at once.
	h.mu.Lock()
	wait := next.Phase == st.Phase && time.Since(t.statusAt) < statusEvery
	h.mu.Unlock()
	if wait {
		return nil // a later pass writes it
	}
	if err := writeStatus(ctx, h.cfg.Store, obj, next); err != nil {
		return err
	}
	h.mu.Lock()
	t.statusAt = time.Now()
	h.mu.Unlock()
	return nil
}

// resultPhase returns a DeviceResult's site and phase from its labels,
// which every write of its status sets in the same write (creation,
// Ingest, a retry), so counting ten thousand results decodes none; one
// without them is decoded. ok is false for one that does not decode.
func resultPhase(r *consensus.Object) (site string, phase ota.DevicePhase, ok bool) {
	site, phase = r.Labels[ota.LabelSite], ota.DevicePhase(r.Labels[ota.LabelPhase])
	if site == "" || phase == "" {
		var rs ota.DeviceResultSpec
		var rst ota.DeviceResultStatus
		if r.DecodeSpec(&rs) != nil || r.DecodeStatus(&rst) != nil {
			return "", "", false
		}
		site, phase = rs.Site, rst.Phase
	}
	if phase == "" {
		phase = ota.DeviceQueued
	}
	return site, phase, true
}

// statusEvery is how often a running task's progress is written.
const statusEvery = 500 * time.Millisecond

// evaluate applies the failure policy and ends a task whose devices have
// all finished.
func (h *Hub) evaluate(spec *ota.TaskSpec, st *ota.TaskStatus, t *hubTask) {
	c := st.Counts
	total := c.Total
	over := func(limit *intstr.IntOrString, n int) bool {
		return limit != nil && n > ota.ResolveCount(limit, total, total)
	}
	if st.Phase == ota.TaskRunning && (over(spec.FailurePolicy.MaxFailures, c.Failed) || over(spec.FailurePolicy.MaxUnreachable, c.Unreachable)) {
		st.Phase = ota.TaskHalted
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: "Halted", Status: metav1.ConditionTrue, Reason: "FailurePolicy",
			Message: fmt.Sprintf("%d failed and %d unreachable passed spec.failurePolicy; no new device starts, running ones finish", c.Failed, c.Unreachable)})
		h.mu.Lock()
		if !t.halted {
			t.halted = true
			t.version++
		}
		h.mu.Unlock()
		h.log.Warn("task halted by its failure policy", "task", t.name, "failed", c.Failed, "unreachable", c.Unreachable)
	}
	if c.Finished() == total && total > 0 {
		now := metav1.Now()
		st.CompletionTime = &now
		switch {
		case spec.Canceled || c.Canceled > 0 && c.Canceled+c.Succeeded == total:
			st.Phase = ota.TaskCanceled
		case c.Succeeded == total:
			st.Phase = ota.TaskSucceeded
		default:
			st.Phase = ota.TaskFailed
		}
		h.log.Info("task finished", "task", t.name, "phase", st.Phase, "succeeded", c.Succeeded, "failed", c.Failed, "unreachable", c.Unreachable)
	}
}

// rebalance shares t's concurrency again (windowsLocked) with what the
// last count says of its sites (sites: the counts per site) and the sites
// that report; when a window moved, the sites get a new version of the
// assignment.
func (h *Hub) rebalance(t *hubTask, sites map[string]ota.Counts) {
	done := map[string]bool{}
	for site, c := range sites {
		if c.Total > 0 && c.Finished() == c.Total {
			done[site] = true
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	t.done = done
	win := h.windowsLocked(t, time.Now())
	if t.win != nil && windowsMoved(t, t.win, win) {
		t.version++
	}
	t.win = win
}

// windowsMoved reports whether a site of t with devices still to run has
// a window in next other than its window in last. A site that finished
// needs none, so its going does not make a new version (each would cost
// every site a write).
func windowsMoved(t *hubTask, last, next map[string]int) bool {
	for site := range t.sites {
		if !t.done[site] && last[site] != next[site] {
			return true
		}
	}
	return false
}

// policyHalted reports whether the failure policy halted the task.
func policyHalted(st *ota.TaskStatus) bool {
	c := meta.FindStatusCondition(st.Conditions, "Halted")
	return c != nil && c.Status == metav1.ConditionTrue && c.Reason == "FailurePolicy"
}

// steer carries spec.halted and spec.canceled to the sites: a change is a
// new assignment version. It reports whether anything changed.
func (h *Hub) steer(t *hubTask, spec *ota.TaskSpec, st *ota.TaskStatus) bool {
	halted := spec.Halted || policyHalted(st)
	h.mu.Lock()
	defer h.mu.Unlock()
	if t.halted == halted && t.cancel == spec.Canceled {
		return false
	}
	t.halted, t.cancel = halted, spec.Canceled
	t.version++
	return true
}

// retry re-queues the failed, timed-out and unreachable devices at the
// next attempt, within the same task.
func (h *Hub) retry(ctx context.Context, obj *consensus.Object, spec *ota.TaskSpec, st *ota.TaskStatus) error {
	results, err := taskResults(ctx, h.cfg.Store, obj.Name)
	if err != nil {
		return err
	}
	attempt := max(st.Attempt, 1) + 1
	again := map[string][]string{}
	now := metav1.Now()
	n := 0
	for _, r := range results.Items {
		var rs ota.DeviceResultSpec
		var rst ota.DeviceResultStatus
		if r.DecodeSpec(&rs) != nil || r.DecodeStatus(&rst) != nil {
			continue
		}
		switch rst.Phase {
		case ota.DeviceFailed, ota.DeviceTimedOut, ota.DeviceUnreachable:
		default:
			continue
		}
		next := r.DeepCopy()
		next.Labels[ota.LabelPhase] = string(ota.DeviceQueued)
		updated, err := h.cfg.Store.Update(ctx, &ota.DeviceResultKind, next)
		if err != nil {
			return err
		}
		if err := updated.SetStatus(ota.DeviceResultStatus{Phase: ota.DeviceQueued, Attempt: attempt, QueuedTime: &now}); err != nil {
			return err
		}
		updated.ResourceVersion = ""
		if _, err := h.cfg.Store.UpdateStatus(ctx, &ota.DeviceResultKind, updated); err != nil {
			return err
		}
		again[rs.Site] = append(again[rs.Site], rs.Node)
		n++
	}
	h.mu.Lock()
	if t, ok := h.tasks[string(obj.UID)]; ok {
		t.attempt, t.retry = attempt, again
		t.version++
	}
	h.mu.Unlock()
	next := *st
	next.Retries, next.Attempt, next.CompletionTime = spec.Retry, attempt, nil
	next.Phase = ota.TaskRunning
	meta.RemoveStatusCondition(&next.Conditions, "Halted")
	meta.SetStatusCondition(&next.Conditions, metav1.Condition{Type: "Retried", Status: metav1.ConditionTrue, Reason: "Retry",
		Message: fmt.Sprintf("attempt %d re-runs %d devices", attempt, n)})
	h.log.Info("task retried", "task", obj.Name, "attempt", attempt, "devices", n)
	return writeStatus(ctx, h.cfg.Store, obj, next)
}
