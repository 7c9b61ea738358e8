package registry

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/outpost-mesh/outpost/images/store"
)

// Config configures a Handler. Start from DefaultConfig.
type Config struct {
	// DefaultNamespace is the upstream registry a request without an ns
	// query parameter is for. containerd always sends ?ns=<host> to a
	// mirror; Docker's "registry-mirrors" sends none and only ever mirrors
	// Docker Hub, so a node serving Docker sets "docker.io". Empty (the
	// default) means the hub's own registry. A request with an empty
	// ?ns= is always for the hub's own registry.
	DefaultNamespace string
	// Push turns on the push and delete endpoints (uploads, manifest PUT,
	// DELETE). They write to Store and accept only the hub's own registry
	// (namespace ""); with Push off they answer 405 UNSUPPORTED.
	Push bool
	// Store receives pushes. Required when Push is on.
	Store *store.Store
	// Authorize is called before every push or delete request; an error
	// refuses it: wrap ErrDenied for 403, anything else answers 401 with
	// a Basic challenge. Clients send "Basic" credentials with any user
	// name and an API token as the password (see Token). Nil lets every
	// request in: only for tests and closed networks.
	Authorize func(r *http.Request) error
	// AuthorizePull is the same for pull requests (GET and HEAD). Nil
	// means anonymous pulls, as a node's mirror on 127.0.0.1 serves.
	AuthorizePull func(r *http.Request) error
	// Realm names the registry in the WWW-Authenticate challenge.
	Realm string
	// MaxUploadSize bounds one blob upload, in bytes.
	MaxUploadSize int64
	// MaxUploads bounds the upload sessions open at once; past it a new
	// session is refused with 429.
	MaxUploads int
	// UploadIdleTimeout drops an upload session with no request for this
	// long; it is checked when a session starts.
	UploadIdleTimeout time.Duration
	// OnPull, if set, is called once per image pull (see DESIGN.md for
	// what counts), e.g. with store.Store.RecordPull.
	OnPull func(ns, repo string)
	// Logger receives the handler's logs. Nil discards.
	Logger *slog.Logger
}

// DefaultConfig returns a pull-only configuration for the hub's own
// registry with 10 GiB uploads, 1024 sessions idle for at most an hour.
func DefaultConfig() Config {
	return Config{
		Realm:             "outpost",
		MaxUploadSize:     10 << 30,
		MaxUploads:        1024,
		UploadIdleTimeout: time.Hour,
	}
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	if err := store.ValidateNamespace(c.DefaultNamespace); err != nil {
		return fmt.Errorf("registry: DefaultNamespace: %w", err)
	}
	if c.Push && c.Store == nil {
		return errors.New("registry: Push needs a Store to write to: set Store, or turn Push off")
	}
	if c.MaxUploadSize <= 0 {
		return fmt.Errorf("registry: MaxUploadSize %d must be a positive number of bytes", c.MaxUploadSize)
	}
	if c.MaxUploads <= 0 {
		return fmt.Errorf("registry: MaxUploads %d must be at least 1", c.MaxUploads)
	}
	if c.UploadIdleTimeout <= 0 {
		return fmt.Errorf("registry: UploadIdleTimeout %s must be positive", c.UploadIdleTimeout)
	}
	return nil
}
