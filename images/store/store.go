package store

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/opencontainers/go-digest"
)

// MaxManifestSize is the largest manifest the store keeps: 4 MiB, the limit
// the distribution spec sets for registries to accept.
const MaxManifestSize = 4 << 20

// Store is a node's image content store. It is safe for concurrent use.
// It starts no goroutines; Close aborts the writes in progress.
type Store struct {
	db        *badger.DB
	k         keys
	quota     int64
	retainOwn bool
	onChange  func(d digest.Digest, held bool)
	log       *slog.Logger
	now       func() time.Time
	blobsDir  string
	ingestDir string

	// mu orders every change of which blobs exist: Begin, the rename and
	// record of a commit, Open's choice of file, eviction and deletion. It
	// is held only for metadata work and single file operations.
	mu      sync.Mutex
	closed  bool
	bytes   int64                    // sum of stored blob sizes
	count   int                      // stored blobs
	readers map[digest.Digest]int    // open Readers per digest: never evicted
	writes  map[digest.Digest]*write // single flight: the write in progress per digest
	uploads map[*write]struct{}      // writes whose digest is known only at CommitAs

	blobHits, blobMisses         atomic.Uint64
	manifestHits, manifestMisses atomic.Uint64
	evictions, evictedBytes      atomic.Uint64
}

// New validates cfg and opens the store over db, which the caller owns and
// closes after Close. It recovers from a crash before returning: it removes
// the temporary files left in Dir/ingest, drops metadata whose blob file is
// missing or of the wrong size, and removes blob files that have no
// metadata (a crash between the rename and the record, or between an
// eviction's record removal and its unlink). It starts no goroutines.
func New(cfg Config, db *badger.DB) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if db == nil {
		return nil, errors.New("images store: a Badger DB is required")
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	s := &Store{
		db:        db,
		k:         keys{prefix: append([]byte(nil), cfg.Prefix...)},
		quota:     cfg.Quota,
		retainOwn: cfg.RetainOwnRegistry,
		onChange:  cfg.OnChange,
		log:       logger.With("component", "images_store"),
		now:       now,
		blobsDir:  filepath.Join(cfg.Dir, "blobs"),
		ingestDir: filepath.Join(cfg.Dir, "ingest"),
		readers:   map[digest.Digest]int{},
		writes:    map[digest.Digest]*write{},
		uploads:   map[*write]struct{}{},
	}
	if o := db.Opts(); o.InMemory && o.ValueThreshold < MaxManifestSize+1024 {
		s.log.Warn("an in-memory Badger keeps values of at most ValueThreshold bytes: manifests larger than it cannot be stored",
			"value_threshold", o.ValueThreshold, "max_manifest", MaxManifestSize)
	}
	for _, d := range []string{s.blobsDir, s.ingestDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("images store: create %s: %w", d, err)
		}
	}
	if err := s.recover(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	_, err := s.evictLocked(0)
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return s, nil
}

// Close aborts every write in progress (their followers read ErrClosed) and
// makes every later call return ErrClosed. Readers already open keep
// working until they are closed. It does not close the Badger DB.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	var pending []*write
	for _, w := range s.writes {
		pending = append(pending, w)
	}
	for w := range s.uploads {
		pending = append(pending, w)
	}
	s.mu.Unlock()
	for _, w := range pending {
		w.abortFromStore(ErrClosed)
	}
	return nil
}

// blobPath is where a verified blob lives: Dir/blobs/<algorithm>/<first
// two hex characters>/<hex>. Only a digest that passed ParseDigest reaches
// it, so the path stays inside Dir.
func (s *Store) blobPath(d digest.Digest) string {
	enc := d.Encoded()
	return filepath.Join(s.blobsDir, string(d.Algorithm()), enc[:2], enc)
}

