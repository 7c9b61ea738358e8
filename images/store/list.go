package store

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/opencontainers/go-digest"
)

// Repository is one line of `outpost images ls`: a repository of one
// upstream registry as this node holds it.
type Repository struct {
	// Namespace is the upstream registry host ("" for the hub's own).
	Namespace string
	Name      string
	Tags      []Tag
	// Size is the bytes of the stored blobs and manifests linked to the
	// repository; a blob shared with other repositories counts in each.
	Size       int64
	Blobs      int
	Manifests  int
	Pulls      uint64
	LastPulled time.Time
	// Pinned lists the pinned references.
	Pinned []string
}

// RecordPull counts a pull of the repository and remembers when.
func (s *Store) RecordPull(ns, repo string) error {
	if err := validateRepo(ns, repo); err != nil {
		return fmt.Errorf("record pull: %w", err)
	}
	now := s.now().UnixNano()
	err := s.update(func(txn *badger.Txn) error {
		var rec pullRecord
		if _, err := getJSON(txn, s.k.pulls(ns, repo), &rec, "pulls"); err != nil {
			return err
		}
		rec.Pulls++
		rec.Last = now
		return txn.Set(s.k.pulls(ns, repo), encodeJSON(rec))
	})
	if err != nil {
		return fmt.Errorf("record pull of %s: %w", repoName(ns, repo), err)
	}
	return nil
}

// Repositories lists every repository the store knows (linked content,
// tags, pulls or pins), ordered by namespace and name.
func (s *Store) Repositories() ([]Repository, error) {
	repos := map[[2]string]*Repository{}
	get := func(ns, name string) *Repository {
		k := [2]string{ns, name}
		if r, ok := repos[k]; ok {
			return r
		}
		r := &Repository{Namespace: ns, Name: name}
		repos[k] = r
		return r
	}
	err := s.db.View(func(txn *badger.Txn) error {
		scan := func(space byte, fn func(p []string, item *badger.Item) error) error {
			prefix := s.k.space(space)
			it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true})
			defer it.Close()
			for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
				if err := fn(s.k.parts(it.Item().Key()), it.Item()); err != nil {
					return err
				}
			}
			return nil
		}
		err := scan(spaceLink, func(p []string, _ *badger.Item) error {
			if len(p) != 4 {
				return nil
			}
			r, d := get(p[0], p[1]), digest.Digest(p[3])
			switch p[2] {
			case string(kindBlob):
				var rec blobRecord
				ok, err := getJSON(txn, s.k.blob(d), &rec, "blob")
				if err != nil || !ok {
					return err
				}
				r.Size += rec.Size
				r.Blobs++
			case string(kindManifest):
				item, err := txn.Get(s.k.manifest(d))
				if errors.Is(err, badger.ErrKeyNotFound) {
					return nil
				}
				if err != nil {
					return err
				}
				return item.Value(func(v []byte) error {
					_, body, err := decodeManifest(v)
					r.Size += int64(len(body))
					r.Manifests++
					return err
				})
			}
			return nil
		})
		if err != nil {
			return err
		}
		err = scan(spaceTag, func(p []string, item *badger.Item) error {
			if len(p) != 3 {
				return nil
			}
			var rec tagRecord
			if err := item.Value(func(v []byte) error { return decodeJSON(v, &rec, "tag") }); err != nil {
				return err
			}
			r := get(p[0], p[1])
			r.Tags = append(r.Tags, Tag{Name: p[2], Digest: rec.Digest, Resolved: unixTime(rec.Resolved)})
			return nil
		})
		if err != nil {
			return err
		}
		err = scan(spacePulls, func(p []string, item *badger.Item) error {
			if len(p) != 2 {
				return nil
			}
			var rec pullRecord
			if err := item.Value(func(v []byte) error { return decodeJSON(v, &rec, "pulls") }); err != nil {
				return err
			}
			r := get(p[0], p[1])
			r.Pulls, r.LastPulled = rec.Pulls, unixTime(rec.Last)
			return nil
		})
		if err != nil {
			return err
		}
		return scan(spacePin, func(p []string, _ *badger.Item) error {
			if len(p) == 3 {
				r := get(p[0], p[1])
				r.Pinned = append(r.Pinned, p[2])
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list repositories: %w", err)
	}
	out := make([]Repository, 0, len(repos))
	for _, r := range repos {
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}

// Digests lists every digest the store holds content of: each stored blob
// and each stored manifest, sorted, without duplicates. The node reports
// it to its site's blob index after a restart.
func (s *Store) Digests() ([]digest.Digest, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	seen := map[digest.Digest]bool{}
	err := s.db.View(func(txn *badger.Txn) error {
		for _, space := range []byte{spaceBlob, spaceManifest} {
			prefix := s.k.space(space)
			it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
			for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
				seen[digest.Digest(it.Item().Key()[len(prefix):])] = true
			}
			it.Close()
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("images store: list digests: %w", err)
	}
	out := make([]digest.Digest, 0, len(seen))
	for d := range seen {
		out = append(out, d)
	}
	slices.Sort(out)
	return out, nil
}
