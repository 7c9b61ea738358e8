package components

import (
	"errors"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/outpost-mesh/outpost/clusters"
)

// round gathers one Install call's conditions. Components that share a
// condition type (CoreReady) set it together: True when all are, else
// the first that is not.
type round struct {
	t     *clusters.Target
	order []string                        // condition types, as first seen
	done  map[string][]ComponentCondition // finished components, by type
	shown map[string]metav1.Condition     // what the Cluster shows, by type
	errs  []error
}

func newRound(t *clusters.Target) *round {
	r := &round{t: t, done: map[string][]ComponentCondition{}, shown: map[string]metav1.Condition{}}
	for _, c := range t.Status.Conditions {
		r.shown[c.Type] = c
	}
	return r
}

// report shows a component's condition after a phase, together with the
// finished components of its type, unless the Cluster shows it already.
func (r *round) report(cc ComponentCondition) {
	c := aggregate(append(r.done[cc.Type][:len(r.done[cc.Type]):len(r.done[cc.Type])], cc))
	if s, ok := r.shown[c.Type]; ok && s.Status == c.Status && s.Reason == c.Reason && s.Message == c.Message {
		return
	}
	r.shown[c.Type] = c
	if r.t.Report != nil {
		r.t.Report(c)
	}
}

// finish records a component's final condition and error.
func (r *round) finish(cc ComponentCondition, err error) {
	if _, ok := r.done[cc.Type]; !ok {
		r.order = append(r.order, cc.Type)
	}
	r.done[cc.Type] = append(r.done[cc.Type], cc)
	if err != nil {
		r.errs = append(r.errs, err)
	} else if cc.Status != metav1.ConditionTrue && cc.Reason != ReasonUninstalled {
		// An Uninstalled component is as its spec asks: nothing to retry.
		r.errs = append(r.errs, fmt.Errorf("%s: %s", cc.Type, cc.Message))
	}
	r.report(cc)
}

// result is every type's condition, and an error wrapping ErrNotReady
// when one is not True.
func (r *round) result() ([]metav1.Condition, error) {
	out := make([]metav1.Condition, 0, len(r.order))
	for _, typ := range r.order {
		out = append(out, aggregate(r.done[typ]))
	}
	if len(r.errs) > 0 {
		return out, fmt.Errorf("%w: %w", ErrNotReady, errors.Join(r.errs...))
	}
	return out, nil
}

// aggregate is the condition of components that share a type: the first
// False, else the first Unknown, else True with every message.
func aggregate(ccs []ComponentCondition) metav1.Condition {
	for _, want := range []metav1.ConditionStatus{metav1.ConditionFalse, metav1.ConditionUnknown} {
		for _, c := range ccs {
			if c.Status == want {
				return c.condition()
			}
		}
	}
	out := ccs[0].condition()
	for _, c := range ccs[1:] {
		out.Message += "; " + c.Message
	}
	return out
}
