package registry

import (
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/outpost-mesh/outpost/images/store"
)

// Handler is the OCI distribution API as an http.Handler, for /v2/ and
// everything under it. It is safe for concurrent use and starts no
// goroutines; Close aborts the upload sessions still open.
type Handler struct {
	cfg   Config
	src   Source
	log   *slog.Logger
	pulls *pullCounter

	mu      sync.Mutex
	closed  bool
	uploads map[string]*upload
}

var _ http.Handler = (*Handler)(nil)

// New validates cfg and returns a handler reading from src.
func New(cfg Config, src Source) (*Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if src == nil {
		return nil, errors.New("registry: a Source is required: use NewStoreSource for a registry that holds its own content")
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Handler{
		cfg:     cfg,
		src:     src,
		log:     logger.With("component", "images_registry"),
		pulls:   newPullCounter(cfg.OnPull),
		uploads: map[string]*upload{},
	}, nil
}

// Close aborts every upload session, waiting for a request working on one
// to finish: call it once the HTTP server has stopped. Requests after Close
// that need a session are refused.
func (h *Handler) Close() error {
	h.mu.Lock()
	h.closed = true
	sessions := h.uploads
	h.uploads = map[string]*upload{}
	h.mu.Unlock()
	for _, u := range sessions {
		u.mu.Lock()
		u.w.Abort(errors.New("registry closed"))
		u.mu.Unlock()
	}
	return nil
}

// route kinds.
const (
	routeBase = iota
	routeManifest
	routeBlob
	routeUpload
	routeTags
	routeReferrers
)

// request is a parsed API request.
type request struct {
	kind int
	ns   string
	name string
	arg  string // reference, digest or upload id
}

// markers are the path components that end a repository name. Names may
// contain them as components ("a/manifests/b" is a valid name), so the last
// one in the path decides.
var markers = []struct {
	text string
	kind int
}{
	{"/blobs/uploads/", routeUpload},
	{"/manifests/", routeManifest},
	{"/blobs/", routeBlob},
	{"/referrers/", routeReferrers},
	{"/tags/list", routeTags},
}

// parsePath splits the path after /v2/ into a route; ok is false for a
// path that is no API route. The marker found last wins; on a tie (the
// "/blobs/" of "/blobs/uploads/") the earlier entry of markers does.
func parsePath(rest string) (kind int, name, arg string, ok bool) {
	best := -1
	for _, m := range markers {
		text := m.text
		i := strings.LastIndex(rest, text)
		if m.kind == routeUpload && strings.HasSuffix(rest, "/blobs/uploads") {
			text = "/blobs/uploads" // POST without the trailing slash
			i = len(rest) - len(text)
		}
		if i <= 0 || i <= best {
			continue
		}
		if m.kind == routeTags && i+len(text) != len(rest) {
			continue
		}
		best, kind, name, arg = i, m.kind, rest[:i], rest[i+len(text):]
	}
	if best < 0 || strings.Contains(arg, "/") {
		return 0, "", "", false
	}
	if (kind == routeManifest || kind == routeBlob || kind == routeReferrers) && arg == "" {
		return 0, "", "", false
	}
	return kind, name, arg, true
}

// ServeHTTP answers one API request.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	path := r.URL.Path
	if path == "/v2" || path == "/v2/" {
		h.serveBase(w, r)
		return
	}
	rest, found := strings.CutPrefix(path, "/v2/")
	if !found {
		h.writeError(w, r, fmt.Errorf("%w: %s is not an API path: the API is under /v2/", ErrNameUnknown, path))
		return
	}
	kind, name, arg, ok := parsePath(rest)
	if !ok {
		h.writeError(w, r, fmt.Errorf("%w: no API route matches %s", ErrNameUnknown, path))
		return
	}
	req := request{kind: kind, name: name, arg: arg}
	ns, err := h.namespace(r)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	req.ns = ns
	if err := store.ValidateRepository(name); err != nil {
		h.writeError(w, r, fmt.Errorf("%w: %w", ErrNameInvalid, err))
		return
	}
	if err := h.authorize(r, kind); err != nil {
		h.writeError(w, r, err)
		return
	}
	switch kind {
	case routeManifest:
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			h.getManifest(w, r, req)
		case http.MethodPut:
			h.putManifest(w, r, req)
		case http.MethodDelete:
			h.deleteManifest(w, r, req)
		default:
			h.notAllowed(w, r, "GET, HEAD, PUT, DELETE")
		}
	case routeBlob:
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			h.getBlob(w, r, req)
		case http.MethodDelete:
			h.deleteBlob(w, r, req)
		default:
			h.notAllowed(w, r, "GET, HEAD, DELETE")
		}
	case routeUpload:
		h.serveUpload(w, r, req)
	case routeTags:
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			h.notAllowed(w, r, "GET, HEAD")
			return
		}
		h.getTags(w, r, req)
	case routeReferrers:
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			h.notAllowed(w, r, "GET, HEAD")
			return
		}
		h.getReferrers(w, r, req)
	}
}

