package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

func TestCommitVerifiesDigestAndSize(t *testing.T) {
	t.Parallel()
	content := []byte("hello, outpost")
	d := digest.FromBytes(content)
	tests := []struct {
		name    string
		size    int64
		write   []byte
		wantErr error
	}{
		{name: "match", size: int64(len(content)), write: content},
		{name: "match, size unknown", size: -1, write: content},
		{name: "one byte changed", size: int64(len(content)), write: []byte("hello, Outpost"), wantErr: ErrDigestMismatch},
		{name: "changed, size unknown", size: -1, write: []byte("hello"), wantErr: ErrDigestMismatch},
		{name: "short", size: int64(len(content)), write: content[:5], wantErr: ErrSizeMismatch},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, nil)
			w, err := f.Begin(d, tc.size)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Write(tc.write); err != nil {
				t.Fatal(err)
			}
			err = w.Commit()
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("Commit: %v, want %v", err, tc.wantErr)
			}
			if tc.wantErr != nil {
				f.mustLeaveNothing(d)
				// The digest can be written again, correctly.
				f.put(content)
			}
			f.mustHave(d, content)
		})
	}
}

func TestWritePastSizeRefused(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	content := []byte("0123456789")
	w, err := f.Begin(digest.FromBytes(content), 10)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(content[:6]); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(content); !errors.Is(err, ErrSizeMismatch) {
		t.Fatalf("write past the size: %v, want ErrSizeMismatch", err)
	}
	if w.Offset() != 6 {
		t.Fatalf("offset %d after a refused write, want 6", w.Offset())
	}
	if _, err := w.Write(content[6:]); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("x")); !errors.Is(err, ErrWriterDone) {
		t.Fatalf("write after commit: %v, want ErrWriterDone", err)
	}
}

func TestBadDigestsRefusedDirectoryUntouched(t *testing.T) {
	t.Parallel()
	hex64 := strings.Repeat("ab", 32)
	tests := []struct {
		in   string
		want error
	}{
		{"sha256:../../x", ErrInvalidDigest},
		{"sha256:../../../../etc/passwd", ErrInvalidDigest},
		{"sha256:" + hex64[:62] + "/.", ErrInvalidDigest},
		{"sha256:" + strings.ToUpper(hex64), ErrInvalidDigest},
		{"sha256:" + hex64[:63], ErrInvalidDigest},
		{"sha256:" + hex64 + "00", ErrInvalidDigest},
		{"sha256:", ErrInvalidDigest},
		{"sha256", ErrInvalidDigest},
		{"", ErrInvalidDigest},
		{"../blobs/sha256/" + hex64, ErrInvalidDigest},
		{"sha512:" + hex64, ErrInvalidDigest},
		{"md5:d41d8cd98f00b204e9800998ecf8427e", ErrUnsupportedDigest},
		{"sha384:" + strings.Repeat("ab", 48), ErrUnsupportedDigest},
	}
	f := newFixture(t, nil)
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			if _, err := ParseDigest(tc.in); !errors.Is(err, tc.want) {
				t.Fatalf("ParseDigest: %v, want %v", err, tc.want)
			}
			d := digest.Digest(tc.in)
			if _, err := f.Begin(d, 1); !errors.Is(err, tc.want) {
				t.Errorf("Begin: %v, want %v", err, tc.want)
			}
			if _, err := f.Open(context.Background(), d); !errors.Is(err, tc.want) {
				t.Errorf("Open: %v, want %v", err, tc.want)
			}
			if _, err := f.Stat(d); !errors.Is(err, tc.want) {
				t.Errorf("Stat: %v, want %v", err, tc.want)
			}
			if err := f.Delete(d); !errors.Is(err, tc.want) {
				t.Errorf("Delete: %v, want %v", err, tc.want)
			}
			if err := f.LinkBlob("", "a", d); !errors.Is(err, tc.want) {
				t.Errorf("LinkBlob: %v, want %v", err, tc.want)
			}
			if err := f.PutManifest("", "a", d, "application/json", []byte("{}")); !errors.Is(err, tc.want) {
				t.Errorf("PutManifest: %v, want %v", err, tc.want)
			}
		})
	}
	if files := f.files(); len(files) != 0 {
		t.Fatalf("refused digests left files: %v", files)
	}
	entries, _ := os.ReadDir(f.dir)
	if len(entries) != 2 {
		t.Fatalf("store directory holds %d entries, want blobs and ingest only", len(entries))
	}
}

