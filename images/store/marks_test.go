package store

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

// markedBlob is a blob of two and a half intervals, stored in a fixture
// so that its marks are recorded.
func markedBlob(t *testing.T) (content []byte, d digest.Digest, marks []byte) {
	t.Helper()
	content = randomBytes(t, 2*MarkInterval+MarkInterval/2)
	f := newFixture(t, nil)
	d = f.put(content)
	r, err := f.Open(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if got := len(r.Marks()); got != 2*markLen {
		t.Fatalf("a stored blob of %d bytes has %d bytes of marks, want %d", len(content), got, 2*markLen)
	}
	return content, d, r.Marks()
}

// writeAll writes b in pieces that do not line up with the marks.
func writeAll(w *Writer, b []byte) error {
	for len(b) > 0 {
		n := min(len(b), 3<<20+17)
		if _, err := w.Write(b[:n]); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// TestVerifyReleasesMarkedIntervals: under Verify a follower reads each
// interval once its mark matches, the tail only at the commit, and the
// marks survive a round trip through the header encoding.
func TestVerifyReleasesMarkedIntervals(t *testing.T) {
	t.Parallel()
	content, d, marks := markedBlob(t)
	parsed, err := ParseMarks(EncodeMarks(marks))
	if err != nil || string(parsed) != string(marks) {
		t.Fatalf("marks through the header: %v", err)
	}
	f := newFixture(t, nil)
	w, err := f.Begin(d, int64(len(content)))
	if err != nil {
		t.Fatal(err)
	}
	w.Verify(parsed)
	if err := writeAll(w, content[:2*MarkInterval+100]); err != nil {
		t.Fatal(err)
	}
	if got := w.w.snapshot().verified; got != 2*MarkInterval {
		t.Fatalf("verified %d bytes before the commit, want %d", got, 2*MarkInterval)
	}
	r, err := f.Open(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got := make([]byte, 2*MarkInterval)
	if _, err := io.ReadFull(r, got); err != nil || string(got) != string(content[:2*MarkInterval]) {
		t.Fatalf("the follower read the marked intervals: %v", err)
	}
	// The tail is held: a read past the last mark waits for the commit.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r2, err := f.Open(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if _, err := r2.ReadAt(make([]byte, 1), 2*MarkInterval); !errors.Is(err, context.Canceled) {
		t.Fatalf("read past the last good mark before the commit: %v, want to wait", err)
	}
	if err := writeAll(w, content[2*MarkInterval+100:]); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(r)
	if err != nil || string(rest) != string(content[2*MarkInterval:]) {
		t.Fatalf("the tail after the commit: %v, %d bytes", err, len(rest))
	}
}

// TestMarkMismatchDropsTheInterval: a rotten byte in the second interval
// fails the write at the second mark, the bytes after the first mark are
// dropped, and the write goes on from there to a good commit.
func TestMarkMismatchDropsTheInterval(t *testing.T) {
	t.Parallel()
	content, d, marks := markedBlob(t)
	rotten := []byte(string(content))
	rotten[MarkInterval+MarkInterval/2] ^= 0x01
	f := newFixture(t, nil)
	w, err := f.Begin(d, int64(len(content)))
	if err != nil {
		t.Fatal(err)
	}
	w.Verify(marks)
	err = writeAll(w, rotten)
	if !errors.Is(err, ErrMarkMismatch) {
		t.Fatalf("writing a copy rotten in its second interval: %v, want ErrMarkMismatch", err)
	}
	if w.Offset() != MarkInterval || w.w.snapshot().verified != MarkInterval {
		t.Fatalf("after the mismatch: offset %d, verified %d, want both %d", w.Offset(), w.w.snapshot().verified, MarkInterval)
	}
	if err := writeAll(w, content[MarkInterval:]); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	f.mustHave(d, content)
	r, err := f.Open(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if string(r.Marks()) != string(marks) {
		t.Fatal("the marks recorded after a rewind differ from the blob's")
	}
}

// TestCommitDropsOnlyTheTail: a rotten byte after the last mark fails the
// commit but keeps the marked intervals; a second failure from the same
// mark (marks that lie) drops the whole write.
func TestCommitDropsOnlyTheTail(t *testing.T) {
	t.Parallel()
	content, d, marks := markedBlob(t)
	rotten := []byte(string(content))
	rotten[len(rotten)-1] ^= 0x01
	f := newFixture(t, nil)
	w, err := f.Begin(d, int64(len(content)))
	if err != nil {
		t.Fatal(err)
	}
	w.Verify(marks)
	if err := writeAll(w, rotten); err != nil {
		t.Fatal(err)
	}
	err = w.Commit()
	if !errors.Is(err, ErrDigestMismatch) || !errors.Is(err, ErrRewound) || w.Offset() != 2*MarkInterval {
		t.Fatalf("commit of a rotten tail: %v at offset %d, want ErrDigestMismatch and ErrRewound at %d", err, w.Offset(), 2*MarkInterval)
	}
	if err := writeAll(w, rotten[2*MarkInterval:]); err != nil {
		t.Fatal(err)
	}
	err = w.Commit()
	if !errors.Is(err, ErrDigestMismatch) || errors.Is(err, ErrRewound) {
		t.Fatalf("second failed commit from the same mark: %v, want the write dropped", err)
	}
	f.mustLeaveNothing(d)
}

// TestParseMarksRejects: marks of another interval or malformed ones are
// refused, so the caller falls back to holding the bytes.
func TestParseMarksRejects(t *testing.T) {
	t.Parallel()
	for _, v := range []string{
		"",
		"AAAA",
		"4194304:" + strings.Repeat("A", 22),
		"8388608:!!!!",
		"8388608:" + strings.Repeat("A", 20), // 15 bytes: not whole marks
	} {
		if _, err := ParseMarks(v); err == nil {
			t.Errorf("ParseMarks(%q) accepted", v)
		}
	}
}
