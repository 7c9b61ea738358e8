package registry

import (
	"context"
	"errors"
	"fmt"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/outpost-mesh/outpost/images/store"
)

// StoreSource serves what an images/store holds, repository by repository:
// the Source of a registry that holds its own content (the hub's origin
// registry), and of tests.
type StoreSource struct {
	st *store.Store
}

var _ Source = (*StoreSource)(nil)

// NewStoreSource returns a Source over st.
func NewStoreSource(st *store.Store) *StoreSource { return &StoreSource{st: st} }

// Manifest returns a manifest of the repository by tag or digest.
func (s *StoreSource) Manifest(_ context.Context, ns, repo, reference string) (Manifest, error) {
	m, err := s.st.Manifest(ns, repo, reference)
	if err != nil {
		return Manifest{}, notFound(err, ErrManifestUnknown)
	}
	return Manifest{Digest: m.Digest, MediaType: m.MediaType, Body: m.Body}, nil
}

// Blob opens a blob linked to the repository.
func (s *StoreSource) Blob(ctx context.Context, ns, repo string, d digest.Digest) (Blob, error) {
	ok, err := s.st.BlobLinked(ns, repo, d)
	if err != nil {
		return Blob{}, err
	}
	if !ok {
		return Blob{}, fmt.Errorf("%w: %s in %s", ErrBlobUnknown, d, repo)
	}
	r, err := s.st.Open(ctx, d)
	if err != nil {
		return Blob{}, notFound(err, ErrBlobUnknown)
	}
	return Blob{Size: r.Size(), Content: r, Marks: r.Marks()}, nil
}

// StatBlob returns the size of a blob linked to the repository.
func (s *StoreSource) StatBlob(_ context.Context, ns, repo string, d digest.Digest) (int64, error) {
	ok, err := s.st.BlobLinked(ns, repo, d)
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, fmt.Errorf("%w: %s in %s", ErrBlobUnknown, d, repo)
	}
	info, err := s.st.Stat(d)
	if err != nil {
		return 0, notFound(err, ErrBlobUnknown)
	}
	return info.Size, nil
}

// Tags lists the repository's tags.
func (s *StoreSource) Tags(_ context.Context, ns, repo string) ([]string, error) {
	tags, err := s.st.Tags(ns, repo)
	if err != nil {
		return nil, notFound(err, ErrNameUnknown)
	}
	names := make([]string, len(tags))
	for i, t := range tags {
		names[i] = t.Name
	}
	return names, nil
}

// Referrers lists the repository's manifests whose subject is subject.
func (s *StoreSource) Referrers(_ context.Context, ns, repo string, subject digest.Digest) ([]ocispec.Descriptor, error) {
	return s.st.Referrers(ns, repo, subject)
}

// notFound maps the store's ErrNotFound to the registry's sentinel.
func notFound(err, sentinel error) error {
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%w: %w", sentinel, err)
	}
	return err
}
