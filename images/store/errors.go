package store

import "errors"

// Sentinel errors; test with errors.Is, the returned errors wrap them with
// the operation and the digest or name concerned.
var (
	// ErrNotFound means the blob, manifest, tag or link is not in the
	// store. A metadata record whose file has gone is reported (and
	// repaired) as ErrNotFound too.
	ErrNotFound = errors.New("not found in the image store")
	// ErrExists is Begin's answer when the blob is already stored: Open it.
	ErrExists = errors.New("blob already stored")
	// ErrInProgress is Begin's answer when another caller is writing the
	// blob on this node: Open it to follow that write as it arrives.
	ErrInProgress = errors.New("blob write already in progress")
	// ErrDigestMismatch means the bytes written do not hash to the digest
	// they were announced as; the write has been dropped.
	ErrDigestMismatch = errors.New("content does not match its digest")
	// ErrMarkMismatch means bytes written under Verify do not match the
	// source's mark at the end of their interval: they were dropped and
	// the Writer goes on from its Offset with the next source.
	ErrMarkMismatch = errors.New("content does not match its source's marks")
	// ErrRewound comes with ErrDigestMismatch from a Commit under Verify
	// that dropped only the bytes after the last good mark: the Writer
	// goes on from its Offset with the next source.
	ErrRewound = errors.New("the bytes after the last good mark were dropped")
	// ErrSizeMismatch means the bytes written are more or fewer than the
	// announced size; the write has been dropped (or, for a Write past the
	// size, refused).
	ErrSizeMismatch = errors.New("content does not match its size")
	// ErrInvalidDigest means a digest string is malformed: it must be
	// "<algorithm>:<lowercase hex>" with the algorithm's length.
	ErrInvalidDigest = errors.New("invalid digest")
	// ErrUnsupportedDigest means the digest uses an algorithm other than
	// sha256 or sha512.
	ErrUnsupportedDigest = errors.New("unsupported digest algorithm (sha256 and sha512 are accepted)")
	// ErrInvalidName means a namespace, repository name or tag does not
	// follow the OCI distribution grammar.
	ErrInvalidName = errors.New("invalid name")
	// ErrInvalidManifest means a manifest body is not a JSON object of a
	// known manifest media type, or is larger than MaxManifestSize.
	ErrInvalidManifest = errors.New("invalid manifest")
	// ErrAborted is what a follower reads when the write it follows was
	// aborted (source gone, digest mismatch, store closed); the cause is
	// wrapped beside it.
	ErrAborted = errors.New("blob write aborted")
	// ErrClosed is returned by every call after Close, and read by
	// followers of writes that Close aborted.
	ErrClosed = errors.New("image store closed")
	// ErrWriterDone is returned by Write, Commit and CommitAs on a Writer
	// that has already been committed or aborted.
	ErrWriterDone = errors.New("blob writer already committed or aborted")
)
