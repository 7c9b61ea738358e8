package store

import (
	"bytes"
	"crypto/sha256"
	"encoding"
	"encoding/base64"
	"fmt"
	"hash"
	"strconv"
	"strings"
)

// Marks are checkpoints of a blob's digest computation: at every
// MarkInterval bytes, the first markLen bytes of the SHA-256 of the
// digest's hash state there (its encoding.BinaryMarshaler form). A Writer
// computes them as it hashes and the store records them when the blob is
// committed, that is once its bytes are verified. A node that fetches the
// blob from a site peer checks each interval against the peer's marks as
// it arrives and lets its clients read it at once, instead of holding the
// whole blob back until the digest can be checked at the end (Verify).
//
// A mark matching means the bytes up to it are the ones the peer verified
// at its commit, so a copy that rotted on the peer's disk is caught at the
// first mark after the damage. The digest is still checked at the end: a
// peer that lies about its marks gets no further than it would without
// them.
const (
	// MarkInterval is the spacing of a blob's marks in bytes: a peer's
	// bytes reach clients at most this far behind the wire.
	MarkInterval = 8 << 20
	// markLen is the length of one mark.
	markLen = 16
)

// marker is a hash whose state can be marked (crypto/sha256 and sha512).
type marker interface {
	hash.Hash
	encoding.BinaryMarshaler
	encoding.BinaryUnmarshaler
}

// markOf returns the mark of h's state and the state itself.
func markOf(h marker) (mark, state []byte, err error) {
	state, err = h.MarshalBinary()
	if err != nil {
		return nil, nil, err
	}
	sum := sha256.Sum256(state)
	return sum[:markLen], state, nil
}

// EncodeMarks formats marks for the Outpost-Blob-Marks response header:
// the interval, a colon, then the marks in unpadded base64.
func EncodeMarks(marks []byte) string {
	return strconv.Itoa(MarkInterval) + ":" + base64.RawStdEncoding.EncodeToString(marks)
}

// ParseMarks reads an Outpost-Blob-Marks header value. Marks of another
// interval, or malformed ones, are an error: the caller then holds the
// peer's bytes until the digest is checked, as without marks.
func ParseMarks(v string) ([]byte, error) {
	iv, enc, ok := strings.Cut(v, ":")
	if !ok {
		return nil, fmt.Errorf("blob marks %.40q: want <interval>:<base64>", v)
	}
	if iv != strconv.Itoa(MarkInterval) {
		return nil, fmt.Errorf("blob marks at every %s bytes, this node checks every %d", iv, MarkInterval)
	}
	marks, err := base64.RawStdEncoding.DecodeString(enc)
	if err != nil {
		return nil, fmt.Errorf("blob marks: %w", err)
	}
	if len(marks)%markLen != 0 {
		return nil, fmt.Errorf("blob marks: %d bytes is not a whole number of %d-byte marks", len(marks), markLen)
	}
	return marks, nil
}

// checkMark compares the mark just computed at offset end with the
// expected one. It reports whether there was one to compare with.
func checkMark(expect []byte, end int64, mark []byte) (known, ok bool) {
	i := int(end/MarkInterval) - 1
	if i < 0 || (i+1)*markLen > len(expect) {
		return false, false
	}
	return true, bytes.Equal(expect[i*markLen:(i+1)*markLen], mark)
}
