package control

import (
	"context"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/outpost-mesh/outpost/consensus"
	"github.com/outpost-mesh/outpost/ota"
)

// recountEvery bounds how stale a task's counts get when no result arrives
// (a new leader's first pass, a device that timed out at its site).
const recountEvery = 5 * time.Second

// track keeps a running task's cache, counts and phase current.
func (h *Hub) track(ctx context.Context, obj *consensus.Object, spec *ota.TaskSpec, st *ota.TaskStatus) error {
	uid := string(obj.UID)
	h.mu.Lock()
	t, cached := h.tasks[uid]
	dirty := h.dirty[obj.Name]
	delete(h.dirty, obj.Name)
	h.mu.Unlock()
	if cached && !dirty && time.Since(lastCount(st)) < recountEvery {
		return nil
	}
	results, err := h.cfg.Store.List(ctx, &ota.DeviceResultKind, "", labels.SelectorFromSet(labels.Set{ota.LabelTask: obj.Name}), consensus.ReadOptions{Stale: true})
	if err != nil {
		return err
	}
	if !cached {
		t = &hubTask{name: obj.Name, uid: uid, attempt: max(st.Attempt, 1), version: 1, spec: *spec, sites: map[string][]string{}, halted: st.Phase == ota.TaskHalted}
		for _, r := range results.Items {
			var rs ota.DeviceResultSpec
			if r.DecodeSpec(&rs) == nil {
				t.sites[rs.Site] = append(t.sites[rs.Site], rs.Node)
			}
		}
		t.total = len(results.Items)
		h.mu.Lock()
		h.tasks[uid] = t
		h.mu.Unlock()
	}
	next := *st
	next.Counts, next.Sites = ota.Counts{}, map[string]ota.Counts{}
	for _, r := range results.Items {
		var rs ota.DeviceResultSpec
		var rst ota.DeviceResultStatus
		if r.DecodeSpec(&rs) != nil || r.DecodeStatus(&rst) != nil {
			continue
		}
		phase := rst.Phase
		if phase == "" {
			phase = ota.DeviceQueued
		}
		next.Counts.Add(phase, 1)
		c := next.Sites[rs.Site]
		c.Add(phase, 1)
		next.Sites[rs.Site] = c
	}
	h.evaluate(spec, &next, t)
	now := metav1.Now()
	meta.SetStatusCondition(&next.Conditions, metav1.Condition{Type: "Counted", Status: metav1.ConditionTrue, Reason: "Counted",
		Message: fmt.Sprintf("%d of %d devices finished", finished(next.Counts), next.Counts.Total), LastTransitionTime: now})
	return writeStatus(ctx, h.cfg.Store, obj, next)
}

// lastCount is when the counts were last written.
func lastCount(st *ota.TaskStatus) time.Time {
	if c := meta.FindStatusCondition(st.Conditions, "Counted"); c != nil {
		return c.LastTransitionTime.Time
	}
	return time.Time{}
}

func finished(c ota.Counts) int { return c.Succeeded + c.Failed + c.Unreachable + c.Canceled }

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
	if finished(c) == total && total > 0 {
		now := metav1.Now()
		st.CompletionTime = &now
		switch {
		case c.Canceled > 0 && c.Canceled+c.Succeeded == total:
			st.Phase = ota.TaskCanceled
		case c.Succeeded == total:
			st.Phase = ota.TaskSucceeded
		default:
			st.Phase = ota.TaskFailed
		}
		h.log.Info("task finished", "task", t.name, "phase", st.Phase, "succeeded", c.Succeeded, "failed", c.Failed, "unreachable", c.Unreachable)
	}
}
