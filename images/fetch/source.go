package fetch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/outpost-mesh/outpost/images/registry"
	"github.com/outpost-mesh/outpost/images/store"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/singleflight"
)

// Source is the fetch chain: a registry.Source over the node's store and
// the tiers behind it. It is safe for concurrent use. Blob fetches run in
// goroutines the Source owns, detached from the request that started them
// (other requests may be following them); Run stops them.
type Source struct {
	cfg   Config
	st    *store.Store
	log   *slog.Logger
	now   func() time.Time
	m     metrics
	sizes *sizeTable

	// runCtx bounds every fetch; Run cancels it on return.
	runCtx  context.Context
	stopRun context.CancelFunc
	fetches errgroup.Group

	// flights collapses concurrent manifest and tag lookups.
	flights singleflight.Group

	mu      sync.Mutex
	stopped bool
	jobs    map[digest.Digest]*job // blob fetches in progress, one per digest
	down    map[string]time.Time   // tags whose upstream did not answer, until when
}

var _ registry.Source = (*Source)(nil)

// New validates cfg and returns a Source. It starts no goroutines; blob
// fetches start on demand and are stopped when Run returns.
func New(cfg Config) (*Source, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Source{
		cfg:     cfg,
		st:      cfg.Store,
		log:     logger.With("component", "images_fetch"),
		now:     now,
		sizes:   newSizeTable(cfg.MaxSizes),
		runCtx:  ctx,
		stopRun: cancel,
		jobs:    map[digest.Digest]*job{},
		down:    map[string]time.Time{},
	}, nil
}

// Run blocks until ctx is done, then cancels the fetches in progress
// (their followers read an error; the writes are aborted) and waits for
// them. Requests after Run returned fail with ErrClosed.
func (s *Source) Run(ctx context.Context) error {
	<-ctx.Done()
	s.mu.Lock()
	s.stopped = true
	s.mu.Unlock()
	s.stopRun()
	return s.fetches.Wait()
}

// Tags lists the repository's tags: from the first upstream tier that
// answers, else (offline, or no upstream) from this node's records.
func (s *Source) Tags(ctx context.Context, ns, repo string) ([]string, error) {
	var answer, last error
	for _, t := range s.cfg.Upstream {
		tags, err := t.Tags(ctx, ns, repo)
		if err == nil {
			return tags, nil
		}
		if errors.Is(err, ErrNotServed) {
			continue
		}
		s.log.Debug("tag list failed", "tier", t.Name(), "ns", ns, "repo", repo, "err", err)
		last = err
		if isAnswer(err) {
			answer = err
		}
	}
	if answer != nil {
		return nil, answer
	}
	tags, err := s.st.Tags(ns, repo)
	if err == nil {
		names := make([]string, len(tags))
		for i, t := range tags {
			names[i] = t.Name
		}
		return names, nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	if last != nil {
		return nil, unavailable(last)
	}
	return nil, fmt.Errorf("%w: %s/%s", registry.ErrNameUnknown, ns, repo)
}

// Referrers lists the referrers this node holds for subject.
func (s *Source) Referrers(_ context.Context, ns, repo string, subject digest.Digest) ([]ocispec.Descriptor, error) {
	return s.st.Referrers(ns, repo, subject)
}

// isAnswer tells an upstream's answer (not there, refused) from a failure
// to answer (unreachable, overloaded, broken).
func isAnswer(err error) bool {
	for _, e := range []error{registry.ErrBlobUnknown, registry.ErrManifestUnknown, registry.ErrNameUnknown,
		registry.ErrUnauthorized, registry.ErrDenied, registry.ErrManifestInvalid, registry.ErrManifestTooLarge} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// unavailable wraps the last failure of a chain in which no upstream
// answered: 429 if an upstream said so, else 503.
func unavailable(last error) error {
	if errors.Is(last, registry.ErrTooManyRequests) || errors.Is(last, registry.ErrUnavailable) {
		return last
	}
	return fmt.Errorf("%w: %w", registry.ErrUnavailable, last)
}

// label is a tier's metric label: "peer" for every peer.
func label(t Tier, peer bool) string {
	if peer {
		return "peer"
	}
	return t.Name()
}

// peersOf returns the site peers holding d, without this node.
func (s *Source) peersOf(ctx context.Context, d digest.Digest) []Tier {
	if s.cfg.Peers == nil {
		return nil
	}
	var out []Tier
	for _, t := range s.cfg.Peers.Holders(ctx, d) {
		if t != nil && (s.cfg.Self == "" || t.Name() != s.cfg.Self) {
			out = append(out, t)
		}
	}
	return out
}

// corrupt reports content from t that failed verification.
func (s *Source) corrupt(t Tier, peer bool, d digest.Digest, why string) {
	s.m.tier(label(t, peer)).corrupt.Add(1)
	s.log.Warn("content failed verification", "tier", t.Name(), "digest", d, "why", why)
	if s.cfg.OnCorrupt != nil {
		s.cfg.OnCorrupt(t, d)
	}
}

// stored reports content fetched and stored.
func (s *Source) stored(d digest.Digest) {
	if s.cfg.OnStored != nil {
		s.cfg.OnStored(d)
	}
}
