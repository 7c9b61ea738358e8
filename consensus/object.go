package consensus

import (
	"encoding/json"
	"reflect"
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

	// specFrom and statusFrom remember the Go type that SetSpec and
	// SetStatus marshalled the current bytes from (part).
	specFrom, statusFrom part
}

// part remembers that a spec's or status's bytes are exactly what
// json.Marshal made of a value of type t: the store need not decode them
// into t again to know they decode strictly (Kind.checkParts), which for
// a controller's writes was a decode per write.
type part struct {
	at *byte
	n  int
	t  reflect.Type
}

// partOf marks b as marshalled from v.
func partOf(b []byte, v any) part {
	t := valueType(v)
	if len(b) == 0 || t == nil {
		return part{}
	}
	return part{at: &b[0], n: len(b), t: t}
}

// valueType is v's type with pointers taken off (nil for nil).
func valueType(v any) reflect.Type {
	t := reflect.TypeOf(v)
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

// typeOf returns the type b was marshalled from, or nil when b is not the
// slice the mark was made for (the part was set some other way since).
func (p part) typeOf(b []byte) reflect.Type {
	if p.t == nil || len(b) != p.n || &b[0] != p.at {
		return nil
	}
	return p.t
}

// moved is p for c, a copy of the bytes p marks.
func (p part) moved(from, c []byte) part {
	if p.typeOf(from) == nil || len(c) != len(from) {
		return part{}
	}
	return part{at: &c[0], n: len(c), t: p.t}
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
	c.specFrom, c.statusFrom = o.specFrom.moved(o.Spec, c.Spec), o.statusFrom.moved(o.Status, c.Status)
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
	o.Spec, o.specFrom = b, partOf(b, v)
	return nil
}

// SetStatus marshals v into the status.
func (o *Object) SetStatus(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	o.Status, o.statusFrom = b, partOf(b, v)
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
