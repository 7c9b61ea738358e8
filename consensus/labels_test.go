package consensus

import (
	"strings"
	"testing"

	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// TestValidateLabelsAsApimachinery: validateLabels gives apimachinery's
// errors for the same labels, the first time and again once valid keys
// are remembered; an invalid key is refused every time.
func TestValidateLabelsAsApimachinery(t *testing.T) {
	long := strings.Repeat("a", 64)
	cases := []map[string]string{
		{"ota.outpost.dev/task": "read-1", "app": "x"},
		{"a b": "c"},
		{"ota.outpost.dev/": "v"},
		{"Bad_Prefix/name": "v"},
		{"ok": "bad value!"},
		{long: "v"},
		{"ok": long},
		{"x/y/z": ""},
		{"-lead": "v", "trail-": "v"},
	}
	path := field.NewPath("metadata", "labels")
	for round := range 2 {
		for _, labels := range cases {
			got, want := validateLabels(labels, path), metav1validation.ValidateLabels(labels, path)
			if len(got) != len(want) {
				t.Errorf("round %d %v: got %v, want %v", round, labels, got, want)
				continue
			}
			for _, w := range want {
				if !strings.Contains(got.ToAggregate().Error(), w.Error()) {
					t.Errorf("round %d %v: %v lacks %q", round, labels, got, w.Error())
				}
			}
		}
	}
	if !knownLabelKey("ota.outpost.dev/task") || knownLabelKey("a b") || knownLabelKey(long) {
		t.Errorf("remembered: task %v, %q %v, long %v", knownLabelKey("ota.outpost.dev/task"), "a b", knownLabelKey("a b"), knownLabelKey(long))
	}
}
