package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Manifest is a manifest as stored: its bytes exactly as pulled or pushed,
// which is what its digest covers.
type Manifest struct {
	Digest    digest.Digest
	MediaType string
	Body      []byte
}

// Tag is a tag of a repository, the digest it was last resolved to, and
// when.
type Tag struct {
	Name     string
	Digest   digest.Digest
	Resolved time.Time
}

// ManifestInfo is what a manifest points to, read from its JSON: an image
// manifest has a config and layers, an index has manifests; any may have a
// subject (it is then a referrer of that subject).
type ManifestInfo struct {
	SchemaVersion int                  `json:"schemaVersion"`
	MediaType     string               `json:"mediaType,omitempty"`
	ArtifactType  string               `json:"artifactType,omitempty"`
	Config        *ocispec.Descriptor  `json:"config,omitempty"`
	Layers        []ocispec.Descriptor `json:"layers,omitempty"`
	Manifests     []ocispec.Descriptor `json:"manifests,omitempty"`
	Blobs         []ocispec.Descriptor `json:"blobs,omitempty"`
	Subject       *ocispec.Descriptor  `json:"subject,omitempty"`
	Annotations   map[string]string    `json:"annotations,omitempty"`
}

// ParseManifest reads the parts of a manifest the store and registry use.
// The body must be a JSON object; nothing else is checked here.
func ParseManifest(body []byte) (ManifestInfo, error) {
	var mi ManifestInfo
	if err := json.Unmarshal(body, &mi); err != nil {
		return mi, fmt.Errorf("%w: not a JSON manifest: %v", ErrInvalidManifest, err)
	}
	return mi, nil
}

// referrerDescriptor is the descriptor the referrers API lists for a
// manifest with a subject.
func referrerDescriptor(d digest.Digest, mediaType string, size int64, mi ManifestInfo) ocispec.Descriptor {
	at := mi.ArtifactType
	if at == "" && mi.Config != nil && mi.Manifests == nil {
		at = mi.Config.MediaType
	}
	return ocispec.Descriptor{
		MediaType:    mediaType,
		ArtifactType: at,
		Digest:       d,
		Size:         size,
		Annotations:  mi.Annotations,
	}
}

