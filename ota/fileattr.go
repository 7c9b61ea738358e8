package ota

import (
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
)

// ParseMode parses a file mode in octal, "644" or "0644", up to "7777"
// (setuid, setgid and sticky included).
func ParseMode(s string) (fs.FileMode, error) {
	if len(s) < 3 || len(s) > 5 || strings.TrimLeft(s, "01234567") != "" {
		return 0, fmt.Errorf("mode %q must be octal digits such as \"0644\"", s)
	}
	n, err := strconv.ParseUint(s, 8, 32)
	if err != nil || n > 0o7777 {
		return 0, fmt.Errorf("mode %q must be at most 7777", s)
	}
	m := fs.FileMode(n & 0o777)
	if n&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if n&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if n&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	return m, nil
}

// FormatMode formats m's permission and special bits as ParseMode reads
// them, four octal digits: "0644", "4755".
func FormatMode(m fs.FileMode) string {
	n := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		n |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		n |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		n |= 0o1000
	}
	return fmt.Sprintf("%04o", n)
}

// SplitOwner splits "user[:group]"; each part is a name or a numeric id.
func SplitOwner(s string) (user, group string, err error) {
	user, group, hasGroup := strings.Cut(s, ":")
	switch {
	case user == "":
		return "", "", fmt.Errorf("owner %q must be user or user:group", s)
	case hasGroup && group == "":
		return "", "", fmt.Errorf("owner %q has an empty group", s)
	case strings.ContainsAny(s, " \t\n/") || strings.Count(s, ":") > 1:
		return "", "", fmt.Errorf("owner %q must be user or user:group", s)
	}
	return user, group, nil
}

// ErrPath is wrapped by CheckPath's errors.
var ErrPath = errors.New("bad path")

// CheckPath checks the path of a read or write step: absolute, no ".."
// element and no NUL byte. It does not touch the file system.
func CheckPath(p string) error {
	switch {
	case p == "":
		return fmt.Errorf("%w: empty", ErrPath)
	case !strings.HasPrefix(p, "/"):
		return fmt.Errorf("%w: %q is not absolute", ErrPath, p)
	case strings.ContainsRune(p, 0):
		return fmt.Errorf("%w: %q contains a NUL byte", ErrPath, p)
	}
	for _, el := range strings.Split(p, "/") {
		if el == ".." {
			return fmt.Errorf("%w: %q has a \"..\" element", ErrPath, p)
		}
	}
	return nil
}
