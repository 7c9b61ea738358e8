package store

import (
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Pin keeps an image from eviction: its manifests and every blob they
// reference.
type Pin struct {
	Namespace  string
	Repository string
	// Reference is a tag (the pin follows the tag as it moves) or a
	// digest.
	Reference string
	Pinned    time.Time
}

func validateReference(ref string) error {
	if isDigestRef(ref) {
		_, err := ParseDigest(ref)
		return err
	}
	return ValidateTag(ref)
}

// Pin protects the image ns/repo:reference from eviction. The image need
// not be stored yet: the pin applies once it is.
func (s *Store) Pin(ns, repo, reference string) error {
	if err := validateRepo(ns, repo); err != nil {
		return fmt.Errorf("pin: %w", err)
	}
	if err := validateReference(reference); err != nil {
		return fmt.Errorf("pin: %w", err)
	}
	if err := s.checkOpen(); err != nil {
		return err
	}
	now := s.now().UnixNano()
	err := s.update(func(txn *badger.Txn) error {
		return txn.Set(s.k.pin(ns, repo, reference), encodeJSON(pinRecord{Pinned: now}))
	})
	if err != nil {
		return fmt.Errorf("pin %s@%s: %w", repoName(ns, repo), reference, err)
	}
	return nil
}

// Unpin removes a pin; a pin that does not exist is ErrNotFound.
func (s *Store) Unpin(ns, repo, reference string) error {
	if err := validateRepo(ns, repo); err != nil {
		return fmt.Errorf("unpin: %w", err)
	}
	if err := validateReference(reference); err != nil {
		return fmt.Errorf("unpin: %w", err)
	}
	err := s.update(func(txn *badger.Txn) error {
		ok, err := exists(txn, s.k.pin(ns, repo, reference))
		if err != nil {
			return err
		}
		if !ok {
			return ErrNotFound
		}
		return txn.Delete(s.k.pin(ns, repo, reference))
	})
	if err != nil {
		return fmt.Errorf("unpin %s@%s: %w", repoName(ns, repo), reference, err)
	}
	return nil
}

// Pins lists the pins, ordered by namespace, repository and reference.
func (s *Store) Pins() ([]Pin, error) {
	var out []Pin
	err := s.db.View(func(txn *badger.Txn) error {
		prefix := s.k.space(spacePin)
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true})
		defer it.Close()
		for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
			p := s.k.parts(it.Item().Key())
			if len(p) != 3 {
				continue
			}
			var rec pinRecord
			if err := it.Item().Value(func(v []byte) error { return decodeJSON(v, &rec, "pin") }); err != nil {
				return err
			}
			out = append(out, Pin{Namespace: p[0], Repository: p[1], Reference: p[2], Pinned: unixTime(rec.Pinned)})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list pins: %w", err)
	}
	return out, nil
}
