package fetch

import (
	"context"
	"errors"
	"fmt"
	"mime"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/outpost-mesh/outpost/images/registry"
	"github.com/outpost-mesh/outpost/images/store"
)

// lookupTimeout bounds a manifest or tag lookup shared by several
// requests (it is detached from the request that started it).
const lookupTimeout = 2 * time.Minute

// maxDown bounds the tags remembered as having no upstream answer.
const maxDown = 10_000

// Manifest returns a manifest by digest (the store, then the peers that
// hold it, then the upstream tiers, each answer verified against the
// digest) or by tag (the store while the tag is fresher than TagTTL, else
// the upstream tiers, else the digest the site last agreed on). What is
// fetched is stored; an index is kept whole and its platform manifests
// are fetched when asked for.
func (s *Source) Manifest(ctx context.Context, ns, repo, reference string) (registry.Manifest, error) {
	if strings.Contains(reference, ":") {
		d, err := store.ParseDigest(reference)
		if err != nil {
			return registry.Manifest{}, fmt.Errorf("%w: %w", registry.ErrDigestInvalid, err)
		}
		return s.manifestByDigest(ctx, ns, repo, d)
	}
	return s.manifestByTag(ctx, ns, repo, reference)
}

// local returns a manifest the store holds, linking it to the repository
// if another repository brought it.
func (s *Source) local(ns, repo string, d digest.Digest) (registry.Manifest, bool) {
	m, err := s.st.Manifest(ns, repo, d.String())
	if err != nil {
		if m, err = s.st.ManifestByDigest(d); err != nil {
			return registry.Manifest{}, false
		}
		if err := s.st.PutManifest(ns, repo, d, m.MediaType, m.Body); err != nil {
			s.log.Debug("link manifest", "digest", d, "ns", ns, "repo", repo, "err", err)
		}
	}
	s.sizes.learn(m.Body)
	return registry.Manifest{Digest: d, MediaType: m.MediaType, Body: m.Body}, true
}

// shared runs fn once for every concurrent caller with the same key, in a
// context detached from each caller's (bounded by Run and lookupTimeout).
func (s *Source) shared(ctx context.Context, key string, fn func(ctx context.Context) (registry.Manifest, error)) (registry.Manifest, error) {
	ch := s.flights.DoChan(key, func() (any, error) {
		fctx, cancel := context.WithTimeout(s.runCtx, lookupTimeout)
		defer cancel()
		return fn(fctx)
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return registry.Manifest{}, r.Err
		}
		return r.Val.(registry.Manifest), nil
	case <-ctx.Done():
		return registry.Manifest{}, ctx.Err()
	}
}

func (s *Source) manifestByDigest(ctx context.Context, ns, repo string, d digest.Digest) (registry.Manifest, error) {
	if m, ok := s.local(ns, repo, d); ok {
		s.m.manifestHits.Add(1)
		return m, nil
	}
	s.m.manifestMisses.Add(1)
	return s.shared(ctx, "d\x00"+ns+"\x00"+repo+"\x00"+d.String(), func(ctx context.Context) (registry.Manifest, error) {
		if m, ok := s.local(ns, repo, d); ok {
			return m, nil
		}
		var plan []candidate
		for _, t := range s.peersOf(ctx, d) {
			plan = append(plan, candidate{t: t, peer: true})
		}
		for _, t := range s.cfg.Upstream {
			plan = append(plan, candidate{t: t})
		}
		var answer, last error
		for _, c := range plan {
			tc := s.m.tier(label(c.t, c.peer))
			m, err := c.t.Manifest(ctx, ns, repo, d.String())
			if err == nil {
				err = s.check(c, d, &m)
			}
			if err != nil {
				if errors.Is(err, ErrNotServed) {
					continue
				}
				tc.manifestMisses.Add(1)
				s.log.Debug("manifest source failed", "tier", c.t.Name(), "digest", d, "err", err)
				last = err
				if !c.peer && isAnswer(err) {
					answer = err
				}
				continue
			}
			tc.manifestHits.Add(1)
			if err := s.st.PutManifest(ns, repo, d, m.MediaType, m.Body); err != nil {
				return registry.Manifest{}, err
			}
			s.sizes.learn(m.Body)
			s.stored(d)
			return m, nil
		}
		switch {
		case answer != nil:
			return registry.Manifest{}, answer
		case last != nil:
			return registry.Manifest{}, unavailable(last)
		}
		return registry.Manifest{}, fmt.Errorf("%w: %s/%s@%s is not on this node", registry.ErrManifestUnknown, ns, repo, d)
	})
}

// check verifies a manifest a tier served: its size, its digest (want, or
// the one the tier named; sha256 of the body when neither), its media
// type. m is completed in place.
func (s *Source) check(c candidate, want digest.Digest, m *registry.Manifest) error {
	if len(m.Body) > store.MaxManifestSize {
		return fmt.Errorf("%w: %s served %d bytes", registry.ErrManifestTooLarge, c.t.Name(), len(m.Body))
	}
	d := want
	if d == "" {
		d = m.Digest
	}
	if d == "" {
		d = digest.FromBytes(m.Body)
	} else if _, err := store.ParseDigest(d.String()); err != nil {
		return fmt.Errorf("%s named the manifest %q: %w", c.t.Name(), d, err)
	}
	if got := d.Algorithm().FromBytes(m.Body); got != d {
		s.corrupt(c.t, c.peer, d, fmt.Sprintf("manifest bytes hash to %s", got))
		return fmt.Errorf("%s: manifest %s: %w (got %s)", c.t.Name(), d, store.ErrDigestMismatch, got)
	}
	m.Digest = d
	m.MediaType = manifestType(m.MediaType, m.Body)
	if m.MediaType == "" {
		return fmt.Errorf("%w: %s served a manifest without a media type", registry.ErrManifestInvalid, c.t.Name())
	}
	return nil
}

