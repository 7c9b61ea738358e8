package consensus

import (
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
)

var unmarshalerType = reflect.TypeFor[json.Unmarshaler]()

// refusingField returns the path, under path, of the value in data that
// a type's own UnmarshalJSON refused with the message want (a duration
// such as "5x", a malformed time or quantity): encoding/json passes such
// an error on without saying which field it came from. It walks data
// along t, trying each value whose type has UnmarshalJSON, and reports
// false when none refuses with want.
func refusingField(data []byte, t reflect.Type, path, want string) (string, bool) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if string(data) == "null" {
		return "", false
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		err := reflect.New(t).Interface().(json.Unmarshaler).UnmarshalJSON(data)
		return path, err != nil && err.Error() == want
	}
	switch t.Kind() {
	case reflect.Struct:
		var m map[string]json.RawMessage
		if json.Unmarshal(data, &m) != nil {
			return "", false
		}
		for _, f := range jsonFields(t) {
			if raw, ok := m[f.name]; ok {
				if p, ok := refusingField(raw, f.typ, joinPath(path, f.name), want); ok {
					return p, true
				}
			}
		}
	case reflect.Slice, reflect.Array:
		var a []json.RawMessage
		if json.Unmarshal(data, &a) != nil {
			return "", false
		}
		for i, raw := range a {
			if p, ok := refusingField(raw, t.Elem(), fmt.Sprintf("%s[%d]", path, i), want); ok {
				return p, true
			}
		}
	case reflect.Map:
		var m map[string]json.RawMessage
		if json.Unmarshal(data, &m) != nil {
			return "", false
		}
		for _, k := range slices.Sorted(maps.Keys(m)) {
			if p, ok := refusingField(m[k], t.Elem(), joinPath(path, k), want); ok {
				return p, true
			}
		}
	}
	return "", false
}

// jsonField is a struct field as encoding/json names it.
type jsonField struct {
	name string
	typ  reflect.Type
}

// jsonFields lists t's fields under their JSON names, embedded structs
// without a name inlined, as encoding/json does.
func jsonFields(t reflect.Type) []jsonField {
	var out []jsonField
	for f := range t.Fields() {
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if f.Anonymous && name == "" && ft.Kind() == reflect.Struct {
			out = append(out, jsonFields(ft)...)
			continue
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out = append(out, jsonField{name: name, typ: f.Type})
	}
	return out
}
