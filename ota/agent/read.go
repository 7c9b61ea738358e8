package agent

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"unicode/utf8"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/outpost-mesh/outpost/ota"
)

// runRead reads a regular file of at most maxBytes. The path is resolved
// (symlinks followed) before the policy check, and the resolved path is
// opened without following a symlink again.
func runRead(step *ota.Step, pol Policy) ota.StepResult {
	if err := ota.CheckPath(step.Path); err != nil {
		return failed(ota.ReasonInvalid, "read: %v", err)
	}
	path := filepath.Clean(step.Path)
	resolved, err := filepath.EvalSymlinks(path)
	if err != nil {
		return failed(ota.ReasonIOError, "read %s: %v", path, unwrapPath(err))
	}
	if !pol.permits(resolved) {
		return failed(ota.ReasonPolicyDenied, "read %s", pol.pathDenied(path, resolved))
	}
	f, err := os.OpenFile(resolved, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return failed(ota.ReasonIOError, "read %s: %v", path, unwrapPath(err))
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return failed(ota.ReasonIOError, "read %s: %v", path, unwrapPath(err))
	}
	if !st.Mode().IsRegular() {
		return failed(ota.ReasonInvalid, "read %s: %s, not a regular file", path, fileType(st.Mode()))
	}
	limit := step.ReadLimit()
	if st.Size() > limit {
		return failed(ota.ReasonTooLarge, "read %s: file is %d bytes, over maxBytes %d", path, st.Size(), limit)
	}
	// Files in /proc and /sys report size 0: read one byte past the limit
	// to find out.
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return failed(ota.ReasonIOError, "read %s: %v", path, unwrapPath(err))
	}
	if int64(len(data)) > limit {
		return failed(ota.ReasonTooLarge, "read %s: file is over maxBytes %d", path, limit)
	}
	sum := sha256.Sum256(data)
	res := &ota.ReadResult{
		Size:   int64(len(data)),
		Mode:   ota.FormatMode(st.Mode()),
		Mtime:  metav1.NewTime(st.ModTime()),
		SHA256: hex.EncodeToString(sum[:]),
	}
	if utf8.Valid(data) {
		res.Content, res.Encoding = string(data), ota.EncodingUTF8
	} else {
		res.Content, res.Encoding = base64.StdEncoding.EncodeToString(data), ota.EncodingBase64
	}
	return ota.StepResult{Phase: ota.StepSucceeded, Read: res}
}

// unwrapPath drops the op and path of a PathError, which the messages
// already give.
func unwrapPath(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}

// fileType names the type of a file that is not a regular one.
func fileType(m os.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&os.ModeNamedPipe != 0:
		return "a named pipe"
	case m&os.ModeSocket != 0:
		return "a socket"
	case m&os.ModeCharDevice != 0:
		return "a character device"
	case m&os.ModeDevice != 0:
		return "a block device"
	}
	return "a special file (" + m.Type().String() + ")"
}
