package store

import (
	"errors"
	"fmt"
	"sort"

	"github.com/dgraph-io/badger/v4"
	"github.com/opencontainers/go-digest"
)

// Evict removes least recently used blobs until the stored bytes are
// within the quota, and returns how many blobs and bytes it freed. Blobs of
// pinned images and blobs open for reading are never evicted; if only such
// blobs are left the store stays over its quota (and logs it). Without a
// quota it does nothing. The store also evicts by itself before a Begin of
// known size and after every commit.
func (s *Store) Evict() (blobs int, bytes int64, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, 0, ErrClosed
	}
	before := s.count
	bytes, err = s.evictLocked(0)
	return before - s.count, bytes, err
}

type candidate struct {
	d      digest.Digest
	size   int64
	access int64
}

// evictLocked evicts until bytes+extra fits the quota. s.mu must be held.
func (s *Store) evictLocked(extra int64) (int64, error) {
	if s.quota == 0 || s.bytes+extra <= s.quota {
		return 0, nil
	}
	protected, err := s.protected()
	if err != nil {
		return 0, fmt.Errorf("evict: %w", err)
	}
	var cands []candidate
	err = s.db.View(func(txn *badger.Txn) error {
		return s.eachBlob(txn, func(d digest.Digest, rec blobRecord) error {
			c := candidate{d: d, size: rec.Size, access: rec.Stored}
			if item, err := txn.Get(s.k.access(d)); err == nil {
				_ = item.Value(func(v []byte) error { c.access = decodeTime(v).UnixNano(); return nil })
			} else if !errors.Is(err, badger.ErrKeyNotFound) {
				return err
			}
			cands = append(cands, c)
			return nil
		})
	})
	if err != nil {
		return 0, fmt.Errorf("evict: list blobs: %w", err)
	}
	sort.Slice(cands, func(i, j int) bool {
		if cands[i].access != cands[j].access {
			return cands[i].access < cands[j].access
		}
		return cands[i].d < cands[j].d
	})
	var freed int64
	for _, c := range cands {
		if s.bytes+extra <= s.quota {
			break
		}
		if protected[c.d] || s.readers[c.d] > 0 {
			continue
		}
		if err := s.removeBlobLocked(c.d, c.size); err != nil {
			return freed, fmt.Errorf("evict %s: %w", c.d, err)
		}
		freed += c.size
		s.evictions.Add(1)
		s.evictedBytes.Add(uint64(c.size))
		s.log.Debug("evicted blob", "digest", c.d, "bytes", c.size)
	}
	if s.bytes+extra > s.quota {
		s.log.Warn("over the disk quota: the blobs left are pinned or being read",
			"bytes", s.bytes, "wanted", extra, "quota", s.quota)
	}
	return freed, nil
}

// protected returns every blob digest a pin keeps: for each pinned
// reference that resolves, the manifest's config, layers and blobs, those
// of its child manifests (an index), and those of its referrers in the
// same repository (signatures, SBOMs).
func (s *Store) protected() (map[digest.Digest]bool, error) {
	pins, err := s.Pins()
	if err != nil {
		return nil, err
	}
	keep := map[digest.Digest]bool{}
	seen := map[digest.Digest]bool{}
	var walk func(ns, repo string, d digest.Digest, depth int)
	walk = func(ns, repo string, d digest.Digest, depth int) {
		if seen[d] || depth > 8 {
			return
		}
		seen[d] = true
		keep[d] = true
		m, err := s.manifestByDigest(d)
		if err != nil {
			return
		}
		mi, err := ParseManifest(m.Body)
		if err != nil {
			return
		}
		if mi.Config != nil {
			keep[mi.Config.Digest] = true
		}
		for _, l := range append(mi.Layers, mi.Blobs...) {
			keep[l.Digest] = true
		}
		for _, c := range mi.Manifests {
			walk(ns, repo, c.Digest, depth+1)
		}
		refs, err := s.Referrers(ns, repo, d)
		if err != nil {
			return
		}
		for _, r := range refs {
			walk(ns, repo, r.Digest, depth+1)
		}
	}
	for _, p := range pins {
		d, err := s.resolve(p.Namespace, p.Repository, p.Reference)
		if err != nil {
			continue // not pulled yet: nothing to keep
		}
		walk(p.Namespace, p.Repository, d, 0)
	}
	if s.retainOwn {
		if err := s.ownRegistryBlobs(keep); err != nil {
			return nil, err
		}
	}
	return keep, nil
}

// ownRegistryBlobs adds every blob linked to a repository of the hub's own
// registry (namespace "") to keep.
func (s *Store) ownRegistryBlobs(keep map[digest.Digest]bool) error {
	return s.db.View(func(txn *badger.Txn) error {
		prefix := s.k.space(spaceLink, "")
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
			if p := s.k.parts(it.Item().Key()); len(p) == 4 && p[2] == string(kindBlob) {
				keep[digest.Digest(p[3])] = true
			}
		}
		return nil
	})
}
