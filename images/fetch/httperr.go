package fetch

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/outpost-mesh/outpost/images/registry"
)

// responseError turns an unexpected registry response into an error that
// wraps the registry sentinel its status and OCI code name. notFound is the
// sentinel for a plain 404 (BLOB_UNKNOWN for a blob, MANIFEST_UNKNOWN for
// a manifest). The body is read (a little) and left for the caller to
// close.
func responseError(tier string, resp *http.Response, notFound error) error {
	err := transport.CheckError(resp, resp.StatusCode+1000) // never "expected": always an error
	return classifyUpstream(tier, err, notFound)
}

// classifyUpstream maps an error of go-containerregistry's transport (the
// OCI error body of a registry, or its status) to the registry sentinels
// the chain and the handler understand. Other errors (connection refused,
// timeouts) are returned wrapped: they mean the tier did not answer.
func classifyUpstream(tier string, err error, notFound error) error {
	var te *transport.Error
	if !errors.As(err, &te) {
		return fmt.Errorf("%s: %w", tier, err)
	}
	for _, diag := range te.Errors {
		switch diag.Code {
		case transport.ManifestUnknownErrorCode:
			return fmt.Errorf("%w: %s: %w", registry.ErrManifestUnknown, tier, err)
		case transport.BlobUnknownErrorCode:
			return fmt.Errorf("%w: %s: %w", registry.ErrBlobUnknown, tier, err)
		case transport.NameUnknownErrorCode:
			return fmt.Errorf("%w: %s: %w", registry.ErrNameUnknown, tier, err)
		case transport.DeniedErrorCode:
			return fmt.Errorf("%w: %s: %w", registry.ErrDenied, tier, err)
		case transport.TooManyRequestsErrorCode:
			return fmt.Errorf("%w: %s: %w", registry.ErrTooManyRequests, tier, err)
		}
	}
	switch te.StatusCode {
	case http.StatusNotFound:
		return fmt.Errorf("%w: %s: %w", notFound, tier, err)
	case http.StatusUnauthorized, http.StatusForbidden:
		// The node's own credentials were refused: the local client
		// cannot fix that by sending its own, so it is DENIED here.
		return fmt.Errorf("%w: %s refused this node's credentials: %w", registry.ErrDenied, tier, err)
	case http.StatusTooManyRequests:
		return fmt.Errorf("%w: %s: %w", registry.ErrTooManyRequests, tier, err)
	}
	return fmt.Errorf("%s: %w", tier, err)
}
