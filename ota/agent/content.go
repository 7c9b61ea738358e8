package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"strings"

	"github.com/outpost-mesh/outpost/ota"
)

// stepError is a failure with its reason.
type stepError struct {
	reason string
	msg    string
}

func (e *stepError) Error() string { return e.msg }

func stepErr(reason, format string, args ...any) *stepError {
	return &stepError{reason: reason, msg: fmt.Sprintf(format, args...)}
}

// result turns e into a Failed result.
func (e *stepError) result() ota.StepResult { return failed(e.reason, "%s", e.msg) }

// copyContent writes a step's content to w — inline, or the contentFrom
// blob verified against its digest and size — and returns its size and
// SHA-256 in hex. On a mismatch the bytes already written to w must be
// thrown away by the caller.
func copyContent(ctx context.Context, inline string, from *ota.ContentFrom, blobs BlobOpener, w io.Writer) (int64, string, *stepError) {
	h := sha256.New()
	if from == nil {
		n, err := io.Copy(io.MultiWriter(w, h), strings.NewReader(inline))
		if err != nil {
			return 0, "", stepErr(ota.ReasonIOError, "write content: %v", err)
		}
		return n, hex.EncodeToString(h.Sum(nil)), nil
	}
	want, ok := strings.CutPrefix(from.Blob, "sha256:")
	if !ok || len(want) != sha256.Size*2 {
		return 0, "", stepErr(ota.ReasonInvalid, "contentFrom.blob %q must be sha256:<64 hex digits>", from.Blob)
	}
	if blobs == nil {
		return 0, "", stepErr(ota.ReasonBlobUnavailable, "contentFrom %s: this node has no blob store to fetch it from", from.Blob)
	}
	rc, size, err := blobs(ctx, from.RepositoryOrDefault(), from.Blob)
	if err != nil {
		return 0, "", stepErr(ota.ReasonBlobUnavailable, "contentFrom %s: %v", from.Blob, err)
	}
	defer rc.Close()
	if from.Size > 0 && size >= 0 && size != from.Size {
		return 0, "", stepErr(ota.ReasonDigestMismatch, "contentFrom %s: blob is %d bytes, the step says %d", from.Blob, size, from.Size)
	}
	var src io.Reader = rc
	if from.Size > 0 {
		src = io.LimitReader(rc, from.Size+1) // one more byte shows a longer blob
	}
	n, err := io.Copy(io.MultiWriter(w, h), src)
	if err != nil {
		return 0, "", stepErr(ota.ReasonBlobUnavailable, "contentFrom %s: after %d bytes: %v", from.Blob, n, err)
	}
	if from.Size > 0 && n != from.Size {
		return 0, "", stepErr(ota.ReasonDigestMismatch, "contentFrom %s: the blob gave %d bytes (or more), the step says %d", from.Blob, n, from.Size)
	}
	got := hex.EncodeToString(h.Sum(nil))
	if got != want {
		return 0, "", stepErr(ota.ReasonDigestMismatch, "contentFrom %s: the bytes received have digest sha256:%s", from.Blob, got)
	}
	return n, got, nil
}