// PutManifest stores a manifest under digest d and links it to the
// repository; a manifest with a subject is indexed for Referrers. The body
// is kept byte for byte. mediaType is the type it was served or pushed as;
// empty means the body's mediaType field. The body must hash to d and be
// at most MaxManifestSize bytes.
func (s *Store) PutManifest(ns, repo string, d digest.Digest, mediaType string, body []byte) error {
	if err := validateRepo(ns, repo); err != nil {
		return fmt.Errorf("put manifest: %w", err)
	}
	if err := checkDigest(d); err != nil {
		return fmt.Errorf("put manifest: %w", err)
	}
	if len(body) > MaxManifestSize {
		return fmt.Errorf("put manifest %s: %d bytes: %w: larger than %d bytes", d, len(body), ErrInvalidManifest, MaxManifestSize)
	}
	if got := d.Algorithm().FromBytes(body); got != d {
		return fmt.Errorf("put manifest %s: the body hashes to %s: %w", d, got, ErrDigestMismatch)
	}
	mi, err := ParseManifest(body)
	if err != nil {
		return fmt.Errorf("put manifest %s: %w", d, err)
	}
	if mediaType == "" {
		mediaType = mi.MediaType
	}
	if mediaType == "" {
		return fmt.Errorf("put manifest %s: %w: no media type given and none in the body", d, ErrInvalidManifest)
	}
	if err := s.checkOpen(); err != nil {
		return err
	}
	now := s.now().UnixNano()
	err = s.update(func(txn *badger.Txn) error {
		if err := txn.Set(s.k.manifest(d), encodeManifest(mediaType, body)); err != nil {
			return err
		}
		if err := txn.Set(s.k.link(ns, repo, kindManifest, d), encodeJSON(linkRecord{Linked: now})); err != nil {
			return err
		}
		if err := txn.Set(s.k.revLink(d, kindManifest, ns, repo), nil); err != nil {
			return err
		}
		if mi.Subject != nil && checkDigest(mi.Subject.Digest) == nil {
			desc := referrerDescriptor(d, mediaType, int64(len(body)), mi)
			return txn.Set(s.k.referrer(ns, repo, mi.Subject.Digest, d), encodeJSON(desc))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("put manifest %s in %s: %w", d, repoName(ns, repo), err)
	}
	s.changed(d, true)
	return nil
}

// Tag points tag of the repository at manifest d, which must be stored and
// linked to the repository, and records now as its resolution time.
func (s *Store) Tag(ns, repo, tag string, d digest.Digest) error {
	if err := validateRepo(ns, repo); err != nil {
		return fmt.Errorf("tag: %w", err)
	}
	if err := ValidateTag(tag); err != nil {
		return err
	}
	if err := checkDigest(d); err != nil {
		return fmt.Errorf("tag %s: %w", tag, err)
	}
	if err := s.checkOpen(); err != nil {
		return err
	}
	now := s.now().UnixNano()
	err := s.update(func(txn *badger.Txn) error {
		ok, err := exists(txn, s.k.link(ns, repo, kindManifest, d))
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("manifest %s: %w in the repository: put it first", d, ErrNotFound)
		}
		return txn.Set(s.k.tag(ns, repo, tag), encodeJSON(tagRecord{Digest: d, Resolved: now}))
	})
	if err != nil {
		return fmt.Errorf("tag %s:%s: %w", repoName(ns, repo), tag, err)
	}
	return nil
}

// ResolveTag returns the digest tag was last resolved to, and when.
func (s *Store) ResolveTag(ns, repo, tag string) (Tag, error) {
	if err := validateRepo(ns, repo); err != nil {
		return Tag{}, fmt.Errorf("resolve tag: %w", err)
	}
	if err := ValidateTag(tag); err != nil {
		return Tag{}, err
	}
	var rec tagRecord
	var ok bool
	err := s.db.View(func(txn *badger.Txn) (err error) {
		ok, err = getJSON(txn, s.k.tag(ns, repo, tag), &rec, "tag")
		return err
	})
	if err != nil {
		return Tag{}, fmt.Errorf("resolve tag %s:%s: %w", repoName(ns, repo), tag, err)
	}
	if !ok {
		return Tag{}, fmt.Errorf("tag %s:%s: %w", repoName(ns, repo), tag, ErrNotFound)
	}
	return Tag{Name: tag, Digest: rec.Digest, Resolved: unixTime(rec.Resolved)}, nil
}

// Manifest returns a manifest of the repository by reference: a tag or a
// digest linked to the repository. A manifest found is a hit, one not here
// a miss (ErrNotFound).
func (s *Store) Manifest(ns, repo, reference string) (Manifest, error) {
	if err := validateRepo(ns, repo); err != nil {
		return Manifest{}, fmt.Errorf("get manifest: %w", err)
	}
	d, err := s.resolve(ns, repo, reference)
	if err == nil {
		var m Manifest
		if m, err = s.manifestByDigest(d); err == nil {
			s.manifestHits.Add(1)
			return m, nil
		}
	}
	if errors.Is(err, ErrNotFound) {
		s.manifestMisses.Add(1)
	}
	return Manifest{}, fmt.Errorf("get manifest %s@%s: %w", repoName(ns, repo), reference, err)
}

// resolve turns a reference into a digest linked to the repository.
func (s *Store) resolve(ns, repo, reference string) (digest.Digest, error) {
	if isDigestRef(reference) {
		d, err := ParseDigest(reference)
		if err != nil {
			return "", err
		}
		err = s.db.View(func(txn *badger.Txn) error {
			ok, err := exists(txn, s.k.link(ns, repo, kindManifest, d))
			if err == nil && !ok {
				err = ErrNotFound
			}
			return err
		})
		return d, err
	}
	t, err := s.ResolveTag(ns, repo, reference)
	return t.Digest, err
}

// isDigestRef tells a digest reference from a tag: tags cannot hold ':'.
func isDigestRef(ref string) bool {
	for i := 0; i < len(ref); i++ {
		if ref[i] == ':' {
			return true
		}
	}
	return false
}

// ManifestByDigest returns a stored manifest whatever repository holds it.
func (s *Store) ManifestByDigest(d digest.Digest) (Manifest, error) {
	if err := checkDigest(d); err != nil {
		return Manifest{}, fmt.Errorf("get manifest: %w", err)
	}
	m, err := s.manifestByDigest(d)
	if err != nil {
		return Manifest{}, fmt.Errorf("get manifest %s: %w", d, err)
	}
	return m, nil
}

func (s *Store) manifestByDigest(d digest.Digest) (Manifest, error) {
	m := Manifest{Digest: d}
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(s.k.manifest(d))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			mt, body, err := decodeManifest(v)
			m.MediaType, m.Body = mt, append([]byte(nil), body...)
			return err
		})
	})
	return m, err
}

// Tags returns the repository's tags in lexical order. A repository that
// holds no manifest and no tag is ErrNotFound.
func (s *Store) Tags(ns, repo string) ([]Tag, error) {
	if err := validateRepo(ns, repo); err != nil {
		return nil, fmt.Errorf("list tags: %w", err)
	}
	var tags []Tag
	known := false
	err := s.db.View(func(txn *badger.Txn) error {
		prefix := s.k.space(spaceTag, ns, repo)
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true})
		defer it.Close()
		for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
			var rec tagRecord
			if err := it.Item().Value(func(v []byte) error { return decodeJSON(v, &rec, "tag") }); err != nil {
				return err
			}
			tags = append(tags, Tag{Name: string(it.Item().Key()[len(prefix):]), Digest: rec.Digest, Resolved: unixTime(rec.Resolved)})
		}
		if len(tags) > 0 {
			known = true
			return nil
		}
		var err error
		known, err = hasPrefix(txn, s.k.space(spaceLink, ns, repo))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list tags of %s: %w", repoName(ns, repo), err)
	}
	if !known {
		return nil, fmt.Errorf("repository %s: %w", repoName(ns, repo), ErrNotFound)
	}
	return tags, nil
}

