package ota

import (
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/outpost-mesh/outpost/consensus"
)

// Kinds of the ota.outpost.dev group. Both are cluster-scoped.
var (
	// TaskKind is a batch operation: steps run on a set of nodes.
	TaskKind = consensus.Kind{
		Group: Group, Version: Version, Kind: "Task", Plural: "tasks", ShortNames: []string{"tk"},
		NewSpec:        func() any { return &TaskSpec{} },
		NewStatus:      func() any { return &TaskStatus{} },
		Validate:       validateTask,
		ValidateUpdate: validateTaskUpdate,
		Columns: []consensus.Column{
			{Name: "Phase", Type: "string", JSONPath: ".status.phase"},
			{Name: "Total", Type: "integer", JSONPath: ".status.counts.total"},
			{Name: "Succeeded", Type: "integer", JSONPath: ".status.counts.succeeded"},
			{Name: "Failed", Type: "integer", JSONPath: ".status.counts.failed"},
			{Name: "Running", Type: "integer", JSONPath: ".status.counts.running"},
			{Name: "Queued", Type: "integer", JSONPath: ".status.counts.queued"},
			{Name: "Unreachable", Type: "integer", JSONPath: ".status.counts.unreachable", Priority: 1},
			{Name: "Canceled", Type: "integer", JSONPath: ".status.counts.canceled", Priority: 1},
			{Name: "Steps", Type: "integer", JSONPath: ".status.stepCount", Priority: 1},
			{Name: "Attempt", Type: "integer", JSONPath: ".status.attempt", Priority: 1},
			{Name: "Started", Type: "date", JSONPath: ".status.startTime", Priority: 1},
		},
	}
	// DeviceResultKind is one device's result of one task. The controller
	// writes it; the API serves it read-only.
	DeviceResultKind = consensus.Kind{
		Group: Group, Version: Version, Kind: "DeviceResult", Plural: "deviceresults", ShortNames: []string{"dr"}, ReadOnly: true,
		NewSpec:    func() any { return &DeviceResultSpec{} },
		NewStatus:  func() any { return &DeviceResultStatus{} },
		Validate:   validateDeviceResult,
		NamePrefix: resultNamePrefix,
		Columns: []consensus.Column{
			{Name: "Task", Type: "string", JSONPath: ".spec.task"},
			{Name: "Node", Type: "string", JSONPath: ".spec.node"},
			{Name: "Site", Type: "string", JSONPath: ".spec.site"},
			{Name: "Phase", Type: "string", JSONPath: ".status.phase"},
			{Name: "Attempt", Type: "integer", JSONPath: ".status.attempt"},
			{Name: "Reason", Type: "string", JSONPath: ".status.reason", Priority: 1},
		},
	}
)

// Register adds TaskKind and DeviceResultKind to r.
func Register(r *consensus.Registry) error {
	for _, k := range []consensus.Kind{TaskKind, DeviceResultKind} {
		if err := r.Register(k); err != nil {
			return err
		}
	}
	return nil
}

func validateDeviceResult(obj *consensus.Object) field.ErrorList {
	var spec DeviceResultSpec
	if err := obj.DecodeSpec(&spec); err != nil {
		return field.ErrorList{field.Invalid(field.NewPath("spec"), string(obj.Spec), err.Error())}
	}
	var errs field.ErrorList
	if spec.Task == "" {
		errs = append(errs, field.Required(field.NewPath("spec", "task"), ""))
	}
	if spec.Node == "" {
		errs = append(errs, field.Required(field.NewPath("spec", "node"), ""))
	}
	if len(errs) == 0 && obj.Name != ResultName(spec.Task, spec.Node) {
		errs = append(errs, field.Invalid(field.NewPath("metadata", "name"), obj.Name, "must be "+ResultName(spec.Task, spec.Node)+" (spec.task.spec.node)"))
	}
	if obj.Labels[LabelTask] != spec.Task {
		errs = append(errs, field.Invalid(field.NewPath("metadata", "labels").Key(LabelTask), obj.Labels[LabelTask], "must be spec.task, "+spec.Task))
	}
	return errs
}

// ResultName is the name of a task's DeviceResult for a node.
func ResultName(task, node string) string { return task + "." + node }

// resultNamePrefix narrows a list of DeviceResults by task (the label
// LabelTask) to the names of that task's results: a task's results are
// read without decoding every other task's.
func resultNamePrefix(sel labels.Selector) string {
	if task, ok := sel.RequiresExactMatch(LabelTask); ok {
		return ResultName(task, "")
	}
	return ""
}
