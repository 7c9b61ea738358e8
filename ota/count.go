package ota

import (
	"fmt"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// ResolveCount turns a window such as spec.concurrency into a number of
// devices: v as a number, or v percent of total rounded up and at least 1
// when total > 0; def when v is nil or malformed. The result is not capped
// at total.
func ResolveCount(v *intstr.IntOrString, total, def int) int {
	if v == nil {
		return def
	}
	if v.Type == intstr.Int {
		return v.IntValue()
	}
	pct, ok := parsePercent(v.StrVal)
	if !ok {
		return def
	}
	n := (pct*total + 99) / 100
	if n < 1 && total > 0 {
		n = 1
	}
	return n
}

// ResolveLimit turns a failure limit such as spec.failurePolicy.maxFailures
// into a number of devices: v as a number, or v percent of total rounded
// down (a limit errs on the side of halting). ok is false when v is nil or
// malformed: no limit.
func ResolveLimit(v *intstr.IntOrString, total int) (n int, ok bool) {
	if v == nil {
		return 0, false
	}
	if v.Type == intstr.Int {
		return v.IntValue(), true
	}
	pct, ok := parsePercent(v.StrVal)
	if !ok {
		return 0, false
	}
	return pct * total / 100, true
}

// parsePercent parses "NN%" with NN a decimal integer.
func parsePercent(s string) (int, bool) {
	num, found := strings.CutSuffix(s, "%")
	if !found || num == "" || strings.TrimLeft(num, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.Atoi(num)
	if err != nil {
		return 0, false
	}
	return n, true
}

// validateCount checks a number-or-percentage: a number at least min, or a
// percentage from min% to 100%.
func validateCount(v *intstr.IntOrString, min int, path *field.Path) field.ErrorList {
	if v == nil {
		return nil
	}
	if v.Type == intstr.Int {
		if int(v.IntVal) < min {
			return field.ErrorList{field.Invalid(path, v.IntVal, fmt.Sprintf("must be at least %d", min))}
		}
		return nil
	}
	pct, ok := parsePercent(v.StrVal)
	if !ok {
		return field.ErrorList{field.Invalid(path, v.StrVal, `must be a number or a percentage such as "10%"`)}
	}
	if pct < min || pct > 100 {
		return field.ErrorList{field.Invalid(path, v.StrVal, fmt.Sprintf("a percentage must be from %d%% to 100%%", min))}
	}
	return nil
}
