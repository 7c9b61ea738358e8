package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"
	"sync/atomic"

	"github.com/opencontainers/go-digest"
)

// Reader reads one blob, stored or still being written. It implements
// io.ReadSeekCloser and io.ReaderAt, so an HTTP handler can serve ranges of
// it. While a Reader is open its blob is never evicted.
//
// A Reader that follows a write in progress blocks for bytes not written
// yet, until they arrive, the write is aborted (the read fails with
// ErrAborted) or the context given to Open is done. Bytes served before an
// abort were not verified: a server streaming them must abort its response
// so the client does not take them for a whole blob. The last byte of the
// blob is returned only once the write is committed, so a follower never
// reads a whole blob that fails verification.
type Reader struct {
	s   *Store
	d   digest.Digest
	f   *os.File
	ctx context.Context
	w   *write // nil for a stored blob
	// size and marks of a stored blob
	size  int64
	marks []byte

	mu     sync.Mutex // guards off
	off    int64
	closed atomic.Bool
}

var (
	_ io.ReadSeekCloser = (*Reader)(nil)
	_ io.ReaderAt       = (*Reader)(nil)
)

// Open returns a Reader for blob d: the stored file, or, while a write of d
// is in progress on this node, a Reader that follows it. ctx bounds the
// waits of a follower. A blob that is not here is ErrNotFound (a miss);
// a record whose file has gone is repaired and reported the same way.
func (s *Store) Open(ctx context.Context, d digest.Digest) (*Reader, error) {
	if err := checkDigest(d); err != nil {
		return nil, fmt.Errorf("open blob: %w", err)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	rec, ok, err := s.blobRecordOf(d)
	if err != nil {
		s.mu.Unlock()
		return nil, fmt.Errorf("open blob %s: %w", d, err)
	}
	if ok {
		f, err := os.Open(s.blobPath(d))
		if err == nil {
			var fi os.FileInfo
			if fi, err = f.Stat(); err == nil && fi.Size() != rec.Size {
				err = fmt.Errorf("file is %d bytes, record says %d: %w", fi.Size(), rec.Size, fs.ErrNotExist)
			}
			if err != nil {
				f.Close()
			}
		}
		if errors.Is(err, fs.ErrNotExist) {
			s.repairLocked(d, rec)
		} else if err != nil {
			s.mu.Unlock()
			return nil, fmt.Errorf("open blob %s: %w", d, err)
		} else {
			s.readers[d]++
			s.mu.Unlock()
			s.blobHits.Add(1)
			s.touch(d)
			return &Reader{s: s, d: d, f: f, ctx: ctx, size: rec.Size, marks: rec.Marks}, nil
		}
	}
	if w, ok := s.writes[d]; ok {
		f, err := os.Open(w.path)
		if err != nil {
			s.mu.Unlock()
			return nil, fmt.Errorf("open blob %s: follow the write in progress: %w", d, err)
		}
		s.readers[d]++
		s.mu.Unlock()
		s.blobHits.Add(1)
		return &Reader{s: s, d: d, f: f, ctx: ctx, w: w, size: -1}, nil
	}
	s.mu.Unlock()
	s.blobMisses.Add(1)
	return nil, fmt.Errorf("open blob %s: %w", d, ErrNotFound)
}

// Digest returns the blob's digest.
func (r *Reader) Digest() digest.Digest { return r.d }

// Size returns the blob's size in bytes, or -1 while it is being written
// and its size has not been announced.
func (r *Reader) Size() int64 {
	if r.w == nil {
		return r.size
	}
	return r.w.snapshot().size
}

// Marks returns a stored blob's marks (marks.go), nil for a blob still
// being written or stored without them (shorter than MarkInterval, or
// stored by an older version).
func (r *Reader) Marks() []byte { return r.marks }

// InProgress reports whether the blob is still being written.
func (r *Reader) InProgress() bool {
	if r.w == nil {
		return false
	}
	return !r.w.snapshot().done
}

// ReadAt reads len(p) bytes at off, waiting for them while the blob is
// being written; it returns io.EOF with fewer bytes only at the end of the
// blob. It is safe for concurrent use.
func (r *Reader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read blob %s: negative offset %d", r.d, off)
	}
	if r.w == nil {
		return r.f.ReadAt(p, off)
	}
	read := 0
	for read < len(p) {
		k, err := r.readAvailable(p[read:], off+int64(read))
		read += k
		if err != nil {
			return read, err
		}
	}
	return read, nil
}