// manifestType returns the media type to keep a manifest under: the
// Content-Type it was served with when that names a manifest, else the
// body's mediaType field.
func manifestType(contentType string, body []byte) string {
	if mt, _, err := mime.ParseMediaType(contentType); err == nil && (strings.Contains(mt, "manifest") || strings.Contains(mt, "index")) {
		return mt
	}
	if mi, err := store.ParseManifest(body); err == nil && mi.MediaType != "" {
		return mi.MediaType
	}
	if mt, _, err := mime.ParseMediaType(contentType); err == nil && mt != "application/octet-stream" && mt != "text/plain" {
		return mt
	}
	return ""
}

func (s *Source) manifestByTag(ctx context.Context, ns, repo, tag string) (registry.Manifest, error) {
	if err := store.ValidateTag(tag); err != nil {
		return registry.Manifest{}, fmt.Errorf("%w: %w", registry.ErrManifestUnknown, err)
	}
	if rec, err := s.st.ResolveTag(ns, repo, tag); err == nil && s.now().Sub(rec.Resolved) < s.cfg.TagTTL {
		if m, ok := s.local(ns, repo, rec.Digest); ok {
			s.m.manifestHits.Add(1)
			return m, nil
		}
	}
	s.m.manifestMisses.Add(1)
	key := "t\x00" + ns + "\x00" + repo + "\x00" + tag
	return s.shared(ctx, key, func(ctx context.Context) (registry.Manifest, error) {
		m, answered, err := s.resolveUpstream(ctx, key, ns, repo, tag)
		if answered {
			return m, err
		}
		return s.fallback(ctx, ns, repo, tag, err)
	})
}

// resolveUpstream asks the upstream tiers for a tag, in order. answered is
// false when none answered (there are none, or all failed to): then the
// caller falls back to the last agreed digest.
func (s *Source) resolveUpstream(ctx context.Context, key, ns, repo, tag string) (m registry.Manifest, answered bool, err error) {
	if len(s.cfg.Upstream) == 0 {
		return registry.Manifest{}, false, nil
	}
	s.mu.Lock()
	until, isDown := s.down[key]
	if isDown && !s.now().Before(until) {
		delete(s.down, key)
		isDown = false
	}
	s.mu.Unlock()
	if isDown {
		return registry.Manifest{}, false, fmt.Errorf("%w: no upstream answered for %s/%s:%s recently", registry.ErrUnavailable, ns, repo, tag)
	}
	var answer, last error
	for _, t := range s.cfg.Upstream {
		c := candidate{t: t}
		tc := s.m.tier(t.Name())
		m, err := t.Manifest(ctx, ns, repo, tag)
		if err == nil {
			err = s.check(c, "", &m)
		}
		if err != nil {
			if errors.Is(err, ErrNotServed) {
				continue
			}
			tc.manifestMisses.Add(1)
			s.log.Debug("tag resolution failed", "tier", t.Name(), "ns", ns, "repo", repo, "tag", tag, "err", err)
			last = err
			if isAnswer(err) {
				answer = err
			}
			continue
		}
		tc.manifestHits.Add(1)
		if err := s.st.PutManifest(ns, repo, m.Digest, m.MediaType, m.Body); err != nil {
			return registry.Manifest{}, true, err
		}
		if err := s.st.Tag(ns, repo, tag, m.Digest); err != nil {
			return registry.Manifest{}, true, err
		}
		s.sizes.learn(m.Body)
		s.stored(m.Digest)
		if s.cfg.OnTagResolved != nil {
			s.cfg.OnTagResolved(ns, repo, tag, m.Digest)
		}
		return m, true, nil
	}
	if answer != nil {
		return registry.Manifest{}, true, answer
	}
	if last == nil { // every tier skipped the namespace
		return registry.Manifest{}, false, nil
	}
	if s.cfg.TagTTL > 0 {
		now := s.now()
		s.mu.Lock()
		if len(s.down) >= maxDown {
			for k, until := range s.down {
				if !now.Before(until) || len(s.down) >= maxDown {
					delete(s.down, k)
				}
			}
		}
		s.down[key] = now.Add(s.cfg.TagTTL)
		s.mu.Unlock()
	}
	return registry.Manifest{}, false, last
}

// fallback answers a tag no upstream answered for: the digest the site
// last agreed on (LookupTag), else this node's own record, fetched by
// digest (store, peers, upstream).
func (s *Source) fallback(ctx context.Context, ns, repo, tag string, upstreamErr error) (registry.Manifest, error) {
	var d digest.Digest
	if s.cfg.LookupTag != nil {
		if ad, ok := s.cfg.LookupTag(ctx, ns, repo, tag); ok {
			if _, err := store.ParseDigest(ad.String()); err == nil {
				d = ad
			}
		}
	}
	if d == "" {
		rec, err := s.st.ResolveTag(ns, repo, tag)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return registry.Manifest{}, err
		}
		d = rec.Digest
	}
	if d == "" {
		if upstreamErr != nil {
			return registry.Manifest{}, unavailable(upstreamErr)
		}
		return registry.Manifest{}, fmt.Errorf("%w: %s/%s:%s", registry.ErrManifestUnknown, ns, repo, tag)
	}
	if upstreamErr != nil {
		s.m.tagFallbacks.Add(1)
		s.log.Info("no upstream answered; serving the tag's last agreed digest", "ns", ns, "repo", repo, "tag", tag, "digest", d, "err", upstreamErr)
	}
	return s.manifestByDigest(ctx, ns, repo, d)
}