func hasPrefix(txn *badger.Txn, prefix []byte) (bool, error) {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	it.Seek(prefix)
	return it.ValidForPrefix(prefix), nil
}

// DeleteTag removes a tag; the manifest it pointed at stays.
func (s *Store) DeleteTag(ns, repo, tag string) error {
	if err := validateRepo(ns, repo); err != nil {
		return fmt.Errorf("delete tag: %w", err)
	}
	if err := ValidateTag(tag); err != nil {
		return err
	}
	err := s.update(func(txn *badger.Txn) error {
		ok, err := exists(txn, s.k.tag(ns, repo, tag))
		if err != nil {
			return err
		}
		if !ok {
			return ErrNotFound
		}
		return txn.Delete(s.k.tag(ns, repo, tag))
	})
	if err != nil {
		return fmt.Errorf("delete tag %s:%s: %w", repoName(ns, repo), tag, err)
	}
	return nil
}

// DeleteManifest removes manifest d from the repository, with the tags of
// the repository that point at it and its entry in the referrers index.
// The manifest bytes go when no repository holds them any more. The blobs
// it references stay (they are linked on their own).
func (s *Store) DeleteManifest(ns, repo string, d digest.Digest) error {
	if err := validateRepo(ns, repo); err != nil {
		return fmt.Errorf("delete manifest: %w", err)
	}
	if err := checkDigest(d); err != nil {
		return fmt.Errorf("delete manifest: %w", err)
	}
	var gone bool
	err := s.update(func(txn *badger.Txn) error {
		gone = false
		ok, err := exists(txn, s.k.link(ns, repo, kindManifest, d))
		if err != nil {
			return err
		}
		if !ok {
			return ErrNotFound
		}
		dels := [][]byte{s.k.link(ns, repo, kindManifest, d), s.k.revLink(d, kindManifest, ns, repo)}
		prefix := s.k.space(spaceTag, ns, repo)
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true})
		for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
			var rec tagRecord
			if err := it.Item().Value(func(v []byte) error { return decodeJSON(v, &rec, "tag") }); err != nil {
				it.Close()
				return err
			}
			if rec.Digest == d {
				dels = append(dels, it.Item().KeyCopy(nil))
			}
		}
		it.Close()
		item, err := txn.Get(s.k.manifest(d))
		if err == nil {
			_ = item.Value(func(v []byte) error {
				if _, body, err := decodeManifest(v); err == nil {
					if mi, err := ParseManifest(body); err == nil && mi.Subject != nil {
						dels = append(dels, s.k.referrer(ns, repo, mi.Subject.Digest, d))
					}
				}
				return nil
			})
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		for _, k := range dels {
			if err := txn.Delete(k); err != nil {
				return err
			}
		}
		// The bytes go with the last repository holding them.
		others := s.k.space(spaceRevLink, string(d), string(kindManifest))
		it = txn.NewIterator(badger.IteratorOptions{Prefix: others})
		last := true
		for it.Seek(others); it.ValidForPrefix(others); it.Next() {
			p := s.k.parts(it.Item().Key())
			if len(p) == 4 && (p[2] != ns || p[3] != repo) {
				last = false
				break
			}
		}
		it.Close()
		gone = last
		if last {
			return txn.Delete(s.k.manifest(d))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete manifest %s from %s: %w", d, repoName(ns, repo), err)
	}
	if gone {
		s.changed(d, false)
	}
	return nil
}

// Referrers returns the descriptors of the repository's manifests whose
// subject is subject, in digest order.
func (s *Store) Referrers(ns, repo string, subject digest.Digest) ([]ocispec.Descriptor, error) {
	if err := validateRepo(ns, repo); err != nil {
		return nil, fmt.Errorf("list referrers: %w", err)
	}
	if err := checkDigest(subject); err != nil {
		return nil, fmt.Errorf("list referrers: %w", err)
	}
	var out []ocispec.Descriptor
	err := s.db.View(func(txn *badger.Txn) error {
		prefix := s.k.space(spaceReferrer, ns, repo, string(subject))
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true})
		defer it.Close()
		for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
			var desc ocispec.Descriptor
			if err := it.Item().Value(func(v []byte) error { return decodeJSON(v, &desc, "referrer") }); err != nil {
				return err
			}
			out = append(out, desc)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list referrers of %s in %s: %w", subject, repoName(ns, repo), err)
	}
	return out, nil
}

// repoName formats a repository for messages: "docker.io/library/nginx",
// or the bare name for the hub's own registry.
func repoName(ns, repo string) string {
	if ns == "" {
		return repo
	}
	return ns + "/" + repo
}

func (s *Store) checkOpen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	return nil
}
