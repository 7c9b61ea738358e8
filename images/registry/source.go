package registry

import (
	"context"
	"io"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Source is where the handler reads content. ns is the upstream registry
// host ("" for the hub's own registry) and repo a valid repository name;
// the handler has validated both, and every digest, before calling.
//
// Errors choose the answer: wrap ErrManifestUnknown, ErrBlobUnknown,
// ErrNameUnknown, ErrDenied, ErrUnauthorized, ErrTooManyRequests or
// ErrUnavailable (see errors.go); anything else is a 500.
type Source interface {
	// Manifest returns a manifest by tag or digest, its bytes exactly as
	// the origin served them. For a digest reference the handler checks
	// that the bytes hash to it.
	Manifest(ctx context.Context, ns, repo, reference string) (Manifest, error)
	// Blob returns a blob to serve. Its content may still be arriving
	// (a fetch in progress): reads block until bytes come, and fail if
	// the fetch fails, which makes the handler abort the response.
	Blob(ctx context.Context, ns, repo string, d digest.Digest) (Blob, error)
	// StatBlob returns a blob's size for HEAD without fetching it when
	// possible.
	StatBlob(ctx context.Context, ns, repo string, d digest.Digest) (int64, error)
	// Tags lists the repository's tags (any order; the handler sorts).
	// An unknown repository is ErrNameUnknown.
	Tags(ctx context.Context, ns, repo string) ([]string, error)
	// Referrers lists the manifests whose subject is subject. No
	// referrers (or no repository) is an empty list, not an error.
	Referrers(ctx context.Context, ns, repo string, subject digest.Digest) ([]ocispec.Descriptor, error)
}

// Manifest is a manifest as served.
type Manifest struct {
	// Digest is the manifest's digest; empty means the handler computes
	// the sha256 of Body.
	Digest    digest.Digest
	MediaType string
	Body      []byte
}

// Blob is a blob as served. *store.Reader is a Content.
type Blob struct {
	// Size is the blob's size in bytes, -1 while unknown; then the
	// response has no Content-Length and Range requests are answered
	// with the whole blob.
	Size int64
	// Content is read from the start, or from a Seek for a Range
	// request. The handler closes it.
	Content io.ReadSeekCloser
	// Marks are the blob's marks (store.MarkInterval), sent in the
	// MarksHeader so a node fetching it from this one can pass each
	// verified interval on at once; nil when there are none.
	Marks []byte
}

// MarksHeader carries a blob's marks (store.EncodeMarks) on a GET.
const MarksHeader = "Outpost-Blob-Marks"
