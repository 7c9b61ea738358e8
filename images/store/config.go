package store

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/opencontainers/go-digest"
)

// Config configures a Store. Start from DefaultConfig.
type Config struct {
	// Dir holds the blob files (Dir/blobs) and the writes in progress
	// (Dir/ingest). It is created if missing. Both must stay on one file
	// system, so that a verified write is renamed into place.
	Dir string
	// Prefix is put before every Badger key the store writes, so one
	// Badger can serve several subsystems. It must not be empty and must
	// not be a prefix of another subsystem's keys.
	Prefix []byte
	// Quota is the most bytes of blobs the store keeps; beyond it, the
	// least recently used blobs that are neither pinned nor open are
	// evicted. Zero means no quota (a hub's own registry).
	Quota int64
	// RetainOwnRegistry keeps every blob linked to the hub's own registry
	// (namespace "") out of eviction: on a hub those are pushed images with
	// no other copy. Edge nodes leave it off: what they hold of the hub's
	// registry is a cache like any other.
	RetainOwnRegistry bool
	// OnChange, if set, is told when the store starts or stops holding
	// content by digest: a blob committed (held true) or removed by
	// eviction, Delete, UnlinkBlob or a repair (held false); a manifest
	// put (true) or its bytes deleted with its last link (false). The node
	// keeps its site's blob index with it. For blobs it is called with
	// the store's lock held: it must return quickly and must not call the
	// Store (queue the change and return).
	OnChange func(d digest.Digest, held bool)
	// Logger receives the store's logs. Nil discards.
	Logger *slog.Logger
	// Now is the clock for access times, tag resolutions and pulls. Nil
	// means time.Now; tests inject a fake one.
	Now func() time.Time
}

// DefaultConfig returns a configuration with the prefix "images/" and no
// quota; Dir must still be set.
func DefaultConfig() Config {
	return Config{Prefix: []byte("images/")}
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	if c.Dir == "" {
		return errors.New("images store: Dir is required: set it to a directory on the node's data disk, e.g. <data-dir>/images")
	}
	if !filepath.IsAbs(c.Dir) {
		return fmt.Errorf("images store: Dir %q must be an absolute path", c.Dir)
	}
	if len(c.Prefix) == 0 {
		return errors.New("images store: Prefix is required: it keeps the store's Badger keys apart from other subsystems'; use DefaultConfig().Prefix")
	}
	if c.Quota < 0 {
		return fmt.Errorf("images store: Quota %d must be 0 (no quota) or a positive number of bytes", c.Quota)
	}
	return nil
}