func (h *Handler) serveBase(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.notAllowed(w, r, "GET, HEAD")
		return
	}
	if _, err := h.namespace(r); err != nil {
		h.writeError(w, r, err)
		return
	}
	// Clients learn from this ping whether to send credentials: a
	// registry that authenticates pushes challenges here (and accepts the
	// credentials of either callback), or Docker and skopeo would push
	// anonymously and fail.
	fn := h.cfg.AuthorizePull
	if h.cfg.Push && h.cfg.Authorize != nil {
		fn = func(r *http.Request) error {
			if h.cfg.AuthorizePull != nil && h.cfg.AuthorizePull(r) == nil {
				return nil
			}
			return h.cfg.Authorize(r)
		}
	}
	if fn != nil {
		if err := fn(r); err != nil {
			if !errors.Is(err, ErrDenied) {
				err = fmt.Errorf("%w: %w", ErrUnauthorized, err)
			}
			h.writeError(w, r, err)
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", "2")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write([]byte("{}"))
	}
}

func (h *Handler) notAllowed(w http.ResponseWriter, r *http.Request, allow string) {
	w.Header().Set("Allow", allow)
	h.writeError(w, r, fmt.Errorf("%w: %s is not offered here (allowed: %s)", ErrUnsupported, r.Method, allow))
}

// namespace returns the upstream registry the request is for: its ns
// query parameter (empty: the hub's own registry), or DefaultNamespace.
func (h *Handler) namespace(r *http.Request) (string, error) {
	q := r.URL.Query()
	if !q.Has("ns") {
		return h.cfg.DefaultNamespace, nil
	}
	ns := q.Get("ns")
	if err := store.ValidateNamespace(ns); err != nil {
		return "", fmt.Errorf("%w: ns parameter: %w", ErrNameInvalid, err)
	}
	return ns, nil
}

// isWrite tells push and delete requests (every upload request among
// them, the status GET too) from pulls.
func isWrite(r *http.Request, kind int) bool {
	return kind == routeUpload || (r.Method != http.MethodGet && r.Method != http.MethodHead)
}

// authorize runs the callback that guards the request's kind.
func (h *Handler) authorize(r *http.Request, kind int) error {
	fn := h.cfg.AuthorizePull
	if isWrite(r, kind) {
		fn = h.cfg.Authorize
	}
	if fn == nil {
		return nil
	}
	err := fn(r)
	if err == nil {
		return nil
	}
	if errors.Is(err, ErrDenied) || errors.Is(err, ErrUnauthorized) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrUnauthorized, err)
}

// checkPush refuses writes when push is off or the request is for an
// upstream registry rather than the hub's own.
func (h *Handler) checkPush(req request) error {
	if !h.cfg.Push {
		return fmt.Errorf("%w: this registry is read-only (a mirror); push to the hub's registry", ErrUnsupported)
	}
	if req.ns != "" {
		return fmt.Errorf("%w: push and delete are accepted for the hub's own registry only, not for the mirror of %s: send ?ns= empty, or no ns", ErrUnsupported, req.ns)
	}
	return nil
}

// location builds an API URL for a Location or Link header, keeping the
// request's ns parameter so that follow-up requests stay in its registry.
func location(r *http.Request, path string, query url.Values) string {
	if q := r.URL.Query(); q.Has("ns") {
		if query == nil {
			query = url.Values{}
		}
		query.Set("ns", q.Get("ns"))
	}
	if len(query) == 0 {
		return path
	}
	return path + "?" + query.Encode()
}

// Token returns the credential of a request: the password of Basic
// authentication (the user name is ignored, so `docker login -u anything`
// with an API token works) or a Bearer token. ok is false when the request
// carries neither.
func Token(r *http.Request) (token string, ok bool) {
	auth := r.Header.Get("Authorization")
	scheme, value, found := strings.Cut(auth, " ")
	if !found {
		return "", false
	}
	switch strings.ToLower(scheme) {
	case "basic":
		raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(value))
		if err != nil {
			return "", false
		}
		_, pass, found := strings.Cut(string(raw), ":")
		return pass, found && pass != ""
	case "bearer":
		value = strings.TrimSpace(value)
		return value, value != ""
	}
	return "", false
}