// Read reads from the current offset: what is available now, waiting only
// when nothing is.
// Like any io.Reader, it is not for concurrent use.
func (r *Reader) Read(p []byte) (int, error) {
	if r.closed.Load() {
		return 0, fs.ErrClosed
	}
	r.mu.Lock()
	off := r.off
	r.mu.Unlock()
	var k int
	var err error
	if r.w == nil {
		k, err = r.f.ReadAt(p, off)
		if err == io.EOF && k > 0 {
			err = nil
		}
	} else {
		k, err = r.readAvailable(p, off)
	}
	r.mu.Lock()
	r.off = off + int64(k)
	r.mu.Unlock()
	return k, err
}

// readAvailable reads at most len(p) bytes at off from a write in
// progress, waiting until at least one byte is there, the end is reached
// or the write fails.
func (r *Reader) readAvailable(p []byte, off int64) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		st := r.w.snapshot()
		if st.done && st.err != nil {
			return 0, fmt.Errorf("read blob %s: %w", r.d, st.err)
		}
		if st.size >= 0 && off >= st.size {
			return 0, io.EOF
		}
		// The last byte of a blob of known size is held back until the
		// write is committed (verified): a follower that reads to the end
		// never holds a whole blob that later fails its digest.
		avail := st.n
		if !st.done && st.size >= 0 && avail >= st.size {
			avail = st.size - 1
		}
		if !st.done && st.hold {
			avail = min(avail, st.verified)
		}
		if avail > off {
			want := min(int64(len(p)), avail-off)
			k, rerr := r.f.ReadAt(p[:want], off)
			if rerr == io.EOF && k > 0 {
				rerr = nil
			}
			return k, rerr
		}
		select {
		case <-st.changed:
		case <-r.ctx.Done():
			return 0, fmt.Errorf("read blob %s: waiting for the write in progress: %w", r.d, r.ctx.Err())
		}
	}
}

// Seek sets the offset of the next Read. Seeking relative to the end
// waits for the size of a blob in progress to be known.
func (r *Reader) Seek(offset int64, whence int) (int64, error) {
	var base int64
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		r.mu.Lock()
		base = r.off
		r.mu.Unlock()
	case io.SeekEnd:
		size, err := r.waitSize()
		if err != nil {
			return 0, err
		}
		base = size
	default:
		return 0, fmt.Errorf("seek blob %s: invalid whence %d", r.d, whence)
	}
	if base+offset < 0 {
		return 0, fmt.Errorf("seek blob %s: negative position %d", r.d, base+offset)
	}
	r.mu.Lock()
	r.off = base + offset
	r.mu.Unlock()
	return base + offset, nil
}

// waitSize returns the blob's size, waiting for a write in progress to
// announce it or finish.
func (r *Reader) waitSize() (int64, error) {
	if r.w == nil {
		return r.size, nil
	}
	for {
		st := r.w.snapshot()
		if st.done && st.err != nil {
			return 0, fmt.Errorf("blob %s: %w", r.d, st.err)
		}
		if st.size >= 0 {
			return st.size, nil
		}
		select {
		case <-st.changed:
		case <-r.ctx.Done():
			return 0, fmt.Errorf("blob %s: waiting for its size: %w", r.d, r.ctx.Err())
		}
	}
}

// Wait blocks until a blob being written is committed (nil) or aborted
// (the abort error); for a stored blob it returns nil at once.
func (r *Reader) Wait(ctx context.Context) error {
	if r.w == nil {
		return nil
	}
	for {
		st := r.w.snapshot()
		if st.done {
			return st.err
		}
		select {
		case <-st.changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Close releases the Reader; the blob may be evicted once no Reader is
// open.
func (r *Reader) Close() error {
	if r.closed.Swap(true) {
		return nil
	}
	r.s.mu.Lock()
	if r.s.readers[r.d]--; r.s.readers[r.d] <= 0 {
		delete(r.s.readers, r.d)
	}
	r.s.mu.Unlock()
	return r.f.Close()
}
