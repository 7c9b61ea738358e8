package registry

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/outpost-mesh/outpost/images/store"
)

// upload is one blob upload session: a store Writer whose digest is given
// by the final PUT. One request at a time works on it (mu).
type upload struct {
	id   string
	ns   string
	repo string

	mu   sync.Mutex
	w    *store.Writer
	last time.Time
	gone bool // committed, cancelled, failed or expired
}

func (h *Handler) serveUpload(w http.ResponseWriter, r *http.Request, req request) {
	if err := h.checkPush(req); err != nil {
		h.writeError(w, r, err)
		return
	}
	if req.arg == "" {
		if r.Method != http.MethodPost {
			h.notAllowed(w, r, "POST")
			return
		}
		h.startUpload(w, r, req)
		return
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodPatch, http.MethodPut, http.MethodDelete:
	default:
		h.notAllowed(w, r, "GET, HEAD, PATCH, PUT, DELETE")
		return
	}
	u, err := h.session(req)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.gone {
		h.writeError(w, r, fmt.Errorf("%w: upload %s has ended", ErrBlobUploadUnknown, u.id))
		return
	}
	u.last = time.Now()
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		h.uploadStatus(w, r, req, u, http.StatusNoContent)
	case http.MethodPatch:
		h.patchUpload(w, r, req, u)
	case http.MethodPut:
		h.finishUpload(w, r, req, u)
	case http.MethodDelete:
		h.endUpload(u, errors.New("cancelled by the client"))
		w.Header().Set("Content-Length", "0")
		w.WriteHeader(http.StatusNoContent)
	}
}

// startUpload answers POST /v2/<name>/blobs/uploads/: a cross-repository
// mount, a monolithic upload (?digest= with the body), or a new session.
func (h *Handler) startUpload(w http.ResponseWriter, r *http.Request, req request) {
	q := r.URL.Query()
	if q.Has("mount") {
		if d, ok := h.mount(req, q.Get("mount"), q.Get("from"), q.Has("from")); ok {
			h.blobCreated(w, r, req, d)
			return
		}
		// Not mountable: fall back to a session, as the spec says.
	}
	if q.Has("digest") {
		d, err := parseBlobDigest(q.Get("digest"))
		if err != nil {
			h.writeError(w, r, err)
			return
		}
		wr, err := h.cfg.Store.BeginUpload()
		if err != nil {
			h.writeError(w, r, err)
			return
		}
		if _, err := h.receive(wr, r.Body, 0); err != nil {
			wr.Abort(err)
			h.writeError(w, r, err)
			return
		}
		if err := h.commit(wr, req, d); err != nil {
			h.writeError(w, r, err)
			return
		}
		h.blobCreated(w, r, req, d)
		return
	}
	u, err := h.newSession(req)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	h.uploadStatus(w, r, req, u, http.StatusAccepted)
}

// mount links an existing blob into the repository: from the repository
// named by from, or, without from, from anywhere in the store.
func (h *Handler) mount(req request, mount, from string, hasFrom bool) (digest.Digest, bool) {
	d, err := store.ParseDigest(mount)
	if err != nil {
		return "", false
	}
	st := h.cfg.Store
	if hasFrom {
		if store.ValidateRepository(from) != nil {
			return "", false
		}
		if ok, err := st.BlobLinked(req.ns, from, d); err != nil || !ok {
			return "", false
		}
	} else if _, err := st.Stat(d); err != nil {
		return "", false
	}
	if err := st.LinkBlob(req.ns, req.name, d); err != nil {
		return "", false
	}
	return d, true
}

// newSession opens an upload session, first dropping idle ones.
func (h *Handler) newSession(req request) (*upload, error) {
	var expired []*upload
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, fmt.Errorf("%w: the registry is shutting down", ErrUnavailable)
	}
	now := time.Now()
	for id, u := range h.uploads {
		if u.mu.TryLock() {
			if now.Sub(u.last) > h.cfg.UploadIdleTimeout {
				delete(h.uploads, id)
				expired = append(expired, u)
			}
			u.mu.Unlock()
		}
	}
	full := len(h.uploads) >= h.cfg.MaxUploads
	h.mu.Unlock()
	for _, u := range expired {
		u.mu.Lock()
		h.endUpload(u, errors.New("idle for too long"))
		u.mu.Unlock()
	}
	if full {
		return nil, fmt.Errorf("%w: %d uploads are open, the most this registry allows; retry later", ErrTooManyRequests, h.cfg.MaxUploads)
	}
	wr, err := h.cfg.Store.BeginUpload()
	if err != nil {
		return nil, err
	}
	id := make([]byte, 16)
	_, _ = rand.Read(id)
	u := &upload{id: hex.EncodeToString(id), ns: req.ns, repo: req.name, w: wr, last: now}
	h.mu.Lock()
	h.uploads[u.id] = u
	h.mu.Unlock()
	return u, nil
}

// session finds the upload named in the path, in the repository named in
// the path.
func (h *Handler) session(req request) (*upload, error) {
	h.mu.Lock()
	u, ok := h.uploads[req.arg]
	h.mu.Unlock()
	if !ok || u.ns != req.ns || u.repo != req.name {
		return nil, fmt.Errorf("%w: no upload %q in %s", ErrBlobUploadUnknown, req.arg, req.name)
	}
	return u, nil
}

// endUpload drops a session and its partial data. u.mu must be held.
func (h *Handler) endUpload(u *upload, cause error) {
	if u.gone {
		return
	}
	u.gone = true
	u.w.Abort(cause)
	h.mu.Lock()
	if h.uploads[u.id] == u {
		delete(h.uploads, u.id)
	}
	h.mu.Unlock()
}

