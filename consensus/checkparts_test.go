package consensus

import (
	"errors"
	"strings"
	"testing"
)

// refusing fails every decode: a check that decodes it fails.
type refusing struct{ A int }

func (*refusing) UnmarshalJSON([]byte) error { return errors.New("decoded") }

// otherSpec marshals like refusing but is another type.
type otherSpec struct{ A int }

// TestCheckPartsTrustsItsOwnMarshal: a spec or status that SetSpec or
// SetStatus marshalled from the kind's own type (or a deep copy of it) is
// not decoded again; bytes set any other way, or from another type, are.
func TestCheckPartsTrustsItsOwnMarshal(t *testing.T) {
	t.Parallel()
	k := &Kind{Group: "test.outpost.dev", Version: "v1", Kind: "Refusing", Plural: "refusings",
		NewSpec: func() any { return &refusing{} }, NewStatus: func() any { return &refusing{} }}
	tests := []struct {
		name    string
		obj     func() *Object
		decoded bool
	}{
		{"SetSpec of the kind's type", func() *Object { o := &Object{}; _ = o.SetSpec(refusing{A: 1}); return o }, false},
		{"SetStatus of a pointer to it", func() *Object { o := &Object{}; _ = o.SetStatus(&refusing{A: 1}); return o }, false},
		{"a deep copy", func() *Object {
			o := &Object{}
			_ = o.SetSpec(refusing{A: 1})
			_ = o.SetStatus(refusing{})
			return o.DeepCopy()
		}, false},
		{"bytes set by hand", func() *Object { return &Object{Spec: []byte(`{"A":1}`)} }, true},
		{"bytes replaced after SetSpec", func() *Object { o := &Object{}; _ = o.SetSpec(refusing{A: 1}); o.Spec = []byte(`{"A":2}`); return o }, true},
		{"status replaced after SetStatus", func() *Object {
			o := &Object{}
			_ = o.SetStatus(refusing{A: 1})
			o.Status = []byte(`{"A":2}`)
			return o
		}, true},
		{"another type", func() *Object { o := &Object{}; _ = o.SetSpec(otherSpec{A: 1}); return o }, true},
	}
	for _, tc := range tests {
		err := k.checkParts(tc.obj())
		if decoded := err != nil && strings.Contains(err.Error(), "decoded"); decoded != tc.decoded {
			t.Errorf("%s: checkParts = %v, want decoded %v", tc.name, err, tc.decoded)
		}
	}
}
