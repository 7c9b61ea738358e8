package api

import (
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// ImageRef is an image reference split as the node's mirror keys content:
// the registry's domain (containerd's ns), the repository, and a tag or
// digest.
type ImageRef struct {
	Registry   string
	Repository string
	// Reference is a tag, or a digest ("sha256:...").
	Reference string
}

// String returns registry/repository:tag or registry/repository@digest.
func (r ImageRef) String() string {
	sep := ":"
	if strings.Contains(r.Reference, ":") {
		sep = "@"
	}
	return r.Registry + "/" + r.Repository + sep + r.Reference
}

// ParseImage parses an image reference with Docker's conventions: no
// registry is docker.io, a one-part Docker Hub name gets "library/", no
// tag is "latest". Docker Hub is "docker.io", the ns containerd sends.
func ParseImage(s string) (ImageRef, error) {
	if s == "" || strings.TrimSpace(s) != s || strings.Contains(s, "://") {
		return ImageRef{}, fmt.Errorf("%q is not an image reference: write registry/repository:tag or @sha256:digest", s)
	}
	ref, err := name.ParseReference(s)
	if err != nil {
		return ImageRef{}, fmt.Errorf("%q is not an image reference: %w", s, err)
	}
	reg := ref.Context().RegistryStr()
	if reg == name.DefaultRegistry {
		reg = "docker.io"
	}
	return ImageRef{Registry: reg, Repository: ref.Context().RepositoryStr(), Reference: ref.Identifier()}, nil
}
