package consensus

import (
	"encoding/json"
	"strconv"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Object is a stored resource: Kubernetes-style type and object metadata with
// a spec and a status that the object's Kind decodes and validates.
type Object struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	// Spec is the desired state, owned by users.
	Spec json.RawMessage `json:"spec,omitempty"`
	// Status is the observed state, owned by controllers and written through
	// the status subresource.
	Status json.RawMessage `json:"status,omitempty"`
}

// DeepCopy returns a copy of o that shares no memory with it.
func (o *Object) DeepCopy() *Object {
	if o == nil {
		return nil
	}
	c := &Object{TypeMeta: o.TypeMeta}
	o.ObjectMeta.DeepCopyInto(&c.ObjectMeta)
	c.Spec = append(json.RawMessage(nil), o.Spec...)
	c.Status = append(json.RawMessage(nil), o.Status...)
	return c
}

// Revision returns the object's resourceVersion as the Raft index it is, or 0
// when it is unset or not a number.
func (o *Object) Revision() uint64 {
	rv, err := strconv.ParseUint(o.ResourceVersion, 10, 64)
	if err != nil {
		return 0
	}
	return rv
}

// DecodeSpec unmarshals the spec into v; an empty spec leaves v untouched.
func (o *Object) DecodeSpec(v any) error {
	if len(o.Spec) == 0 {
		return nil
	}
	return json.Unmarshal(o.Spec, v)
}

// DecodeStatus unmarshals the status into v; an empty status leaves v untouched.
func (o *Object) DecodeStatus(v any) error {
	if len(o.Status) == 0 {
		return nil
	}
	return json.Unmarshal(o.Status, v)
}

// SetSpec marshals v into the spec.
func (o *Object) SetSpec(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	o.Spec = b
	return nil
}

// SetStatus marshals v into the status.
func (o *Object) SetStatus(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	o.Status = b
	return nil
}

// List is the result of a list call: the matching objects and the
// resourceVersion the list was read at, from which a watch can continue.
type List struct {
	Items           []*Object
	ResourceVersion uint64
}

// formatRV formats a Raft index as a resourceVersion.
func formatRV(i uint64) string { return strconv.FormatUint(i, 10) }