func TestBlobInvisibleUntilCommitted(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	content := randomBytes(t, 64<<10)
	d := digest.FromBytes(content)
	w, err := f.Begin(d, int64(len(content)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(content[:1000]); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(f.blobPath(d)); !os.IsNotExist(err) {
		t.Fatalf("final path exists before commit: %v", err)
	}
	if _, err := f.Stat(d); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Stat before commit: %v, want ErrNotFound", err)
	}
	if _, err := w.Write(content[1000:]); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	info, err := f.Stat(d)
	if err != nil || info.Size != int64(len(content)) {
		t.Fatalf("Stat after commit: %+v, %v", info, err)
	}
	f.mustHave(d, content)
}

func TestConcurrentBeginSharesOneWrite(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	content := randomBytes(t, 1<<20)
	d := digest.FromBytes(content)
	const clients = 16

	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		writers  int
		writerCh = make(chan *Writer, clients)
		results  = make([][]byte, clients)
		errs     = make([]error, clients)
	)
	// Each client does what a fetch chain does: Begin, and on
	// ErrInProgress (or ErrExists) follow the write with Open.
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w, err := f.Begin(d, int64(len(content)))
			if err == nil {
				mu.Lock()
				writers++
				mu.Unlock()
				writerCh <- w
			} else if !errors.Is(err, ErrInProgress) && !errors.Is(err, ErrExists) {
				errs[i] = err
				return
			}
			r, err := f.Open(context.Background(), d)
			if err != nil {
				errs[i] = err
				return
			}
			defer r.Close()
			results[i], errs[i] = io.ReadAll(r)
		}()
	}
	w := <-writerCh
	// Write half, let every follower catch up with it, then the rest in
	// small pieces.
	if _, err := w.Write(content[:len(content)/2]); err != nil {
		t.Fatal(err)
	}
	eventually(t, "every client is reading", func() bool { return f.Stats().Readers == 1 && f.readersOf(d) == clients })
	for off := len(content) / 2; off < len(content); off += 4096 {
		if _, err := w.Write(content[off:min(off+4096, len(content))]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if writers != 1 {
		t.Fatalf("%d callers got a Writer, want 1", writers)
	}
	for i := range clients {
		if errs[i] != nil {
			t.Fatalf("client %d: %v", i, errs[i])
		}
		if !bytes.Equal(results[i], content) {
			t.Fatalf("client %d read %d bytes, not the blob", i, len(results[i]))
		}
	}
	if n := len(f.files()); n != 1 {
		t.Fatalf("%d files, want the one blob", n)
	}
}

// readersOf is how many Readers of d are open.
func (s *Store) readersOf(d digest.Digest) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.readers[d]
}

func TestResumeFromOffset(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	content := randomBytes(t, 300_000)
	d := digest.FromBytes(content)
	w, err := f.Begin(d, int64(len(content)))
	if err != nil {
		t.Fatal(err)
	}
	follower, err := f.Open(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	defer follower.Close()
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(follower)
		got <- b
	}()

	// The first source breaks after 123,456 bytes.
	broken := io.MultiReader(bytes.NewReader(content[:123_456]), iotestErrReader{errors.New("connection reset by peer")})
	if _, err := io.Copy(w, broken); err == nil {
		t.Fatal("copy from the broken source succeeded")
	}
	off := w.Offset()
	if off != 123_456 {
		t.Fatalf("offset %d after the broken source, want 123456", off)
	}
	// The next source is asked for the range from the offset.
	if _, err := io.Copy(w, bytes.NewReader(content[off:])); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	if b := <-got; !bytes.Equal(b, content) {
		t.Fatalf("follower read %d bytes, not the blob", len(b))
	}
	f.mustHave(d, content)
}

type iotestErrReader struct{ err error }

func (r iotestErrReader) Read([]byte) (int, error) { return 0, r.err }

func TestAbortAndMismatchReachFollowers(t *testing.T) {
	t.Parallel()
	for _, mismatch := range []bool{false, true} {
		name := "abort"
		if mismatch {
			name = "digest mismatch"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, nil)
			content := randomBytes(t, 10_000)
			d := digest.FromBytes(content)
			w, err := f.Begin(d, -1)
			if err != nil {
				t.Fatal(err)
			}
			r, err := f.Open(context.Background(), d)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			done := make(chan error, 1)
			go func() {
				_, err := io.ReadAll(r)
				done <- err
			}()
			bad := append([]byte(nil), content...)
			bad[5000] ^= 1
			if _, err := w.Write(bad); err != nil {
				t.Fatal(err)
			}
			want := ErrAborted
			if mismatch {
				if err := w.Commit(); !errors.Is(err, ErrDigestMismatch) {
					t.Fatalf("Commit: %v, want ErrDigestMismatch", err)
				}
			} else {
				w.Abort(errors.New("no source left"))
			}
			err = <-done
			if !errors.Is(err, want) || (mismatch && !errors.Is(err, ErrDigestMismatch)) {
				t.Fatalf("follower read: %v", err)
			}
			f.mustLeaveNothing(d)
		})
	}
}

