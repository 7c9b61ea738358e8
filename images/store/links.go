package store

import (
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/opencontainers/go-digest"
)

// BlobInfo describes a stored blob.
type BlobInfo struct {
	Digest     digest.Digest
	Size       int64
	Stored     time.Time
	LastAccess time.Time
}

// Stat describes a stored blob without opening it (no hit or miss is
// counted). A blob being written is ErrNotFound until committed.
func (s *Store) Stat(d digest.Digest) (BlobInfo, error) {
	if err := checkDigest(d); err != nil {
		return BlobInfo{}, fmt.Errorf("stat blob: %w", err)
	}
	info := BlobInfo{Digest: d}
	err := s.db.View(func(txn *badger.Txn) error {
		var rec blobRecord
		ok, err := getJSON(txn, s.k.blob(d), &rec, "blob")
		if err != nil {
			return err
		}
		if !ok {
			return ErrNotFound
		}
		info.Size, info.Stored = rec.Size, unixTime(rec.Stored)
		if item, err := txn.Get(s.k.access(d)); err == nil {
			_ = item.Value(func(v []byte) error { info.LastAccess = decodeTime(v); return nil })
		}
		return nil
	})
	if err != nil {
		return BlobInfo{}, fmt.Errorf("stat blob %s: %w", d, err)
	}
	return info, nil
}

// LinkBlob records that the repository holds blob d, which must be stored.
// Links are what a registry's blob endpoints answer from, what
// Repositories sizes, and what keeps a pushed blob from being collected.
func (s *Store) LinkBlob(ns, repo string, d digest.Digest) error {
	if err := validateRepo(ns, repo); err != nil {
		return fmt.Errorf("link blob: %w", err)
	}
	if err := checkDigest(d); err != nil {
		return fmt.Errorf("link blob: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	now := s.now().UnixNano()
	err := s.update(func(txn *badger.Txn) error {
		ok, err := exists(txn, s.k.blob(d))
		if err != nil {
			return err
		}
		if !ok {
			return ErrNotFound
		}
		if err := txn.Set(s.k.link(ns, repo, kindBlob, d), encodeJSON(linkRecord{Linked: now})); err != nil {
			return err
		}
		return txn.Set(s.k.revLink(d, kindBlob, ns, repo), nil)
	})
	if err != nil {
		return fmt.Errorf("link blob %s to %s: %w", d, repoName(ns, repo), err)
	}
	return nil
}

// BlobLinked reports whether the repository holds blob d and d is stored.
func (s *Store) BlobLinked(ns, repo string, d digest.Digest) (bool, error) {
	if err := validateRepo(ns, repo); err != nil {
		return false, fmt.Errorf("check blob link: %w", err)
	}
	if err := checkDigest(d); err != nil {
		return false, fmt.Errorf("check blob link: %w", err)
	}
	var linked bool
	err := s.db.View(func(txn *badger.Txn) error {
		ok, err := exists(txn, s.k.link(ns, repo, kindBlob, d))
		if err != nil || !ok {
			return err
		}
		linked, err = exists(txn, s.k.blob(d))
		return err
	})
	return linked, err
}

// ManifestLinked reports whether the repository holds manifest d (no hit
// or miss is counted).
func (s *Store) ManifestLinked(ns, repo string, d digest.Digest) (bool, error) {
	if err := validateRepo(ns, repo); err != nil {
		return false, fmt.Errorf("check manifest link: %w", err)
	}
	if err := checkDigest(d); err != nil {
		return false, fmt.Errorf("check manifest link: %w", err)
	}
	var linked bool
	err := s.db.View(func(txn *badger.Txn) error {
		ok, err := exists(txn, s.k.link(ns, repo, kindManifest, d))
		if err != nil || !ok {
			return err
		}
		linked, err = exists(txn, s.k.manifest(d))
		return err
	})
	return linked, err
}

// UnlinkBlob removes the repository's link to blob d. When no repository
// holds the blob any more it is deleted (file and metadata), even if
// pinned or open: an open Reader keeps reading the unlinked file.
func (s *Store) UnlinkBlob(ns, repo string, d digest.Digest) error {
	if err := validateRepo(ns, repo); err != nil {
		return fmt.Errorf("unlink blob: %w", err)
	}
	if err := checkDigest(d); err != nil {
		return fmt.Errorf("unlink blob: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	last := false
	err := s.update(func(txn *badger.Txn) error {
		ok, err := exists(txn, s.k.link(ns, repo, kindBlob, d))
		if err != nil {
			return err
		}
		if !ok {
			return ErrNotFound
		}
		if err := txn.Delete(s.k.link(ns, repo, kindBlob, d)); err != nil {
			return err
		}
		if err := txn.Delete(s.k.revLink(d, kindBlob, ns, repo)); err != nil {
			return err
		}
		others, err := hasOtherLinks(txn, s.k.space(spaceRevLink, string(d), string(kindBlob)), ns, repo)
		last = !others
		return err
	})
	if err != nil {
		return fmt.Errorf("unlink blob %s from %s: %w", d, repoName(ns, repo), err)
	}
	if last {
		return s.deleteLocked(d)
	}
	return nil
}

func hasOtherLinks(txn *badger.Txn, prefix []byte, ns, repo string) (bool, error) {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
		rest := it.Item().Key()[len(prefix):]
		if string(rest) != ns+"\x00"+repo {
			return true, nil
		}
	}
	return false, nil
}

// Delete removes blob d from the store whatever holds it: file, record
// and links. A blob not stored is ErrNotFound.
func (s *Store) Delete(d digest.Digest) error {
	if err := checkDigest(d); err != nil {
		return fmt.Errorf("delete blob: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	return s.deleteLocked(d)
}

func (s *Store) deleteLocked(d digest.Digest) error {
	rec, ok, err := s.blobRecordOf(d)
	if err != nil {
		return fmt.Errorf("delete blob %s: %w", d, err)
	}
	if !ok {
		return fmt.Errorf("delete blob %s: %w", d, ErrNotFound)
	}
	return s.removeBlobLocked(d, rec.Size)
}
