package registry

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/outpost-mesh/outpost/images/store"
)

// Docker's manifest media types, accepted beside OCI's.
const (
	mediaTypeDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	mediaTypeDockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
)

// pushable lists the manifest media types a push may use.
var pushable = map[string]bool{
	ocispec.MediaTypeImageManifest: true,
	ocispec.MediaTypeImageIndex:    true,
	mediaTypeDockerManifest:        true,
	mediaTypeDockerList:            true,
}

func (h *Handler) putManifest(w http.ResponseWriter, r *http.Request, req request) {
	if err := h.checkPush(req); err != nil {
		h.writeError(w, r, err)
		return
	}
	want, byDigest, err := parseReference(req.arg)
	if err != nil {
		if !byDigest {
			err = fmt.Errorf("%w: %w", ErrManifestInvalid, err)
		}
		h.writeError(w, r, err)
		return
	}
	// Refuse an oversized manifest without reading past the limit.
	if r.ContentLength > store.MaxManifestSize {
		h.writeError(w, r, fmt.Errorf("%w: Content-Length %d", ErrManifestTooLarge, r.ContentLength))
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, store.MaxManifestSize+1))
	if err != nil {
		h.writeError(w, r, fmt.Errorf("%w: reading the body: %w", ErrManifestInvalid, err))
		return
	}
	if len(body) > store.MaxManifestSize {
		h.writeError(w, r, fmt.Errorf("%w: the body is longer than %d bytes", ErrManifestTooLarge, store.MaxManifestSize))
		return
	}
	d := digest.FromBytes(body)
	if byDigest {
		if d = want.Algorithm().FromBytes(body); d != want {
			h.writeError(w, r, fmt.Errorf("%w: the manifest hashes to %s, not %s", ErrDigestInvalid, d, want))
			return
		}
	}
	mediaType, mi, err := h.checkManifest(r, req, body)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	// Tags to set: the reference when it is one, and, for a push by
	// digest, the ?tag= parameters (distribution-spec 1.1+dev).
	var tags []string
	if !byDigest {
		tags = append(tags, req.arg)
	} else {
		for _, tg := range r.URL.Query()["tag"] {
			if err := store.ValidateTag(tg); err != nil {
				h.writeError(w, r, fmt.Errorf("%w: tag parameter: %w", ErrManifestInvalid, err))
				return
			}
			tags = append(tags, tg)
		}
	}
	st := h.cfg.Store
	if err := st.PutManifest(req.ns, req.name, d, mediaType, body); err != nil {
		h.writeError(w, r, err)
		return
	}
	for _, tg := range tags {
		if err := st.Tag(req.ns, req.name, tg, d); err != nil {
			h.writeError(w, r, err)
			return
		}
	}
	hd := w.Header()
	if byDigest {
		for _, tg := range tags {
			hd.Add("OCI-Tag", tg)
		}
	}
	hd.Set("Location", location(r, "/v2/"+req.name+"/manifests/"+d.String(), nil))
	hd.Set("Docker-Content-Digest", d.String())
	if mi.Subject != nil {
		hd.Set("OCI-Subject", mi.Subject.Digest.String())
	}
	hd.Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
}

