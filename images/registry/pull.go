package registry

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/outpost-mesh/outpost/images/store"
)

// parseReference checks a manifest reference: a digest (DIGEST_INVALID when
// malformed) or a tag. A malformed tag names nothing that can exist.
func parseReference(ref string) (d digest.Digest, isDigest bool, err error) {
	if strings.Contains(ref, ":") {
		d, err := store.ParseDigest(ref)
		if err != nil {
			return "", true, fmt.Errorf("%w: %w", ErrDigestInvalid, err)
		}
		return d, true, nil
	}
	if err := store.ValidateTag(ref); err != nil {
		return "", false, err
	}
	return "", false, nil
}

func (h *Handler) getManifest(w http.ResponseWriter, r *http.Request, req request) {
	want, byDigest, err := parseReference(req.arg)
	if err != nil {
		if !byDigest {
			err = fmt.Errorf("%w: %w", ErrManifestUnknown, err)
		}
		h.writeError(w, r, err)
		return
	}
	m, err := h.src.Manifest(r.Context(), req.ns, req.name, req.arg)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	d := m.Digest
	if byDigest {
		if got := want.Algorithm().FromBytes(m.Body); got != want {
			h.writeError(w, r, fmt.Errorf("manifest %s of %s: the source served bytes hashing to %s", want, req.name, got))
			return
		}
		d = want
	} else if d == "" {
		d = digest.FromBytes(m.Body)
	}
	mediaType := m.MediaType
	if mediaType == "" {
		if mi, err := store.ParseManifest(m.Body); err == nil {
			mediaType = mi.MediaType
		}
	}
	hd := w.Header()
	hd.Set("Content-Type", mediaType)
	hd.Set("Content-Length", strconv.Itoa(len(m.Body)))
	hd.Set("Docker-Content-Digest", d.String())
	hd.Set("Etag", `"`+d.String()+`"`)
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(m.Body)
	h.pulls.manifestServed(req.ns, req.name, byDigest, isIndex(mediaType))
}

func isIndex(mediaType string) bool {
	return mediaType == ocispec.MediaTypeImageIndex || mediaType == mediaTypeDockerList
}

// parseBlobDigest checks a blob digest from the path.
func parseBlobDigest(s string) (digest.Digest, error) {
	d, err := store.ParseDigest(s)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrDigestInvalid, err)
	}
	return d, nil
}

func (h *Handler) getBlob(w http.ResponseWriter, r *http.Request, req request) {
	d, err := parseBlobDigest(req.arg)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	hd := w.Header()
	if r.Method == http.MethodHead {
		size, err := h.src.StatBlob(r.Context(), req.ns, req.name, d)
		if err != nil {
			h.writeError(w, r, err)
			return
		}
		hd.Set("Content-Type", "application/octet-stream")
		hd.Set("Docker-Content-Digest", d.String())
		hd.Set("Accept-Ranges", "bytes")
		if size >= 0 {
			hd.Set("Content-Length", strconv.FormatInt(size, 10))
		}
		w.WriteHeader(http.StatusOK)
		return
	}
	b, err := h.src.Blob(r.Context(), req.ns, req.name, d)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	defer b.Content.Close()
	hd.Set("Content-Type", "application/octet-stream")
	hd.Set("Docker-Content-Digest", d.String())
	hd.Set("Etag", `"`+d.String()+`"`)
	if len(b.Marks) > 0 {
		hd.Set(MarksHeader, store.EncodeMarks(b.Marks))
	}
	start, length := int64(0), b.Size
	status := http.StatusOK
	if b.Size >= 0 {
		hd.Set("Accept-Ranges", "bytes")
		if rh := r.Header.Get("Range"); rh != "" {
			s, n, ok, unsatisfiable := parseRange(rh, b.Size)
			switch {
			case unsatisfiable:
				hd.Set("Content-Range", fmt.Sprintf("bytes */%d", b.Size))
				hd.Del("Etag")
				h.writeError(w, r, fmt.Errorf("%w: %s of a %d-byte blob", errRangeNotSatisfiable, rh, b.Size))
				return
			case ok:
				start, length, status = s, n, http.StatusPartialContent
				hd.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", s, s+n-1, b.Size))
			}
		}
		hd.Set("Content-Length", strconv.FormatInt(length, 10))
	}
	if start > 0 {
		if _, err := b.Content.Seek(start, io.SeekStart); err != nil {
			h.writeError(w, r, fmt.Errorf("seek blob %s: %w", d, err))
			return
		}
	}
	w.WriteHeader(status)
	var src io.Reader = b.Content
	if length >= 0 {
		src = io.LimitReader(b.Content, length)
	}
	n, err := io.Copy(w, src)
	if err == nil && length >= 0 && n < length {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		// The status is sent: abort the connection so the client sees a
		// failed transfer, never a short blob it could take for whole.
		if r.Context().Err() == nil {
			h.log.Warn("blob transfer failed", "digest", d, "repo", req.name, "ns", req.ns, "sent", n, "err", err)
		}
		panic(http.ErrAbortHandler)
	}
}

// tagList is the body of GET /v2/<name>/tags/list.
type tagList struct {
	Name string   `json:"name"`
	Tags []string `json:"tags"`
}

func (h *Handler) getTags(w http.ResponseWriter, r *http.Request, req request) {
	q := r.URL.Query()
	n := -1
	if q.Has("n") {
		v, err := strconv.Atoi(q.Get("n"))
		if err != nil || v < 0 {
			h.writeError(w, r, fmt.Errorf("%w: n=%q must be a number of tags, 0 or more", errPaginationInvalid, q.Get("n")))
			return
		}
		n = v
	}
	tags, err := h.src.Tags(r.Context(), req.ns, req.name)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	tags = slices.Clone(tags)
	slices.Sort(tags)
	tags = slices.Compact(tags)
	if last := q.Get("last"); last != "" {
		i, _ := slices.BinarySearch(tags, last)
		for i < len(tags) && tags[i] <= last {
			i++
		}
		tags = tags[i:]
	}
	if n >= 0 && len(tags) > n {
		tags = tags[:n]
		if n > 0 {
			next := url.Values{"n": {strconv.Itoa(n)}, "last": {tags[n-1]}}
			w.Header().Set("Link", fmt.Sprintf(`<%s>; rel="next"`, location(r, "/v2/"+req.name+"/tags/list", next)))
		}
	}
	if tags == nil {
		tags = []string{}
	}
	h.writeJSON(w, r, "application/json", tagList{Name: req.name, Tags: tags})
}

func (h *Handler) getReferrers(w http.ResponseWriter, r *http.Request, req request) {
	d, err := parseBlobDigest(req.arg)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	descs, err := h.src.Referrers(r.Context(), req.ns, req.name, d)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	q := r.URL.Query()
	if q.Has("artifactType") {
		want := q.Get("artifactType")
		kept := descs[:0:0]
		for _, desc := range descs {
			if desc.ArtifactType == want {
				kept = append(kept, desc)
			}
		}
		descs = kept
		w.Header().Set("OCI-Filters-Applied", "artifactType")
	}
	if descs == nil {
		descs = []ocispec.Descriptor{}
	}
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: descs}
	idx.SchemaVersion = 2
	h.writeJSON(w, r, ocispec.MediaTypeImageIndex, idx)
}

func (h *Handler) writeJSON(w http.ResponseWriter, r *http.Request, contentType string, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}
