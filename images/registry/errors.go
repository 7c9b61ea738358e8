package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/outpost-mesh/outpost/images/store"
)

// Sentinel errors. A Source returns them (wrapped, with a message that says
// what was asked for) to choose the OCI error code and HTTP status the
// handler answers with; errors.Is finds them.
var (
	// ErrBlobUnknown: the blob is not in the repository (404 BLOB_UNKNOWN).
	ErrBlobUnknown = errors.New("blob unknown to registry")
	// ErrBlobUploadInvalid: the upload session's data is unusable (400
	// BLOB_UPLOAD_INVALID).
	ErrBlobUploadInvalid = errors.New("blob upload invalid")
	// ErrBlobUploadUnknown: no such upload session (404
	// BLOB_UPLOAD_UNKNOWN).
	ErrBlobUploadUnknown = errors.New("blob upload unknown to registry")
	// ErrDigestInvalid: a digest is malformed, of an unsupported algorithm,
	// or does not match the content (400 DIGEST_INVALID).
	ErrDigestInvalid = errors.New("provided digest did not match uploaded content")
	// ErrManifestBlobUnknown: a pushed manifest references a blob or
	// manifest the repository does not hold (400 MANIFEST_BLOB_UNKNOWN).
	ErrManifestBlobUnknown = errors.New("manifest references a manifest or blob unknown to registry")
	// ErrManifestInvalid: a pushed manifest is malformed or of an
	// unsupported media type (400 MANIFEST_INVALID).
	ErrManifestInvalid = errors.New("manifest invalid")
	// ErrManifestTooLarge: a pushed manifest is over 4 MiB (413
	// MANIFEST_INVALID).
	ErrManifestTooLarge = errors.New("manifest invalid: larger than the 4 MiB limit")
	// ErrManifestUnknown: no such manifest in the repository (404
	// MANIFEST_UNKNOWN).
	ErrManifestUnknown = errors.New("manifest unknown to registry")
	// ErrNameInvalid: the repository name or the ns parameter breaks the
	// grammar (400 NAME_INVALID).
	ErrNameInvalid = errors.New("invalid repository name")
	// ErrNameUnknown: no such repository (404 NAME_UNKNOWN).
	ErrNameUnknown = errors.New("repository name not known to registry")
	// ErrSizeInvalid: content is larger than allowed or than announced
	// (400 SIZE_INVALID; 413 when over the upload limit, see
	// ErrUploadTooLarge).
	ErrSizeInvalid = errors.New("provided length did not match content length")
	// ErrUploadTooLarge: an upload went past Config.MaxUploadSize (413
	// SIZE_INVALID).
	ErrUploadTooLarge = errors.New("upload larger than the registry accepts")
	// ErrUnauthorized: authentication is required or failed (401
	// UNAUTHORIZED, with a WWW-Authenticate challenge).
	ErrUnauthorized = errors.New("authentication required")
	// ErrDenied: authenticated, but not allowed (403 DENIED).
	ErrDenied = errors.New("requested access to the resource is denied")
	// ErrUnsupported: the operation is not offered here, e.g. a push to a
	// mirror (405 UNSUPPORTED).
	ErrUnsupported = errors.New("the operation is unsupported")
	// ErrTooManyRequests: a limit was hit, here or upstream (429
	// TOOMANYREQUESTS).
	ErrTooManyRequests = errors.New("too many requests")
	// ErrUnavailable: the content is not here and no upstream could be
	// reached (503 UNAVAILABLE).
	ErrUnavailable = errors.New("service unavailable: the content is not cached and no upstream is reachable")
	// ErrRangeInvalid: a chunk's Content-Range does not start where the
	// upload stands (416 BLOB_UPLOAD_INVALID).
	ErrRangeInvalid = errors.New("requested range not satisfiable")

	// errRangeNotSatisfiable answers a blob GET whose Range lies outside
	// the blob (416; the OCI list has no code for it, SIZE_INVALID is the
	// nearest).
	errRangeNotSatisfiable = errors.New("requested range not satisfiable")
	// errPaginationInvalid answers a bad n parameter of a tag list (400,
	// with the code CNCF Distribution uses).
	errPaginationInvalid = errors.New("invalid number of results requested")
)