// recover reconciles the files with the metadata after a restart.
func (s *Store) recover() error {
	entries, err := os.ReadDir(s.ingestDir)
	if err != nil {
		return fmt.Errorf("images store: read %s: %w", s.ingestDir, err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(s.ingestDir, e.Name())); err != nil {
			return fmt.Errorf("images store: remove unfinished write %s: %w", e.Name(), err)
		}
	}
	if len(entries) > 0 {
		s.log.Info("removed unfinished writes", "count", len(entries))
	}

	// Records whose file is missing or of the wrong size are dropped.
	recorded := map[digest.Digest]bool{}
	var broken []digest.Digest
	err = s.db.View(func(txn *badger.Txn) error {
		return s.eachBlob(txn, func(d digest.Digest, rec blobRecord) error {
			if checkDigest(d) != nil {
				broken = append(broken, d)
				return nil
			}
			fi, err := os.Stat(s.blobPath(d))
			if err != nil || fi.Size() != rec.Size || !fi.Mode().IsRegular() {
				broken = append(broken, d)
				return nil
			}
			recorded[d] = true
			s.bytes += rec.Size
			s.count++
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("images store: scan blob records: %w", err)
	}
	for _, d := range broken {
		s.log.Warn("dropping the record of a blob whose file is missing", "digest", d)
		if err := s.dropBlobMeta(d); err != nil {
			return err
		}
	}

	// Files without a record are removed: they were never acknowledged, or
	// their eviction was.
	orphans := 0
	err = filepath.WalkDir(s.blobsDir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(s.blobsDir, p)
		parts := strings.Split(filepath.ToSlash(rel), "/")
		if len(parts) != 3 {
			s.log.Warn("unexpected file in the blob directory; leaving it", "path", p)
			return nil
		}
		d, perr := ParseDigest(parts[0] + ":" + parts[2])
		if perr != nil || d.Encoded()[:2] != parts[1] {
			s.log.Warn("unexpected file in the blob directory; leaving it", "path", p)
			return nil
		}
		if recorded[d] {
			return nil
		}
		orphans++
		return os.Remove(p)
	})
	if err != nil {
		return fmt.Errorf("images store: scan %s: %w", s.blobsDir, err)
	}
	if orphans > 0 {
		s.log.Info("removed blob files that had no record", "count", orphans)
	}

	// Access times and blob links of blobs that are not stored are
	// dropped.
	var stale [][]byte
	err = s.db.View(func(txn *badger.Txn) error {
		prefix := s.k.space(spaceAccess)
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
			if !recorded[digest.Digest(it.Item().Key()[len(prefix):])] {
				stale = append(stale, it.Item().KeyCopy(nil))
			}
		}
		prefix = s.k.space(spaceRevLink)
		it2 := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it2.Close()
		for it2.Seek(prefix); it2.ValidForPrefix(prefix); it2.Next() {
			p := s.k.parts(it2.Item().Key())
			if len(p) == 4 && p[1] == string(kindBlob) && !recorded[digest.Digest(p[0])] {
				stale = append(stale, it2.Item().KeyCopy(nil), s.k.link(p[2], p[3], kindBlob, digest.Digest(p[0])))
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("images store: scan access times: %w", err)
	}
	if len(stale) > 0 {
		wb := s.db.NewWriteBatch()
		defer wb.Cancel()
		for _, k := range stale {
			if err := wb.Delete(k); err != nil {
				return fmt.Errorf("images store: drop stale metadata: %w", err)
			}
		}
		if err := wb.Flush(); err != nil {
			return fmt.Errorf("images store: drop stale metadata: %w", err)
		}
	}
	s.log.Info("opened", "blobs", s.count, "bytes", s.bytes, "quota", s.quota)
	return nil
}

// update runs fn in a read-write transaction, retrying when a concurrent
// transaction conflicts with what fn read.
func (s *Store) update(fn func(txn *badger.Txn) error) error {
	var err error
	for range 10 {
		err = s.db.Update(fn)
		if !errors.Is(err, badger.ErrConflict) {
			return err
		}
	}
	return err
}

// getJSON reads a JSON record; ok is false when the key is absent.
func getJSON(txn *badger.Txn, key []byte, v any, what string) (ok bool, err error) {
	item, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, item.Value(func(b []byte) error { return decodeJSON(b, v, what) })
}

// exists reports whether key is present.
func exists(txn *badger.Txn, key []byte) (bool, error) {
	_, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	return err == nil, err
}

// blobRecordOf reads a blob's record.
func (s *Store) blobRecordOf(d digest.Digest) (rec blobRecord, ok bool, err error) {
	err = s.db.View(func(txn *badger.Txn) error {
		ok, err = getJSON(txn, s.k.blob(d), &rec, "blob")
		return err
	})
	return rec, ok, err
}

// dropBlobMeta deletes a blob's record, access time and links (both
// directions), in one transaction.
func (s *Store) dropBlobMeta(d digest.Digest) error {
	err := s.update(func(txn *badger.Txn) error {
		for _, k := range [][]byte{s.k.blob(d), s.k.access(d)} {
			if err := txn.Delete(k); err != nil {
				return err
			}
		}
		prefix := s.k.space(spaceRevLink, string(d), string(kindBlob))
		var rev [][]byte
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
			rev = append(rev, it.Item().KeyCopy(nil))
		}
		it.Close()
		for _, k := range rev {
			p := s.k.parts(k)
			if err := txn.Delete(k); err != nil {
				return err
			}
			if err := txn.Delete(s.k.link(p[2], p[3], kindBlob, d)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("images store: drop metadata of %s: %w", d, err)
	}
	return nil
}

// removeBlobLocked deletes a stored blob: metadata first, then the file, so
// a crash in between leaves an orphan file (removed by the next New), never
// a record without its file. s.mu must be held.
func (s *Store) removeBlobLocked(d digest.Digest, size int64) error {
	if err := s.dropBlobMeta(d); err != nil {
		return err
	}
	s.bytes -= size
	s.count--
	if err := os.Remove(s.blobPath(d)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.log.Warn("remove blob file", "digest", d, "err", err)
	}
	s.changed(d, false)
	return nil
}

// changed reports a change of what the store holds to Config.OnChange.
func (s *Store) changed(d digest.Digest, held bool) {
	if s.onChange != nil {
		s.onChange(d, held)
	}
}

// repairLocked handles a record whose file has gone: the metadata is dropped
// and the blob is reported as not here. s.mu must be held.
func (s *Store) repairLocked(d digest.Digest, rec blobRecord) {
	s.log.Warn("blob file missing; dropping its record", "digest", d)
	if err := s.removeBlobLocked(d, rec.Size); err != nil {
		s.log.Error("repair blob record", "digest", d, "err", err)
	}
}

// touch records an access to d for the LRU order. It writes without reading,
// so it never conflicts; a stray access key left by a concurrent eviction is
// dropped by the next New.
func (s *Store) touch(d digest.Digest) {
	err := s.db.Update(func(txn *badger.Txn) error {
		return txn.Set(s.k.access(d), encodeTime(s.now()))
	})
	if err != nil {
		s.log.Warn("record blob access", "digest", d, "err", err)
	}
}

// syncDir fsyncs a directory so a rename into it survives a crash.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// eachBlob calls fn with every blob record, in digest order.
func (s *Store) eachBlob(txn *badger.Txn, fn func(digest.Digest, blobRecord) error) error {
	prefix := s.k.space(spaceBlob)
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true})
	defer it.Close()
	for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
		d := digest.Digest(it.Item().Key()[len(prefix):])
		var rec blobRecord
		if err := it.Item().Value(func(v []byte) error { return decodeJSON(v, &rec, "blob") }); err != nil {
			return err
		}
		if err := fn(d, rec); err != nil {
			return err
		}
	}
	return nil
}
