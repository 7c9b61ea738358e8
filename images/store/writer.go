package store

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/dgraph-io/badger/v4"
	"github.com/opencontainers/go-digest"
)

// write is the state of one write in progress that its followers watch.
type write struct {
	s    *Store
	d    digest.Digest // "" for an upload until CommitAs
	path string        // the temporary file in Dir/ingest

	mu       sync.Mutex
	n        int64 // bytes written and readable by followers
	size     int64 // announced size, -1 while unknown
	done     bool
	hold     bool          // followers read only up to verified until the commit
	verified int64         // bytes known good before the commit (Verify's marks)
	err      error         // after done: nil when committed, else why it was aborted
	changed  chan struct{} // closed (and replaced) on every change above
}

func (w *write) notifyLocked() {
	close(w.changed)
	w.changed = make(chan struct{})
}

// progress is a snapshot of a write for its followers.
type progress struct {
	n, size  int64
	verified int64
	done     bool
	hold     bool
	err      error
	changed  <-chan struct{} // closed at the next change
}

// snapshot returns the published state.
func (w *write) snapshot() progress {
	w.mu.Lock()
	defer w.mu.Unlock()
	return progress{n: w.n, size: w.size, verified: w.verified, done: w.done, hold: w.hold, err: w.err, changed: w.changed}
}

func (w *write) finish(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return
	}
	w.done, w.err = true, err
	if err == nil {
		w.size = w.n
	}
	w.notifyLocked()
}

// abortFromStore is Close's abort: it removes the temporary file and wakes
// the followers; the Writer's own calls then fail with ErrWriterDone or the
// write error.
func (w *write) abortFromStore(cause error) {
	w.s.mu.Lock()
	w.s.forgetLocked(w)
	_ = os.Remove(w.path)
	w.s.mu.Unlock()
	w.finish(fmt.Errorf("%w: %w", ErrAborted, cause))
}

// forgetLocked removes w from the single-flight tables. s.mu must be held.
func (s *Store) forgetLocked(w *write) {
	if w.d != "" && s.writes[w.d] == w {
		delete(s.writes, w.d)
	}
	delete(s.uploads, w)
}

// Writer writes one blob. It hashes every byte as it is written and makes
// the blob visible only when Commit (or CommitAs) finds the digest and size
// right. A Writer is used by one goroutine; any number of Readers may
// follow it (Open) meanwhile.
//
// When a source breaks mid-blob, keep the Writer: the bytes so far stay,
// and the next source is asked for the range from Offset onwards. When no
// source is left, Abort it.
type Writer struct {
	s      *Store
	w      *write
	f      *os.File
	h      hash.Hash // the digest's algorithm; sha256 for uploads
	over   bool
	queued int64 // bytes whose writeback to disk has been started

	// Marks (marks.go): mh is h when its state can be marked, else nil;
	// marks are this write's so far; expect the ones a source gave
	// (Verify); good the last offset whose mark matched expect, and
	// goodState h's state there; rewoundAt the good of the last rewind
	// after a failed commit (-1: none).
	mh        marker
	marks     []byte
	expect    []byte
	good      int64
	goodState []byte
	rewoundAt int64
}

// writebackStep is how many written bytes gather before their writeback
// to disk is started (startWriteback).
const writebackStep = 32 << 20

