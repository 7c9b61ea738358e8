package store

import (
	"context"
	"io"
	"testing"

	"github.com/opencontainers/go-digest"
)

// BenchmarkWriteCommit measures a verified write of a 4 MiB blob: hash,
// fsync, rename, directory fsync and record.
func BenchmarkWriteCommit(b *testing.B) {
	f := newFixture(b, nil)
	blob := randomBytes(b, 4<<20)
	b.SetBytes(int64(len(blob)))
	for i := 0; b.Loop(); i++ {
		blob[0], blob[1], blob[2] = byte(i), byte(i>>8), byte(i>>16)
		d := digest.FromBytes(blob)
		w, err := f.Begin(d, int64(len(blob)))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := w.Write(blob); err != nil {
			b.Fatal(err)
		}
		if err := w.Commit(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkOpenRead measures opening and reading a stored 4 MiB blob.
func BenchmarkOpenRead(b *testing.B) {
	f := newFixture(b, nil)
	blob := randomBytes(b, 4<<20)
	d := f.put(blob)
	b.SetBytes(int64(len(blob)))
	for b.Loop() {
		r, err := f.Open(context.Background(), d)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, r); err != nil {
			b.Fatal(err)
		}
		r.Close()
	}
}
