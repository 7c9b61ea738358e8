package components

import (
	"encoding/json"
	"errors"
)

// mergeValues returns over (a JSON object) merged into defaults, over
// winning, as JSON decodes it (so it compares with a release's values).
func mergeValues(defaults map[string]any, over json.RawMessage) (map[string]any, error) {
	b, err := json.Marshal(defaults)
	if err != nil {
		return nil, err
	}
	out := map[string]any{}
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, err
	}
	if len(over) == 0 {
		return orNil(out), nil
	}
	var o map[string]any
	if err := json.Unmarshal(over, &o); err != nil {
		return nil, errors.New("must be a JSON object")
	}
	return orNil(merge(out, o)), nil
}

// merge copies src into dst, recursing into objects both hold.
func merge(dst, src map[string]any) map[string]any {
	if dst == nil {
		dst = map[string]any{}
	}
	for k, v := range src {
		if sm, ok := v.(map[string]any); ok {
			if dm, ok := dst[k].(map[string]any); ok {
				dst[k] = merge(dm, sm)
				continue
			}
		}
		dst[k] = v
	}
	return dst
}

// orNil is m, or nil when it is empty (as Helm stores no values).
func orNil(m map[string]any) map[string]any {
	if len(m) == 0 {
		return nil
	}
	return m
}