// uploadStatus answers with where the session stands.
func (h *Handler) uploadStatus(w http.ResponseWriter, r *http.Request, req request, u *upload, status int) {
	hd := w.Header()
	hd.Set("Location", location(r, "/v2/"+req.name+"/blobs/uploads/"+u.id, nil))
	hd.Set("Docker-Upload-UUID", u.id)
	hd.Set("Range", uploadRange(u.w.Offset()))
	hd.Set("Content-Length", "0")
	w.WriteHeader(status)
}

// uploadRange is the Range header of a session holding n bytes: "0-<last
// byte>", and "0-0" while empty, as CNCF Distribution and its clients do.
func uploadRange(n int64) string {
	return fmt.Sprintf("0-%d", max(n-1, 0))
}

// checkContentRange verifies that a chunk's Content-Range starts where the
// session stands and agrees with its Content-Length.
func checkContentRange(r *http.Request, offset int64) error {
	cr := r.Header.Get("Content-Range")
	if cr == "" {
		return nil
	}
	spec := strings.TrimPrefix(strings.TrimSpace(cr), "bytes ")
	spec, _, _ = strings.Cut(spec, "/")
	first, last, found := strings.Cut(spec, "-")
	start, err1 := strconv.ParseInt(first, 10, 64)
	end, err2 := strconv.ParseInt(last, 10, 64)
	if !found || err1 != nil || err2 != nil || end < start {
		return fmt.Errorf("%w: Content-Range %q must be <start>-<end>", ErrRangeInvalid, cr)
	}
	if start != offset {
		return fmt.Errorf("%w: the chunk starts at %d but the upload holds %d bytes: send the chunk starting at %d", ErrRangeInvalid, start, offset, offset)
	}
	if r.ContentLength >= 0 && r.ContentLength != end-start+1 {
		return fmt.Errorf("%w: Content-Range %q is %d bytes but Content-Length is %d", ErrRangeInvalid, cr, end-start+1, r.ContentLength)
	}
	return nil
}

func (h *Handler) patchUpload(w http.ResponseWriter, r *http.Request, req request, u *upload) {
	if err := checkContentRange(r, u.w.Offset()); err != nil {
		h.uploadHeaders(w, r, req, u)
		h.writeError(w, r, err)
		return
	}
	if _, err := h.receive(u.w, r.Body, u.w.Offset()); err != nil {
		if errors.Is(err, ErrUploadTooLarge) {
			h.endUpload(u, err)
		}
		h.writeError(w, r, err)
		return
	}
	h.uploadStatus(w, r, req, u, http.StatusAccepted)
}

// uploadHeaders sets the headers that let a client recover a session.
func (h *Handler) uploadHeaders(w http.ResponseWriter, r *http.Request, req request, u *upload) {
	w.Header().Set("Location", location(r, "/v2/"+req.name+"/blobs/uploads/"+u.id, nil))
	w.Header().Set("Docker-Upload-UUID", u.id)
	w.Header().Set("Range", uploadRange(u.w.Offset()))
}

func (h *Handler) finishUpload(w http.ResponseWriter, r *http.Request, req request, u *upload) {
	d, err := parseBlobDigest(r.URL.Query().Get("digest"))
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	if err := checkContentRange(r, u.w.Offset()); err != nil {
		h.uploadHeaders(w, r, req, u)
		h.writeError(w, r, err)
		return
	}
	if _, err := h.receive(u.w, r.Body, u.w.Offset()); err != nil {
		h.endUpload(u, err)
		h.writeError(w, r, err)
		return
	}
	u.gone = true
	h.mu.Lock()
	delete(h.uploads, u.id)
	h.mu.Unlock()
	if err := h.commit(u.w, req, d); err != nil {
		h.writeError(w, r, err)
		return
	}
	h.blobCreated(w, r, req, d)
}

// receive appends a request body to an upload, within MaxUploadSize.
func (h *Handler) receive(wr *store.Writer, body io.Reader, offset int64) (int64, error) {
	room := h.cfg.MaxUploadSize - offset
	n, err := io.Copy(wr, io.LimitReader(body, room+1))
	if err != nil {
		return n, fmt.Errorf("%w: receiving the upload: %w", ErrBlobUploadInvalid, err)
	}
	if n > room {
		return n, fmt.Errorf("%w: over %d bytes", ErrUploadTooLarge, h.cfg.MaxUploadSize)
	}
	return n, nil
}

// commit verifies an upload against d, stores it and links it to the
// repository.
func (h *Handler) commit(wr *store.Writer, req request, d digest.Digest) error {
	if err := wr.CommitAs(d); err != nil {
		if errors.Is(err, store.ErrDigestMismatch) {
			return fmt.Errorf("%w: %w", ErrDigestInvalid, err)
		}
		return err
	}
	return h.cfg.Store.LinkBlob(req.ns, req.name, d)
}

// blobCreated answers 201 for a blob now in the repository.
func (h *Handler) blobCreated(w http.ResponseWriter, r *http.Request, req request, d digest.Digest) {
	w.Header().Set("Location", location(r, "/v2/"+req.name+"/blobs/"+d.String(), nil))
	w.Header().Set("Docker-Content-Digest", d.String())
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
}

func (h *Handler) deleteBlob(w http.ResponseWriter, r *http.Request, req request) {
	if err := h.checkPush(req); err != nil {
		h.writeError(w, r, err)
		return
	}
	d, err := parseBlobDigest(req.arg)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	if err := h.cfg.Store.UnlinkBlob(req.ns, req.name, d); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			err = fmt.Errorf("%w: %w", ErrBlobUnknown, err)
		}
		h.writeError(w, r, err)
		return
	}
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusAccepted)
}
