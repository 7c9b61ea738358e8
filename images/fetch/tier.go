package fetch

import (
	"context"
	"errors"
	"io"

	"github.com/opencontainers/go-digest"
	"github.com/outpost-mesh/outpost/images/registry"
)

// A Tier is one place content can come from: a site peer, the hub's tier,
// the origin registry. Implementations are safe for concurrent use.
//
// ns is the upstream registry host ("" for the hub's own registry) and repo
// a repository name, both validated by the registry handler. Errors choose
// what the chain does next; wrap the registry sentinels:
//
//   - registry.ErrBlobUnknown, ErrManifestUnknown, ErrNameUnknown: the tier
//     answered that it does not have it. From an upstream tier (hub, origin)
//     that is an answer; from a peer it only means its copy is gone.
//   - registry.ErrUnauthorized, ErrDenied: the tier refused (an answer).
//   - ErrNotServed: the tier does not serve this namespace at all (an origin
//     asked for the hub's own registry); it is skipped silently.
//   - anything else (refused connection, timeout, 5xx, 429): the tier did
//     not answer; the chain tries the next one, and for a tag falls back to
//     the digest last agreed on.
//
// The chain verifies everything a tier returns (digest, size), so a Tier
// need not; it must only never claim more than it read.
type Tier interface {
	// Name identifies the tier in logs and, for upstream tiers, in the
	// metric label "tier" (keep it short and stable: "hub", "origin").
	// Peers are labelled "peer" in metrics whatever their name.
	Name() string
	// Blob opens blob d from byte offset (0 for the whole blob, more to
	// resume a broken transfer) and returns the bytes from there and the
	// blob's total size (-1 when unknown). A tier that cannot start at
	// offset returns an error; one whose answer starts elsewhere must skip
	// or fail, never return bytes from another offset. A body that is a
	// MarkedBody gives the blob's marks with it.
	Blob(ctx context.Context, ns, repo string, d digest.Digest, offset int64) (io.ReadCloser, int64, error)
	// Manifest returns a manifest by tag or digest, its bytes exactly as
	// served, at most store.MaxManifestSize of them (more is an error).
	// Digest may be empty (the chain hashes the body).
	Manifest(ctx context.Context, ns, repo, reference string) (registry.Manifest, error)
	// Tags lists the repository's tags, in any order.
	Tags(ctx context.Context, ns, repo string) ([]string, error)
}

// A MarkedBody is a blob body with the marks its sender recorded when it
// stored the blob (store.MarkInterval). A peer's bytes are checked against
// them as they arrive and reach clients interval by interval; without
// them, a peer's bytes reach clients only once the whole blob is verified.
type MarkedBody interface {
	io.ReadCloser
	Marks() []byte
}

// A PeerFinder tells which site peers hold a blob or manifest: the site's
// blob index. Holders returns them best first (the chain tries them in
// order) and should leave this node out; the chain drops a tier named
// Config.Self anyway. Peers that are fetching the content right now may be
// listed too: a peer serves a range of what it has as it arrives (see
// SiteFetch).
type PeerFinder interface {
	Holders(ctx context.Context, d digest.Digest) []Tier
}

// PeerFinderFunc adapts a function to PeerFinder.
type PeerFinderFunc func(ctx context.Context, d digest.Digest) []Tier

// Holders calls f.
func (f PeerFinderFunc) Holders(ctx context.Context, d digest.Digest) []Tier { return f(ctx, d) }

// SiteFetch lets the nodes of a site share one WAN fetch per blob. The
// chain calls Claim after no peer could serve d and before it goes
// upstream (hub, origin):
//
//   - owner nil: this node fetches; release is called (once) when the
//     fetch is over, committed or not. release may be nil.
//   - owner non-nil: another node of the site is fetching d; the chain
//     reads from owner (from its offset, as the bytes arrive there) and
//     goes upstream itself only if that fails.
//   - err: no agreement could be had (site Raft unavailable); the chain
//     goes upstream without a claim: availability before deduplication.
type SiteFetch interface {
	Claim(ctx context.Context, d digest.Digest) (owner Tier, release func(), err error)
}

// Sentinel errors.
var (
	// ErrNotServed is a Tier's answer for a namespace it does not serve
	// (the origin tier asked for the hub's own registry, ns ""). The chain
	// skips the tier without counting a miss.
	ErrNotServed = errors.New("namespace not served by this tier")
	// ErrClosed is returned by a Source once Run has returned.
	ErrClosed = errors.New("fetch chain stopped")
)
