package consensus

import (
	"sync"

	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// labelKeysMax bounds the label keys remembered as valid: a store's
// writers use a few dozen; past the bound keys are checked every time.
const labelKeysMax = 4096

// labelKeys remembers the label keys found valid. A key's check is a
// regular expression match: for the four labels of every DeviceResult
// written it was 6% of the hub's CPU creating and recording 10,000
// results (BenchmarkHubFanout's profile), for keys that never change.
var labelKeys struct {
	sync.RWMutex
	valid map[string]struct{}
}

// validateLabels is metav1validation.ValidateLabels, the same errors for
// the same labels, with the keys already found valid not checked again.
// Values are checked every time: they are the fleet's names and phases.
func validateLabels(labels map[string]string, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	for k, v := range labels {
		if !knownLabelKey(k) {
			kerrs := metav1validation.ValidateLabelName(k, path)
			if len(kerrs) == 0 {
				rememberLabelKey(k)
			}
			errs = append(errs, kerrs...)
		}
		for _, msg := range validation.IsValidLabelValue(v) {
			errs = append(errs, field.Invalid(path, v, msg).WithOrigin("format=k8s-label-value"))
		}
	}
	return errs
}

func knownLabelKey(k string) bool {
	labelKeys.RLock()
	defer labelKeys.RUnlock()
	_, ok := labelKeys.valid[k]
	return ok
}

func rememberLabelKey(k string) {
	labelKeys.Lock()
	defer labelKeys.Unlock()
	if labelKeys.valid == nil {
		labelKeys.valid = map[string]struct{}{}
	}
	if len(labelKeys.valid) < labelKeysMax {
		labelKeys.valid[k] = struct{}{}
	}
}
