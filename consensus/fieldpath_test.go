package consensus

import (
	"encoding/json"
	"reflect"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

type pathInner struct {
	Every *metav1.Duration `json:"every,omitempty"`
}

type pathEmbedded struct {
	Since metav1.Time `json:"since,omitzero"`
}

type pathSpec struct {
	pathEmbedded
	Name   string                     `json:"name"`
	Steps  []pathInner                `json:"steps"`
	ByName map[string]metav1.Duration `json:"byName"`
	Skip   metav1.Duration            `json:"-"`
}

// TestRefusingField: a value refused by its type's own decoder is found
// by its path, in embedded structs, slices and maps, and only when its
// error is the one the decode returned.
func TestRefusingField(t *testing.T) {
	t.Parallel()
	typ := reflect.TypeFor[*pathSpec]()
	for _, tc := range []struct {
		data, path string
		found      bool
	}{
		{`{"name":"a","steps":[{"every":"1s"},{"every":"5x"}]}`, "spec.steps[1].every", true},
		{`{"byName":{"b":"1m","a":"never"}}`, "spec.byName.a", true},
		{`{"since":"yesterday","steps":[{"every":"5x"}]}`, "spec.since", true},
		{`{"steps":[{"every":null}],"byName":{"a":"1s"}}`, "", false},
	} {
		var v pathSpec
		err := json.Unmarshal([]byte(tc.data), &v)
		want := "none"
		if err != nil {
			want = err.Error()
		}
		path, found := refusingField([]byte(tc.data), typ, "spec", want)
		if found != tc.found || path != tc.path && found {
			t.Errorf("%s: %q %v, want %q %v (decode error %v)", tc.data, path, found, tc.path, tc.found, err)
		}
	}
	// Another value's error is not this one's.
	if path, found := refusingField([]byte(`{"steps":[{"every":"5x"}]}`), typ, "spec", "some other error"); found {
		t.Errorf("matched %q for an error it did not make", path)
	}
}
