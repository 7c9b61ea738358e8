package ota

import (
	"fmt"
	"reflect"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/outpost-mesh/outpost/consensus"
)

// validateTask is TaskKind's Validate.
func validateTask(obj *consensus.Object) field.ErrorList {
	var spec TaskSpec
	if err := obj.DecodeSpec(&spec); err != nil {
		return field.ErrorList{field.Invalid(field.NewPath("spec"), string(obj.Spec), err.Error())}
	}
	return ValidateTaskSpec(&spec, field.NewPath("spec"))
}

// validateTaskUpdate refuses a change to a task's spec other than its
// steering (halted, canceled, retry): the sites and nodes run the spec the
// task started with, so a changed step, target or limit would be shown
// but not run. A cancel cannot be undone.
func validateTaskUpdate(obj, old *consensus.Object) field.ErrorList {
	var next, prev TaskSpec
	if obj.DecodeSpec(&next) != nil || old.DecodeSpec(&prev) != nil {
		return nil // validateTask names what does not decode
	}
	path := field.NewPath("spec")
	var errs field.ErrorList
	fixed := []struct {
		name       string
		next, prev any
	}{
		{"targets", next.Targets, prev.Targets},
		{"steps", next.Steps, prev.Steps},
		{"concurrency", next.Concurrency, prev.Concurrency},
		{"perSite", next.PerSite, prev.PerSite},
		{"failurePolicy", next.FailurePolicy, prev.FailurePolicy},
		{"deviceTimeout", next.DeviceTimeout, prev.DeviceTimeout},
		{"deliveryDeadline", next.DeliveryDeadline, prev.DeliveryDeadline},
	}
	for _, f := range fixed {
		if !reflect.DeepEqual(f.next, f.prev) {
			errs = append(errs, field.Forbidden(path.Child(f.name),
				"cannot change once the task is created (only halted, canceled and retry can): apply it under a new name, or delete this one first"))
		}
	}
	if prev.Canceled && !next.Canceled {
		errs = append(errs, field.Forbidden(path.Child("canceled"), "a canceled task cannot be resumed: apply it under a new name"))
	}
	if next.Retry < prev.Retry {
		errs = append(errs, field.Invalid(path.Child("retry"), next.Retry, fmt.Sprintf("can only be raised (it is %d)", prev.Retry)))
	}
	return errs
}

// ValidateTaskSpec checks a task spec beyond its types and returns every
// problem with its field path under path (normally "spec").
func ValidateTaskSpec(spec *TaskSpec, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	errs = append(errs, validateTargets(&spec.Targets, path.Child("targets"))...)

	stepsPath := path.Child("steps")
	switch {
	case len(spec.Steps) == 0:
		errs = append(errs, field.Required(stepsPath, "a task needs at least one step"))
	case len(spec.Steps) > MaxSteps:
		errs = append(errs, field.TooMany(stepsPath, len(spec.Steps), MaxSteps))
	}
	names := sets.New[string]()
	for i := range spec.Steps {
		p := stepsPath.Index(i)
		errs = append(errs, ValidateStep(&spec.Steps[i], p)...)
		if n := spec.Steps[i].Name; n != "" {
			if names.Has(n) {
				errs = append(errs, field.Duplicate(p.Child("name"), n))
			}
			names.Insert(n)
		}
	}

	errs = append(errs, validateCount(spec.Concurrency, 1, path.Child("concurrency"))...)
	errs = append(errs, validateCount(spec.PerSite, 1, path.Child("perSite"))...)
	fp := path.Child("failurePolicy")
	errs = append(errs, validateCount(spec.FailurePolicy.MaxFailures, 0, fp.Child("maxFailures"))...)
	errs = append(errs, validateCount(spec.FailurePolicy.MaxUnreachable, 0, fp.Child("maxUnreachable"))...)
	errs = append(errs, validateDuration(spec.DeviceTimeout, path.Child("deviceTimeout"))...)
	errs = append(errs, validateDuration(spec.DeliveryDeadline, path.Child("deliveryDeadline"))...)
	return errs
}

func validateTargets(t *Targets, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	if len(t.Nodes) == 0 && len(t.Sites) == 0 && t.Selector == nil {
		return field.ErrorList{field.Required(path, "give nodes, sites or a selector")}
	}
	errs = append(errs, validateNames(t.Nodes, validation.IsDNS1123Subdomain, path.Child("nodes"))...)
	errs = append(errs, validateNames(t.Sites, validation.IsDNS1123Label, path.Child("sites"))...)
	if t.Selector != nil {
		sp := path.Child("selector")
		verrs := metav1validation.ValidateLabelSelector(t.Selector, metav1validation.LabelSelectorValidationOptions{}, sp)
		errs = append(errs, verrs...)
		if len(verrs) == 0 {
			if _, err := metav1.LabelSelectorAsSelector(t.Selector); err != nil {
				errs = append(errs, field.Invalid(sp, t.Selector, err.Error()))
			}
		}
	}
	return errs
}

func validateNames(names []string, check func(string) []string, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	seen := sets.New[string]()
	for i, n := range names {
		for _, msg := range check(n) {
			errs = append(errs, field.Invalid(path.Index(i), n, msg))
		}
		if seen.Has(n) {
			errs = append(errs, field.Duplicate(path.Index(i), n))
		}
		seen.Insert(n)
	}
	return errs
}

func validateDuration(d metav1.Duration, path *field.Path) field.ErrorList {
	if d.Duration < 0 {
		return field.ErrorList{field.Invalid(path, d.Duration.String(), "must not be negative")}
	}
	return nil
}

// mustNotSet returns a Forbidden error for each field set that a step of
// type t does not take.
func mustNotSet(t StepType, path *field.Path, fields map[string]bool) field.ErrorList {
	var errs field.ErrorList
	for _, name := range sets.List(sets.KeySet(fields)) {
		if fields[name] {
			errs = append(errs, field.Forbidden(path.Child(name), fmt.Sprintf("not used by %s steps", t)))
		}
	}
	return errs
}