// checkManifest validates a pushed manifest: a supported media type that
// agrees with the body's, well-formed descriptors, and every referenced
// blob and child manifest already in the repository. A subject need not
// exist; nor need layers the image says are fetched elsewhere (urls, or
// non-distributable media types).
func (h *Handler) checkManifest(r *http.Request, req request, body []byte) (string, store.ManifestInfo, error) {
	mi, err := store.ParseManifest(body)
	if err != nil {
		return "", mi, fmt.Errorf("%w: %w", ErrManifestInvalid, err)
	}
	mediaType := ""
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err == nil {
			mediaType = mt
		}
	}
	switch {
	case mediaType == "" && mi.MediaType == "":
		return "", mi, fmt.Errorf("%w: set Content-Type (or the mediaType field) to the manifest's media type", ErrManifestInvalid)
	case mediaType == "":
		mediaType = mi.MediaType
	case mi.MediaType != "" && mi.MediaType != mediaType:
		return "", mi, fmt.Errorf("%w: Content-Type %q differs from the mediaType field %q", ErrManifestInvalid, mediaType, mi.MediaType)
	}
	if !pushable[mediaType] {
		return "", mi, fmt.Errorf("%w: media type %q is not accepted: push an OCI image manifest or index, or a Docker v2 manifest or manifest list", ErrManifestInvalid, mediaType)
	}
	if mi.SchemaVersion != 2 {
		return "", mi, fmt.Errorf("%w: schemaVersion must be 2", ErrManifestInvalid)
	}
	index := mediaType == ocispec.MediaTypeImageIndex || mediaType == mediaTypeDockerList
	var blobs, manifests []ocispec.Descriptor
	if index {
		if mi.Config != nil || mi.Layers != nil {
			return "", mi, fmt.Errorf("%w: an index has manifests, not a config or layers", ErrManifestInvalid)
		}
		manifests = mi.Manifests
	} else {
		if mi.Config == nil {
			return "", mi, fmt.Errorf("%w: an image manifest needs a config descriptor", ErrManifestInvalid)
		}
		blobs = append([]ocispec.Descriptor{*mi.Config}, mi.Layers...)
	}
	if mi.Subject != nil {
		if err := checkDescriptor(*mi.Subject, "subject"); err != nil {
			return "", mi, err
		}
	}
	st := h.cfg.Store
	for i, desc := range blobs {
		if err := checkDescriptor(desc, fmt.Sprintf("blob %d", i)); err != nil {
			return "", mi, err
		}
		if len(desc.URLs) > 0 || strings.Contains(desc.MediaType, "nondistributable") || strings.Contains(desc.MediaType, ".foreign.") {
			continue
		}
		ok, err := st.BlobLinked(req.ns, req.name, desc.Digest)
		if err != nil {
			return "", mi, err
		}
		if !ok {
			return "", mi, fmt.Errorf("%w: blob %s is not in %s: push it first", ErrManifestBlobUnknown, desc.Digest, req.name)
		}
	}
	for i, desc := range manifests {
		if err := checkDescriptor(desc, fmt.Sprintf("manifest %d", i)); err != nil {
			return "", mi, err
		}
		ok, err := st.ManifestLinked(req.ns, req.name, desc.Digest)
		if err != nil {
			return "", mi, err
		}
		if !ok {
			return "", mi, fmt.Errorf("%w: manifest %s is not in %s: push it first", ErrManifestBlobUnknown, desc.Digest, req.name)
		}
	}
	return mediaType, mi, nil
}

func checkDescriptor(desc ocispec.Descriptor, what string) error {
	if _, err := store.ParseDigest(string(desc.Digest)); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrManifestInvalid, what, err)
	}
	if desc.Size < 0 {
		return fmt.Errorf("%w: %s: negative size", ErrManifestInvalid, what)
	}
	return nil
}

func (h *Handler) deleteManifest(w http.ResponseWriter, r *http.Request, req request) {
	if err := h.checkPush(req); err != nil {
		h.writeError(w, r, err)
		return
	}
	d, byDigest, err := parseReference(req.arg)
	if err != nil {
		if !byDigest {
			err = fmt.Errorf("%w: %w", ErrManifestUnknown, err)
		}
		h.writeError(w, r, err)
		return
	}
	if byDigest {
		err = h.cfg.Store.DeleteManifest(req.ns, req.name, d)
	} else {
		err = h.cfg.Store.DeleteTag(req.ns, req.name, req.arg)
	}
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			err = fmt.Errorf("%w: %w", ErrManifestUnknown, err)
		}
		h.writeError(w, r, err)
		return
	}
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusAccepted)
}
