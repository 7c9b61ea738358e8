package store

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/opencontainers/go-digest"
)

const crashChildEnv = "OUTPOST_IMAGES_STORE_CRASH_DIR"

// crashChild runs in a child process: it writes blobs of random sizes in a
// loop, printing each digest once Commit has returned, until it is killed.
func crashChild() {
	dir := os.Getenv(crashChildEnv)
	db, err := badger.Open(badger.DefaultOptions(filepath.Join(dir, "db")).WithLogger(nil).
		WithMemTableSize(8 << 20).WithValueThreshold(64 << 10).WithValueLogFileSize(32 << 20).WithSyncWrites(true))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	cfg := DefaultConfig()
	cfg.Dir = filepath.Join(dir, "store")
	st, err := New(cfg, db)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	out := bufio.NewWriter(os.Stdout)
	for {
		b := make([]byte, 1+rand.IntN(512<<10))
		for i := range b {
			b[i] = byte(rand.Uint32())
		}
		d := digest.FromBytes(b)
		w, err := st.Begin(d, int64(len(b)))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		for off := 0; off < len(b); off += 16 << 10 {
			if _, err := w.Write(b[off:min(off+16<<10, len(b))]); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(2)
			}
		}
		if err := w.Commit(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		fmt.Fprintln(out, d)
		out.Flush()
	}
}

// TestCrashKeepsStoreConsistent kills a writing process at random points
// and checks, after each restart, that every acknowledged blob is there
// and whole, that no record points at a missing or wrong file, that no
// file lacks a record, and that no temporary file is left.
func TestCrashKeepsStoreConsistent(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	t.Parallel()
	dir := t.TempDir()
	var acked []digest.Digest
	for round := range 4 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+dir)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := bufio.NewScanner(stdout)
		want := 3 + rand.IntN(6)
		for n := 0; n < want && lines.Scan(); n++ {
			acked = append(acked, digest.Digest(lines.Text()))
		}
		// Kill at a random point of the next writes.
		time.Sleep(time.Duration(rand.IntN(20)) * time.Millisecond)
		_ = cmd.Process.Kill()
		// Digests printed before the kill landed were acknowledged too.
		rest, _ := io.ReadAll(stdout)
		for _, l := range splitLines(string(rest)) {
			acked = append(acked, digest.Digest(l))
		}
		_ = cmd.Wait()

		t.Run(fmt.Sprintf("round %d", round), func(t *testing.T) {
			checkAfterCrash(t, dir, acked)
		})
	}
}

func splitLines(s string) []string {
	var out []string
	sc := bufio.NewScanner(stringsReader(s))
	for sc.Scan() {
		if sc.Text() != "" {
			out = append(out, sc.Text())
		}
	}
	return out
}

func stringsReader(s string) io.Reader { return &stringReader{s: s} }

type stringReader struct{ s string }

func (r *stringReader) Read(p []byte) (int, error) {
	if r.s == "" {
		return 0, io.EOF
	}
	n := copy(p, r.s)
	r.s = r.s[n:]
	return n, nil
}

func checkAfterCrash(t *testing.T, dir string, acked []digest.Digest) {
	db := openDB(t, filepath.Join(dir, "db"))
	defer db.Close()
	cfg := DefaultConfig()
	cfg.Dir = filepath.Join(dir, "store")
	st, err := New(cfg, db)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	verify := func(d digest.Digest) error {
		r, err := st.Open(context.Background(), d)
		if err != nil {
			return err
		}
		defer r.Close()
		v := d.Verifier()
		if _, err := io.Copy(v, r); err != nil {
			return err
		}
		if !v.Verified() {
			return errors.New("content does not match the digest")
		}
		return nil
	}
	for _, d := range acked {
		if err := verify(d); err != nil {
			t.Errorf("acknowledged blob %s: %v", d, err)
		}
	}
	// Every record has its whole file, and every file its record.
	recorded := map[string]bool{}
	err = db.View(func(txn *badger.Txn) error {
		prefix := st.k.space(spaceBlob)
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
			recorded[string(it.Item().Key()[len(prefix):])] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for d := range recorded {
		if err := verify(digest.Digest(d)); err != nil {
			t.Errorf("recorded blob %s: %v", d, err)
		}
	}
	files := 0
	_ = filepath.WalkDir(filepath.Join(cfg.Dir, "blobs"), func(p string, e os.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			files++
			d := "sha256:" + filepath.Base(p)
			if !recorded[d] {
				t.Errorf("file %s has no record", p)
			}
		}
		return nil
	})
	if files != len(recorded) || st.Stats().Blobs != len(recorded) {
		t.Errorf("%d files, %d records, %d counted", files, len(recorded), st.Stats().Blobs)
	}
	ingest, _ := os.ReadDir(filepath.Join(cfg.Dir, "ingest"))
	if len(ingest) != 0 {
		t.Errorf("%d temporary files left after New", len(ingest))
	}
	t.Logf("%d acknowledged, %d stored after the crash", len(acked), len(recorded))
}

func TestRecoverRepairsAfterCrash(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	a := randomBytes(t, 1000)
	b := randomBytes(t, 2000)
	da, db := f.put(a), f.put(b)
	if err := f.LinkBlob("docker.io", "library/x", da); err != nil {
		t.Fatal(err)
	}

	// A crash after the metadata but with the file lost (a record
	// pointing at nothing), a crash between rename and record (a file
	// with no record), and an unfinished write.
	if err := os.Remove(f.blobPath(da)); err != nil {
		t.Fatal(err)
	}
	orphan := randomBytes(t, 500)
	do := digest.FromBytes(orphan)
	if err := os.MkdirAll(filepath.Dir(f.blobPath(do)), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.blobPath(do), orphan, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.dir, "ingest", "blob-123"), []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	f.reopen()

	f.mustMiss(da)
	f.mustMiss(do)
	f.mustHave(db, b)
	if linked, _ := f.BlobLinked("docker.io", "library/x", da); linked {
		t.Fatal("link of a repaired blob survived")
	}
	if st := f.Stats(); st.Blobs != 1 || st.Bytes != 2000 {
		t.Fatalf("stats after repair: %+v", st)
	}
	if files := f.files(); len(files) != 1 {
		t.Fatalf("files after repair: %v", files)
	}
	// The missing blob can be fetched again.
	f.put(a)
	f.mustHave(da, a)
}

func TestOpenRepairsMissingFileAtRuntime(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	a := randomBytes(t, 1000)
	d := f.put(a)
	if err := os.Remove(f.blobPath(d)); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Open(context.Background(), d); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Open of a blob whose file is gone: %v, want ErrNotFound", err)
	}
	if _, err := f.Stat(d); !errors.Is(err, ErrNotFound) {
		t.Fatalf("record not repaired: %v", err)
	}
	if st := f.Stats(); st.Blobs != 0 || st.Bytes != 0 {
		t.Fatalf("stats after repair: %+v", st)
	}
	// A file replaced by one of another size is not served either.
	d = f.put(a)
	if err := os.WriteFile(f.blobPath(d), a[:10], 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Open(context.Background(), d); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Open of a truncated file: %v, want ErrNotFound", err)
	}
	// Begin also repairs instead of answering ErrExists.
	d = f.put(a)
	if err := os.Remove(f.blobPath(d)); err != nil {
		t.Fatal(err)
	}
	f.put(a)
	f.mustHave(d, a)
}
