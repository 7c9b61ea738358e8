package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/opencontainers/go-digest"
)

// Badger keys, all under Config.Prefix (P below). Names and digests never
// contain a NUL byte (the grammars forbid it), so NUL separates the parts.
//
//	P b <digest>                              → blobRecord: a verified file exists
//	P a <digest>                              → last access, unix nanoseconds
//	P m <digest>                              → manifest: media type and bytes as pulled
//	P t <ns> 0 <repo> 0 <tag>                 → tagRecord: digest last resolved, and when
//	P l <ns> 0 <repo> 0 <kind> 0 <digest>     → link: repository holds the blob/manifest
//	P L <digest> 0 <kind> 0 <ns> 0 <repo>     → the same link, indexed by digest
//	P r <ns> 0 <repo> 0 <subject> 0 <digest>  → referrer descriptor (JSON)
//	P p <ns> 0 <repo> 0 <reference>           → pinRecord
//	P c <ns> 0 <repo>                         → pullRecord: pull count, last pull
//
// kind is 'b' (blob) or 'm' (manifest).
const (
	spaceBlob     = 'b'
	spaceAccess   = 'a'
	spaceManifest = 'm'
	spaceTag      = 't'
	spaceLink     = 'l'
	spaceRevLink  = 'L'
	spaceReferrer = 'r'
	spacePin      = 'p'
	spacePulls    = 'c'

	kindBlob     = 'b'
	kindManifest = 'm'
)

type keys struct{ prefix []byte }

func (k keys) make(space byte, parts ...string) []byte {
	n := len(k.prefix) + 1
	for _, p := range parts {
		n += len(p) + 1
	}
	b := make([]byte, 0, n)
	b = append(b, k.prefix...)
	b = append(b, space)
	for i, p := range parts {
		if i > 0 {
			b = append(b, 0)
		}
		b = append(b, p...)
	}
	return b
}

// space returns the prefix of every key in a space, with the given
// leading parts and a trailing separator when parts are given.
func (k keys) space(space byte, parts ...string) []byte {
	b := k.make(space, parts...)
	if len(parts) > 0 {
		b = append(b, 0)
	}
	return b
}

// parts splits a key of a space back into its parts.
func (k keys) parts(key []byte) []string {
	rest := key[len(k.prefix)+1:]
	var out []string
	for _, p := range bytes.Split(rest, []byte{0}) {
		out = append(out, string(p))
	}
	return out
}

func (k keys) blob(d digest.Digest) []byte   { return k.make(spaceBlob, string(d)) }
func (k keys) access(d digest.Digest) []byte { return k.make(spaceAccess, string(d)) }
func (k keys) manifest(d digest.Digest) []byte {
	return k.make(spaceManifest, string(d))
}
func (k keys) tag(ns, repo, tag string) []byte { return k.make(spaceTag, ns, repo, tag) }
func (k keys) link(ns, repo string, kind byte, d digest.Digest) []byte {
	return k.make(spaceLink, ns, repo, string(kind), string(d))
}
func (k keys) revLink(d digest.Digest, kind byte, ns, repo string) []byte {
	return k.make(spaceRevLink, string(d), string(kind), ns, repo)
}
func (k keys) referrer(ns, repo string, subject, d digest.Digest) []byte {
	return k.make(spaceReferrer, ns, repo, string(subject), string(d))
}
func (k keys) pin(ns, repo, ref string) []byte { return k.make(spacePin, ns, repo, ref) }
func (k keys) pulls(ns, repo string) []byte    { return k.make(spacePulls, ns, repo) }

// blobRecord is the value of a blob key. Its presence means a verified file
// of that size was renamed into place before the record was written.
type blobRecord struct {
	Size   int64  `json:"size"`
	Stored int64  `json:"stored"`          // unix nanoseconds
	Marks  []byte `json:"marks,omitempty"` // marks.go
}

type tagRecord struct {
	Digest   digest.Digest `json:"digest"`
	Resolved int64         `json:"resolved"` // unix nanoseconds
}

type linkRecord struct {
	Linked int64 `json:"linked"`
}

type pinRecord struct {
	Pinned int64 `json:"pinned"`
}

type pullRecord struct {
	Pulls uint64 `json:"pulls"`
	Last  int64  `json:"last"`
}

func encodeJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		// Only the plain structs above are encoded; they always marshal.
		return nil
	}
	return b
}

func decodeJSON(b []byte, v any, what string) error {
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decode %s record: %w", what, err)
	}
	return nil
}

func encodeTime(t time.Time) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, uint64(t.UnixNano()))
	return b
}

func decodeTime(b []byte) time.Time {
	if len(b) != 8 {
		return time.Time{}
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(b)))
}

func unixTime(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// A manifest value is one version byte, the media type's length as a
// uvarint, the media type, and the manifest bytes exactly as received.
func encodeManifest(mediaType string, body []byte) []byte {
	b := make([]byte, 0, 1+binary.MaxVarintLen64+len(mediaType)+len(body))
	b = append(b, 1)
	b = binary.AppendUvarint(b, uint64(len(mediaType)))
	b = append(b, mediaType...)
	return append(b, body...)
}

var errBadManifestRecord = errors.New("decode manifest record: corrupt value")

func decodeManifest(v []byte) (mediaType string, body []byte, err error) {
	if len(v) < 2 || v[0] != 1 {
		return "", nil, errBadManifestRecord
	}
	n, w := binary.Uvarint(v[1:])
	if w <= 0 || uint64(len(v)-1-w) < n {
		return "", nil, errBadManifestRecord
	}
	start := 1 + w
	return string(v[start : start+int(n)]), v[start+int(n):], nil
}