// Begin starts the write of blob d, whose size is size bytes (-1 when not
// known yet; see SetSize). Only one write of a digest runs at a time on a
// node: when d is already stored Begin returns ErrExists, and when another
// caller is writing it, ErrInProgress; in both cases Open gives a Reader
// (following the other write as it arrives, in the second case).
//
// With a quota, Begin first evicts to make room for size bytes.
func (s *Store) Begin(d digest.Digest, size int64) (*Writer, error) {
	if err := checkDigest(d); err != nil {
		return nil, fmt.Errorf("begin blob: %w", err)
	}
	if size < -1 {
		return nil, fmt.Errorf("begin blob %s: size %d must be -1 (unknown) or at least 0", d, size)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if _, ok := s.writes[d]; ok {
		return nil, fmt.Errorf("begin blob %s: %w", d, ErrInProgress)
	}
	rec, ok, err := s.blobRecordOf(d)
	if err != nil {
		return nil, fmt.Errorf("begin blob %s: %w", d, err)
	}
	if ok {
		if _, err := os.Stat(s.blobPath(d)); err == nil {
			return nil, fmt.Errorf("begin blob %s: %w", d, ErrExists)
		}
		s.repairLocked(d, rec)
	}
	if size > 0 {
		if _, err := s.evictLocked(size); err != nil {
			s.log.Warn("evict before a write", "digest", d, "err", err)
		}
	}
	wr, err := s.newWriterLocked(d, size)
	if err != nil {
		return nil, err
	}
	s.writes[d] = wr.w
	return wr, nil
}

// BeginUpload starts a write whose digest is known only at the end (a
// registry push): it hashes with sha256 as it goes and takes the digest in
// CommitAs. Uploads are not single flight and have no followers.
func (s *Store) BeginUpload() (*Writer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	wr, err := s.newWriterLocked("", -1)
	if err != nil {
		return nil, err
	}
	s.uploads[wr.w] = struct{}{}
	return wr, nil
}

func (s *Store) newWriterLocked(d digest.Digest, size int64) (*Writer, error) {
	f, err := os.CreateTemp(s.ingestDir, "blob-*")
	if err != nil {
		return nil, fmt.Errorf("begin blob %s: create temporary file: %w", d, err)
	}
	h := sha256.New()
	if d != "" {
		h = d.Algorithm().Hash()
	}
	w := &write{s: s, d: d, path: f.Name(), size: size, changed: make(chan struct{})}
	mh, _ := h.(marker)
	return &Writer{s: s, w: w, f: f, h: h, mh: mh, rewoundAt: -1}, nil
}

// HoldUntilCommit makes followers read no further than the bytes known
// good (none, without Verify) until the write is committed: for bytes
// from a source less trusted than the tiers above (a peer's copy may have
// rotted on its disk), so that a copy that fails verification reaches no
// client and a follower can go on with the next write of the blob.
func (wr *Writer) HoldUntilCommit() {
	wr.w.mu.Lock()
	defer wr.w.mu.Unlock()
	wr.w.hold = true
}

// Verify holds the write as HoldUntilCommit does, but checks the bytes at
// every mark against marks, the ones the source recorded when it
// committed the blob (ParseMarks): followers read each interval as soon as
// its mark matches. At a mark that does not match, Write drops the bytes
// written since the last one that did and fails with ErrMarkMismatch; the
// Writer stays usable from Offset, for the next source. Marks given by an
// earlier source are kept.
func (wr *Writer) Verify(marks []byte) {
	wr.HoldUntilCommit()
	if wr.expect == nil && wr.mh != nil && len(marks) > 0 {
		wr.expect = marks
	}
}

// Digest returns the digest the Writer was begun with ("" for an upload).
func (wr *Writer) Digest() digest.Digest { return wr.w.d }

// Offset returns how many bytes have been written: a resumed fetch asks
// its next source for the range starting here.
func (wr *Writer) Offset() int64 {
	wr.w.mu.Lock()
	defer wr.w.mu.Unlock()
	return wr.w.n
}

// Size returns the announced size, -1 while unknown.
func (wr *Writer) Size() int64 {
	wr.w.mu.Lock()
	defer wr.w.mu.Unlock()
	return wr.w.size
}

// SetSize announces the size once known (an upstream's Content-Length
// after a Begin with -1), so followers can report it. It fails if a size
// was announced already and differs, or if more bytes have been written.
func (wr *Writer) SetSize(size int64) error {
	wr.w.mu.Lock()
	defer wr.w.mu.Unlock()
	switch {
	case wr.over:
		return ErrWriterDone
	case wr.w.done:
		return wr.w.err
	case size < 0:
		return fmt.Errorf("set size of %s: %d must be at least 0", wr.w.d, size)
	case wr.w.size >= 0 && wr.w.size != size:
		return fmt.Errorf("set size of %s to %d: announced as %d: %w", wr.w.d, size, wr.w.size, ErrSizeMismatch)
	case wr.w.n > size:
		return fmt.Errorf("set size of %s to %d: %d bytes already written: %w", wr.w.d, size, wr.w.n, ErrSizeMismatch)
	}
	if wr.w.size != size {
		wr.w.size = size
		wr.w.notifyLocked()
	}
	return nil
}

// state reports whether the Writer can still be used: ErrWriterDone after
// its own Commit or Abort, the abort error after the store's Close.
func (wr *Writer) state() (n, size int64, err error) {
	if wr.over {
		return 0, 0, ErrWriterDone
	}
	wr.w.mu.Lock()
	defer wr.w.mu.Unlock()
	if wr.w.done {
		return 0, 0, wr.w.err
	}
	return wr.w.n, wr.w.size, nil
}

// Write appends p. A write that would go past the announced size is
// refused whole with ErrSizeMismatch. Followers see the bytes as soon as
// Write returns (a held write: once a mark vouches for them).
func (wr *Writer) Write(p []byte) (int, error) {
	n, size, err := wr.state()
	if err != nil {
		return 0, err
	}
	if size >= 0 && n+int64(len(p)) > size {
		return 0, fmt.Errorf("write blob %s: %d bytes past its size %d: %w", wr.w.d, n+int64(len(p))-size, size, ErrSizeMismatch)
	}
	written := 0
	for len(p) > 0 {
		part := p
		if wr.mh != nil {
			if next := (n/MarkInterval + 1) * MarkInterval; int64(len(part)) > next-n {
				part = part[:next-n]
			}
		}
		k, werr := wr.f.Write(part)
		wr.h.Write(part[:k])
		n += int64(k)
		written += k
		p = p[k:]
		var merr error
		if k > 0 && wr.mh != nil && n%MarkInterval == 0 {
			merr = wr.mark(n)
		}
		if merr == nil && k > 0 {
			wr.w.mu.Lock()
			wr.w.n = n
			wr.w.verified = wr.good
			wr.w.notifyLocked()
			wr.w.mu.Unlock()
			if n-wr.queued >= writebackStep {
				startWriteback(wr.f, wr.queued, n-wr.queued)
				wr.queued = n
			}
		}
		if werr != nil {
			return written, fmt.Errorf("write blob %s: %w", wr.w.d, werr)
		}
		if merr != nil {
			return written, merr
		}
	}
	return written, nil
}

// mark records the mark at offset end (a multiple of MarkInterval) and
// checks it against the source's. On a mismatch it rewinds to the last
// good mark.
func (wr *Writer) mark(end int64) error {
	m, state, err := markOf(wr.mh)
	if err != nil { // not expected of crypto/sha256 and sha512: go on unmarked
		wr.mh, wr.marks, wr.expect = nil, nil, nil
		return nil
	}
	wr.marks = append(wr.marks, m...)
	known, ok := checkMark(wr.expect, end, m)
	switch {
	case !known:
		return nil
	case ok:
		wr.good, wr.goodState = end, state
		return nil
	}
	from := wr.good
	if err := wr.rewind(); err != nil {
		return err
	}
	return fmt.Errorf("write blob %s: bytes %d-%d do not match their source's mark; dropped, write on from %d: %w", wr.w.d, from, end, from, ErrMarkMismatch)
}

// rewind drops the bytes after the last good mark: the file, the hash
// and the marks go back there. Followers of a held write never read past
// it. On failure the write is aborted.
func (wr *Writer) rewind() error {
	to := wr.good
	err := wr.f.Truncate(to)
	if err == nil {
		_, err = wr.f.Seek(to, io.SeekStart)
	}
	if err == nil {
		if to == 0 {
			wr.h.Reset()
		} else {
			err = wr.mh.UnmarshalBinary(wr.goodState)
		}
	}
	if err != nil {
		err = fmt.Errorf("write blob %s: drop the bytes after %d: %w", wr.w.d, to, err)
		wr.Abort(err)
		return err
	}
	wr.marks = wr.marks[:to/MarkInterval*markLen]
	wr.queued = min(wr.queued, to)
	wr.w.mu.Lock()
	wr.w.n, wr.w.verified = to, to
	wr.w.notifyLocked()
	wr.w.mu.Unlock()
	return nil
}

// Commit verifies the digest (and the size, when announced), then makes the
// blob visible: fsync, rename into place, fsync of the directory, then the
// record. On a mismatch the write is dropped and ErrDigestMismatch (or
// ErrSizeMismatch) returned; followers read the same error. If the blob was
// stored meanwhile by another path (a push), the copy is discarded and
// Commit succeeds.
func (wr *Writer) Commit() error {
	if wr.w.d == "" {
		return errors.New("commit upload: an upload has no digest yet: use CommitAs")
	}
	return wr.commit(wr.w.d, digest.NewDigest(wr.w.d.Algorithm(), wr.h))
}

// CommitAs commits an upload as digest d (sha256 or sha512); the bytes must
// hash to d. For a Writer begun with Begin, d must be its digest.
func (wr *Writer) CommitAs(d digest.Digest) error {
	if err := checkDigest(d); err != nil {
		wr.Abort(err)
		return fmt.Errorf("commit upload: %w", err)
	}
	if wr.w.d != "" {
		if d != wr.w.d {
			return fmt.Errorf("commit blob %s as %s: a Writer begun for one digest commits only as it", wr.w.d, d)
		}
		return wr.Commit()
	}
	if d.Algorithm() == "sha256" {
		return wr.commit(d, digest.NewDigest(d.Algorithm(), wr.h))
	}
	// Another algorithm: hash the file again (the marks were sha256's).
	wr.mh, wr.marks = nil, nil
	h := d.Algorithm().Hash()
	if _, err := wr.f.Seek(0, io.SeekStart); err != nil {
		wr.Abort(err)
		return fmt.Errorf("commit upload %s: %w", d, err)
	}
	if _, err := io.Copy(h, wr.f); err != nil {
		wr.Abort(err)
		return fmt.Errorf("commit upload %s: %w", d, err)
	}
	return wr.commit(d, digest.NewDigest(d.Algorithm(), h))
}

func (wr *Writer) commit(d, got digest.Digest) error {
	n, size, err := wr.state()
	if err != nil {
		if !wr.over {
			wr.over = true
			_ = wr.f.Close()
		}
		return err
	}
	if size >= 0 && n != size {
		err := fmt.Errorf("commit blob %s: wrote %d of %d bytes: %w", d, n, size, ErrSizeMismatch)
		wr.Abort(err)
		return err
	}
	if got != d {
		err := fmt.Errorf("commit blob %s: the %d bytes written hash to %s: %w", d, n, got, ErrDigestMismatch)
		if wr.expect != nil && wr.good < n && wr.rewoundAt != wr.good {
			// The bytes up to the last good mark are the source's
			// verified ones: only the rest goes (once; a second failure
			// from the same mark means the marks are wrong).
			wr.rewoundAt = wr.good
			if rerr := wr.rewind(); rerr != nil {
				return rerr
			}
			return fmt.Errorf("%w; the bytes after %d are dropped: %w", err, wr.good, ErrRewound)
		}
		wr.Abort(err)
		return err
	}
	if err := wr.f.Sync(); err != nil {
		wr.Abort(err)
		return fmt.Errorf("commit blob %s: sync: %w", d, err)
	}
	if err := wr.f.Close(); err != nil {
		wr.Abort(err)
		return fmt.Errorf("commit blob %s: close: %w", d, err)
	}
	wr.over = true

	s := wr.s
	s.mu.Lock()
	var marks []byte
	if wr.mh != nil && int64(len(wr.marks)) == n/MarkInterval*markLen {
		marks = wr.marks
	}
	err = s.placeLocked(wr.w, d, n, marks)
	s.forgetLocked(wr.w)
	if err != nil {
		_ = os.Remove(wr.w.path)
		s.mu.Unlock()
		wr.w.finish(fmt.Errorf("%w: %w", ErrAborted, err))
		return err
	}
	if s.quota > 0 && s.bytes > s.quota {
		if _, err := s.evictLocked(0); err != nil {
			s.log.Warn("evict after a write", "digest", d, "err", err)
		}
	}
	s.mu.Unlock()
	wr.w.finish(nil)
	return nil
}

// placeLocked renames a verified temporary file into place and records it
// with its marks.
// s.mu must be held.
func (s *Store) placeLocked(w *write, d digest.Digest, n int64, marks []byte) error {
	if s.closed {
		return ErrClosed
	}
	_, ok, err := s.blobRecordOf(d)
	if err != nil {
		return fmt.Errorf("commit blob %s: %w", d, err)
	}
	final := s.blobPath(d)
	if ok {
		if _, err := os.Stat(final); err == nil {
			// Stored meanwhile (dedup): keep the copy in place.
			return os.Remove(w.path)
		}
	}
	dir := filepath.Dir(final)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("commit blob %s: %w", d, err)
	}
	if err := os.Rename(w.path, final); err != nil {
		return fmt.Errorf("commit blob %s: rename into place: %w", d, err)
	}
	if err := syncDir(dir); err != nil {
		_ = os.Remove(final)
		return fmt.Errorf("commit blob %s: sync directory: %w", d, err)
	}
	now := s.now()
	err = s.update(func(txn *badger.Txn) error {
		if err := txn.Set(s.k.blob(d), encodeJSON(blobRecord{Size: n, Stored: now.UnixNano(), Marks: marks})); err != nil {
			return err
		}
		return txn.Set(s.k.access(d), encodeTime(now))
	})
	if err != nil {
		_ = os.Remove(final)
		return fmt.Errorf("commit blob %s: record: %w", d, err)
	}
	if !ok {
		s.bytes += n
		s.count++
	}
	s.changed(d, true)
	return nil
}

// Abort drops the write: the temporary file is removed and followers read
// ErrAborted wrapping cause. Abort after Commit does nothing.
func (wr *Writer) Abort(cause error) {
	if wr.over {
		return
	}
	wr.over = true
	_ = wr.f.Close()
	if cause == nil {
		cause = errors.New("aborted by its writer")
	}
	wr.s.mu.Lock()
	wr.s.forgetLocked(wr.w)
	_ = os.Remove(wr.w.path)
	wr.s.mu.Unlock()
	wr.w.finish(fmt.Errorf("%w: %w", ErrAborted, cause))
}
