package fetch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/outpost-mesh/outpost/images/store"
)

// Config configures a Source. Start from DefaultConfig.
type Config struct {
	// Store is the node's content store: the first place looked in, and
	// where everything fetched is written. Required.
	Store *store.Store
	// Self is this node's name; a peer Tier of that name is never asked.
	Self string
	// Peers finds the site peers that hold a digest. Nil: no peers.
	Peers PeerFinder
	// SiteFetch, if set, makes the nodes of a site share one WAN fetch
	// per blob (see SiteFetch). Nil: each node goes upstream on its own.
	SiteFetch SiteFetch
	// Upstream are the tiers beyond the site, in order: the hub's tier,
	// then the origin. Empty: the Source serves only what the store holds
	// (a peer-facing or offline mirror); tags then resolve to the digest
	// last recorded.
	Upstream []Tier

	// TagTTL is how long a tag resolved upstream is answered from the
	// store without asking again, and how long a failed upstream is not
	// asked again for that tag.
	TagTTL time.Duration
	// IdleTimeout abandons a source that sends no byte of a blob for this
	// long; the next source resumes at the offset reached.
	IdleTimeout time.Duration
	// MaxSizes bounds the in-memory table of blob sizes learnt from the
	// manifests served (used to check what a source announces).
	MaxSizes int

	// OnCorrupt is called when bytes a tier served for d failed
	// verification: a manifest that does not hash to its digest, a size
	// that contradicts the manifest, or a blob write that failed its
	// digest check (every tier that contributed bytes to that write is
	// reported). The node quarantines a peer's copy (asks the peer to
	// verify it). Called synchronously from the fetch: keep it short.
	OnCorrupt func(t Tier, d digest.Digest)
	// OnStored is called after content fetched from a tier was verified
	// and stored: a blob committed, or a manifest put. The node records
	// the holding in the site's blob index (PeerFinder's source).
	OnStored func(d digest.Digest)
	// OnTagResolved is called after an upstream tier resolved a tag and
	// the manifest was stored: the node proposes "the digest the site last
	// agreed on" to site Raft.
	OnTagResolved func(ns, repo, tag string, d digest.Digest)
	// LookupTag returns the digest the site last agreed on for a tag, used
	// when no upstream answers; ok false falls back to this node's own
	// record. Nil: this node's record only.
	LookupTag func(ctx context.Context, ns, repo, tag string) (d digest.Digest, ok bool)

	// Logger receives the chain's logs. Nil discards.
	Logger *slog.Logger
	// Now is the clock for the tag cache. Nil means time.Now.
	Now func() time.Time
}

// DefaultConfig returns a configuration with a 30 s tag cache, a 30 s idle
// timeout per source and room for 100,000 known blob sizes; Store must
// still be set.
func DefaultConfig() Config {
	return Config{
		TagTTL:      30 * time.Second,
		IdleTimeout: 30 * time.Second,
		MaxSizes:    100_000,
	}
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	if c.Store == nil {
		return errors.New("images fetch: Store is required: the node's images/store")
	}
	if c.TagTTL < 0 {
		return fmt.Errorf("images fetch: TagTTL %s must be 0 (always ask upstream) or positive", c.TagTTL)
	}
	if c.IdleTimeout <= 0 {
		return fmt.Errorf("images fetch: IdleTimeout %s must be positive", c.IdleTimeout)
	}
	if c.MaxSizes <= 0 {
		return fmt.Errorf("images fetch: MaxSizes %d must be at least 1", c.MaxSizes)
	}
	for i, t := range c.Upstream {
		if t == nil {
			return fmt.Errorf("images fetch: Upstream[%d] is nil", i)
		}
	}
	return nil
}