func TestFollowerRangesWhileArriving(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	content := randomBytes(t, 100_000)
	d := digest.FromBytes(content)
	w, err := f.Begin(d, -1)
	if err != nil {
		t.Fatal(err)
	}
	r, err := f.Open(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.Size() != -1 || !r.InProgress() {
		t.Fatalf("size %d in progress %v before the size is known", r.Size(), r.InProgress())
	}
	// A range past what is written waits for it.
	got := make(chan []byte, 1)
	go func() {
		p := make([]byte, 1000)
		n, err := r.ReadAt(p, 90_000)
		if err != nil {
			got <- nil
			return
		}
		got <- p[:n]
	}()
	// Seeking from the end waits for the size.
	end := make(chan int64, 1)
	go func() {
		n, _ := r.Seek(-10, io.SeekEnd)
		end <- n
	}()
	if _, err := w.Write(content[:50_000]); err != nil {
		t.Fatal(err)
	}
	if err := w.SetSize(int64(len(content))); err != nil {
		t.Fatal(err)
	}
	if n := <-end; n != int64(len(content))-10 {
		t.Fatalf("seek from the end: %d", n)
	}
	if _, err := w.Write(content[50_000:]); err != nil {
		t.Fatal(err)
	}
	if b := <-got; !bytes.Equal(b, content[90_000:91_000]) {
		t.Fatal("range read while arriving returned the wrong bytes")
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 20)
	n, err := r.ReadAt(p, int64(len(content))-10)
	if n != 10 || err != io.EOF || !bytes.Equal(p[:10], content[len(content)-10:]) {
		t.Fatalf("read at the end: %d, %v", n, err)
	}
}

func TestFollowerWaitHonoursContext(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	d := digest.FromString("never written")
	w, err := f.Begin(d, 100)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort(nil)
	ctx, cancel := context.WithCancel(context.Background())
	r, err := f.Open(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cancel()
	if _, err := r.Read(make([]byte, 10)); !errors.Is(err, context.Canceled) {
		t.Fatalf("read after cancel: %v", err)
	}
}

func TestUploadCommitAs(t *testing.T) {
	t.Parallel()
	content := randomBytes(t, 5000)
	for _, alg := range []digest.Algorithm{digest.SHA256, digest.SHA512} {
		t.Run(string(alg), func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, nil)
			d := alg.FromBytes(content)
			w, err := f.BeginUpload()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Write(content); err != nil {
				t.Fatal(err)
			}
			if err := w.CommitAs(d); err != nil {
				t.Fatal(err)
			}
			f.mustHave(d, content)

			w, err = f.BeginUpload()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Write(content[1:]); err != nil {
				t.Fatal(err)
			}
			if err := w.CommitAs(d); !errors.Is(err, ErrDigestMismatch) {
				t.Fatalf("CommitAs of other bytes: %v, want ErrDigestMismatch", err)
			}
			if n := len(f.files()); n != 1 {
				t.Fatalf("%d files, want 1", n)
			}
		})
	}
}

func TestCloseAbortsWrites(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	d := digest.FromString("x")
	w, err := f.Begin(d, 1)
	if err != nil {
		t.Fatal(err)
	}
	r, err := f.Open(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	f.Close()
	if _, err := r.Read(make([]byte, 1)); !errors.Is(err, ErrClosed) {
		t.Fatalf("follower after Close: %v, want ErrClosed", err)
	}
	if _, err := w.Write([]byte("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Write after Close: %v, want ErrClosed", err)
	}
	if err := w.Commit(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Commit after Close: %v, want ErrClosed", err)
	}
	if _, err := f.Begin(d, 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("Begin after Close: %v", err)
	}
	if files := f.files(); len(files) != 0 {
		t.Fatalf("files left: %v", files)
	}
}

// TestFollowerHoldsBackTheLastByte: a follower of a blob of known size
// reads all but its last byte while the write is open, so it never holds
// a whole blob that then fails verification; the last byte comes with the
// commit.
func TestFollowerHoldsBackTheLastByte(t *testing.T) {
	t.Parallel()
	for _, good := range []bool{true, false} {
		t.Run(fmt.Sprintf("verified=%v", good), func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, nil)
			content := randomBytes(t, 50_000)
			d := digest.FromBytes(content)
			w, err := f.Begin(d, int64(len(content)))
			if err != nil {
				t.Fatal(err)
			}
			r, err := f.Open(context.Background(), d)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			written := append([]byte(nil), content...)
			if !good {
				written[10] ^= 1
			}
			if _, err := w.Write(written); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(content))
			n, err := io.ReadAtLeast(r, got, len(content)-1)
			if err != nil || n != len(content)-1 {
				t.Fatalf("read %d bytes before the commit (%v), want all but the last", n, err)
			}
			last := make(chan error, 1)
			go func() {
				_, err := io.ReadFull(r, got[n:])
				last <- err
			}()
			select {
			case err := <-last:
				t.Fatalf("the last byte was read before the commit: %v", err)
			case <-time.After(50 * time.Millisecond):
			}
			cerr := w.Commit()
			err = <-last
			if good {
				if cerr != nil || err != nil || !bytes.Equal(got, content) {
					t.Fatalf("commit %v, last read %v", cerr, err)
				}
				return
			}
			if !errors.Is(cerr, ErrDigestMismatch) || !errors.Is(err, ErrAborted) {
				t.Fatalf("commit %v, last read %v: want a mismatch and an aborted read", cerr, err)
			}
		})
	}
}