// ociError is one entry of an OCI error body.
type ociError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Detail  any    `json:"detail,omitempty"`
}

type errorBody struct {
	Errors []ociError `json:"errors"`
}

// mapping gives each sentinel its status and code, most specific first.
var mapping = []struct {
	err    error
	status int
	code   string
}{
	{ErrManifestTooLarge, http.StatusRequestEntityTooLarge, "MANIFEST_INVALID"},
	{ErrUploadTooLarge, http.StatusRequestEntityTooLarge, "SIZE_INVALID"},
	{ErrRangeInvalid, http.StatusRequestedRangeNotSatisfiable, "BLOB_UPLOAD_INVALID"},
	{errRangeNotSatisfiable, http.StatusRequestedRangeNotSatisfiable, "SIZE_INVALID"},
	{errPaginationInvalid, http.StatusBadRequest, "PAGINATION_NUMBER_INVALID"},
	{ErrBlobUnknown, http.StatusNotFound, "BLOB_UNKNOWN"},
	{ErrBlobUploadInvalid, http.StatusBadRequest, "BLOB_UPLOAD_INVALID"},
	{ErrBlobUploadUnknown, http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN"},
	{ErrDigestInvalid, http.StatusBadRequest, "DIGEST_INVALID"},
	{ErrManifestBlobUnknown, http.StatusBadRequest, "MANIFEST_BLOB_UNKNOWN"},
	{ErrManifestInvalid, http.StatusBadRequest, "MANIFEST_INVALID"},
	{ErrManifestUnknown, http.StatusNotFound, "MANIFEST_UNKNOWN"},
	{ErrNameInvalid, http.StatusBadRequest, "NAME_INVALID"},
	{ErrNameUnknown, http.StatusNotFound, "NAME_UNKNOWN"},
	{ErrSizeInvalid, http.StatusBadRequest, "SIZE_INVALID"},
	{ErrUnauthorized, http.StatusUnauthorized, "UNAUTHORIZED"},
	{ErrDenied, http.StatusForbidden, "DENIED"},
	{ErrUnsupported, http.StatusMethodNotAllowed, "UNSUPPORTED"},
	{ErrTooManyRequests, http.StatusTooManyRequests, "TOOMANYREQUESTS"},
	{ErrUnavailable, http.StatusServiceUnavailable, "UNAVAILABLE"},
	// The store's own errors, when they reach the handler unmapped.
	{store.ErrInvalidName, http.StatusBadRequest, "NAME_INVALID"},
	{store.ErrInvalidDigest, http.StatusBadRequest, "DIGEST_INVALID"},
	{store.ErrUnsupportedDigest, http.StatusBadRequest, "DIGEST_INVALID"},
	{store.ErrDigestMismatch, http.StatusBadRequest, "DIGEST_INVALID"},
	{store.ErrSizeMismatch, http.StatusBadRequest, "SIZE_INVALID"},
	{store.ErrInvalidManifest, http.StatusBadRequest, "MANIFEST_INVALID"},
}

// classify returns the status and OCI code for err; ok is false for an
// error no sentinel explains (an internal error).
func classify(err error) (status int, code string, ok bool) {
	for _, m := range mapping {
		if errors.Is(err, m.err) {
			return m.status, m.code, true
		}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return http.StatusGatewayTimeout, "UNAVAILABLE", true
	}
	return http.StatusInternalServerError, "UNKNOWN", false
}

// writeError answers with the OCI error body for err. Internal errors are
// logged and answered without their text.
func (h *Handler) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status, code, ok := classify(err)
	msg := err.Error()
	if !ok {
		if r.Context().Err() == nil {
			h.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		}
		msg = "internal error; the registry's log has the cause"
	} else if status >= 500 {
		h.log.Warn("request failed", "method", r.Method, "path", r.URL.Path, "status", status, "err", err)
	}
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", fmt.Sprintf("Basic realm=%q", h.cfg.Realm))
	}
	body, _ := json.Marshal(errorBody{Errors: []ociError{{Code: code, Message: msg}}})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}
