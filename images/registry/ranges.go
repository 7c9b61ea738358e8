package registry

import (
	"strconv"
	"strings"
)

// parseRange reads a Range header for a blob of size bytes. It serves one
// range only: ok is false (serve the whole blob, as RFC 9110 allows) for a
// header it does not understand or that asks for several ranges;
// unsatisfiable is true (answer 416) for a range that starts past the end,
// ends before it starts, or is an empty suffix.
func parseRange(header string, size int64) (start, length int64, ok, unsatisfiable bool) {
	spec, found := strings.CutPrefix(strings.TrimSpace(header), "bytes=")
	if !found || strings.Contains(spec, ",") {
		return 0, 0, false, false
	}
	first, last, found := strings.Cut(strings.TrimSpace(spec), "-")
	if !found {
		return 0, 0, false, false
	}
	num := func(s string) (int64, bool) {
		if s == "" || strings.Trim(s, "0123456789") != "" {
			return 0, false
		}
		n, err := strconv.ParseInt(s, 10, 64)
		return n, err == nil
	}
	if first == "" {
		// A suffix: the last n bytes.
		n, valid := num(last)
		if !valid {
			return 0, 0, false, false
		}
		if n == 0 || size == 0 {
			return 0, 0, false, true
		}
		n = min(n, size)
		return size - n, n, true, false
	}
	s, valid := num(first)
	if !valid {
		return 0, 0, false, false
	}
	end := size - 1
	if last != "" {
		e, valid := num(last)
		if !valid {
			return 0, 0, false, false
		}
		if e < s {
			return 0, 0, false, true
		}
		end = min(e, size-1)
	}
	if s >= size {
		return 0, 0, false, true
	}
	return s, end - s + 1, true, false
}
