package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/opencontainers/go-digest"
	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves a goroutine running.
func TestMain(m *testing.M) {
	if os.Getenv(crashChildEnv) != "" {
		crashChild()
		return
	}
	goleak.VerifyTestMain(m)
}

// clock is a fake clock for access times; every reading advances it by a
// millisecond so consecutive events are ordered.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Unix(1_700_000_000, 0)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Millisecond)
	return c.t
}

// openDB opens an on-disk Badger in dir, small and synchronous: an
// in-memory Badger cannot hold a 4 MiB manifest (see DESIGN.md).
func openDB(t testing.TB, dir string) *badger.DB {
	t.Helper()
	opts := badger.DefaultOptions(dir).WithLogger(nil).
		WithMemTableSize(8 << 20).WithValueThreshold(64 << 10).WithBlockCacheSize(1 << 20).WithIndexCacheSize(1 << 20).
		WithValueLogFileSize(32 << 20).WithNumCompactors(2).WithSyncWrites(true)
	db, err := badger.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

type fixture struct {
	t     testing.TB
	dir   string
	db    *badger.DB
	cfg   Config
	clock *clock
	*Store
}

// newFixture opens a store on a fresh directory and Badger;
// mod adjusts the config.
func newFixture(t testing.TB, mod func(*Config)) *fixture {
	t.Helper()
	f := &fixture{t: t, dir: t.TempDir(), db: openDB(t, t.TempDir()), clock: newClock()}
	f.cfg = DefaultConfig()
	f.cfg.Dir = f.dir
	f.cfg.Now = f.clock.Now
	if mod != nil {
		mod(&f.cfg)
	}
	st, err := New(f.cfg, f.db)
	if err != nil {
		t.Fatal(err)
	}
	f.Store = st
	t.Cleanup(func() {
		f.Store.Close()
		f.db.Close()
	})
	return f
}

// reopen closes the store (not the DB) and opens it again, as after a
// restart.
func (f *fixture) reopen() {
	f.t.Helper()
	f.Store.Close()
	st, err := New(f.cfg, f.db)
	if err != nil {
		f.t.Fatal(err)
	}
	f.Store = st
}

func randomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// put stores b as a blob and returns its digest.
func (f *fixture) put(b []byte) digest.Digest {
	f.t.Helper()
	d := digest.FromBytes(b)
	w, err := f.Begin(d, int64(len(b)))
	if err != nil {
		f.t.Fatalf("begin %s: %v", d, err)
	}
	if _, err := w.Write(b); err != nil {
		f.t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		f.t.Fatal(err)
	}
	return d
}

// read opens and reads a whole blob.
func (f *fixture) read(d digest.Digest) ([]byte, error) {
	r, err := f.Open(context.Background(), d)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

func (f *fixture) mustHave(d digest.Digest, want []byte) {
	f.t.Helper()
	got, err := f.read(d)
	if err != nil {
		f.t.Fatalf("read %s: %v", d, err)
	}
	if !bytes.Equal(got, want) {
		f.t.Fatalf("read %s: %d bytes, want the %d written", d, len(got), len(want))
	}
}

func (f *fixture) mustMiss(d digest.Digest) {
	f.t.Helper()
	if _, err := f.read(d); !errors.Is(err, ErrNotFound) {
		f.t.Fatalf("read %s: %v, want ErrNotFound", d, err)
	}
	if _, err := os.Stat(f.blobPath(d)); !errors.Is(err, fs.ErrNotExist) {
		f.t.Fatalf("file of %s still there: %v", d, err)
	}
}

// mustLeaveNothing checks that a dropped write of d left neither the blob
// nor any file behind.
func (f *fixture) mustLeaveNothing(d digest.Digest) {
	f.t.Helper()
	f.mustMiss(d)
	if files := f.files(); len(files) != 0 {
		f.t.Fatalf("a dropped write of %s left files: %v", d, files)
	}
}

// files lists every regular file under the store's directory.
func (f *fixture) files() []string {
	f.t.Helper()
	var out []string
	err := filepath.WalkDir(f.dir, func(p string, e fs.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			rel, _ := filepath.Rel(f.dir, p)
			out = append(out, rel)
		}
		return err
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return out
}

// eventually polls cond until it holds or a few seconds pass.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
