package consensus

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/hashicorp/raft"
	"github.com/outpost-mesh/outpost/internal/compaction"
)

// Errors returned by LogStore.
var (
	// ErrStableKeyNotFound is returned by LogStore.Get for a missing key. Its
	// text is exactly "not found", as for raft.InmemStore, because Raft
	// compares the text.
	ErrStableKeyNotFound = errors.New("not found")

	// ErrLogStoreCorrupt is wrapped by errors for stored records that cannot
	// be decoded.
	ErrLogStoreCorrupt = errors.New("logstore: corrupt record")

	// ErrLogStoreBroken is wrapped by every write after an oversized write
	// failed half-applied. Reopening the store completes that write.
	ErrLogStoreBroken = errors.New("logstore: unfinished oversized write, reopen the store")
)

var (
	_ raft.LogStore          = (*LogStore)(nil)
	_ raft.StableStore       = (*LogStore)(nil)
	_ raft.MonotonicLogStore = (*LogStore)(nil)
)

// Key layout. A one-byte namespace keeps the kinds apart:
//
//	'l' + uint64 big-endian index  encoded raft.Log (sorted by index)
//	's' + key                      stable value (SetUint64: 8 bytes big-endian)
//	'p'                            pending oversized op, see writeOp
const (
	logKeyPrefix    = 'l'
	stableKeyPrefix = 's'
)

var (
	logKeyspace  = []byte{logKeyPrefix}
	pendingOpKey = []byte{'p'}
)

// Op kinds of an encoded log mutation (first byte of the op).
const (
	logOpStore  byte = 1 // followed by records, each framed by a uint32 length
	logOpDelete byte = 2 // followed by the uint64 bounds of the range
)

// Value-log GC cadence for RunGC.
const (
	logGCInterval     = 5 * time.Minute
	logGCDiscardRatio = 0.5
)

// LogStore is a Raft log and stable store over its own Badger database. Every
// acknowledged write is fsynced, and every StoreLogs and DeleteRange is
// atomic across crashes whatever its size. It is safe for concurrent use.
type LogStore struct {
	db     *badger.DB
	pacer  *compaction.Pacer // nil when Badger compacts
	dir    string
	logger *slog.Logger

	// writeMu serialises log mutations, so the cached indexes and the
	// pending op always describe what is on disk.
	writeMu sync.Mutex
	broken  error // set when an oversized op is recorded but not applied

	mu          sync.Mutex // guards first and last
	first, last uint64     // 0, 0 when the log is empty
}

// OpenLogStore opens (creating if needed) the Badger database in dir,
// completes an oversized write interrupted by a crash, and loads the first
// and last log index. A nil logger discards Badger's logs.
func OpenLogStore(dir string, logger *slog.Logger, fp Footprint) (*LogStore, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("component", "logstore")
	opts := logStoreOptions(dir, logger)
	if fp == FootprintEdge {
		opts = compaction.Paced(opts).WithMemTableSize(edgeMemTable)
	}
	db, err := badger.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("open badger %s: %w", dir, err)
	}
	s := &LogStore{db: db, dir: dir, logger: logger}
	if err := s.recover(); err != nil {
		return nil, errors.Join(fmt.Errorf("recover logstore %s: %w", dir, err), db.Close())
	}
	if fp == FootprintEdge {
		s.pacer = compaction.Start(db, compaction.Interval, logger)
	}
	return s, nil
}

// logStoreOptions tunes Badger for a Raft log on a small edge host:
//   - SyncWrites: a commit returns only after the memtable WAL and the value
//     log are fsynced.
//   - MemTableSize 16 MiB (default 64), NumMemtables 2 (default 5): at most
//     32 MiB of memtables. One transaction may carry 15% of a memtable,
//     ~2.4 MiB; bigger ops take writeOp's redo path.
//   - ValueThreshold 32 KiB (default 1 MiB, the maximum): ordinary entries
//     live in the LSM tree, so compacting the Raft log frees space through
//     LSM compaction alone; only large entries and oversized ops go to the
//     value log, which RunGC reclaims. Measured with 256-byte entries,
//     moving them to the value log (threshold 1) made one-entry StoreLogs
//     ~30% and Raft Apply ~20% slower: each commit then syncs two files
//     with data instead of one.
//   - ValueLogFileSize 128 MiB (default 1 GiB): files are reclaimed sooner and
//     map less address space. One value, hence one oversized op, must fit.
//   - BlockCacheSize 0 (default 256 MiB): uncompressed, unencrypted blocks
//     are read from the mapped tables and need no cache (with 8 MiB, the
//     hub's log store logged "Block cache might be too small" every
//     minute in a 10,000-node run, at a 2% hit ratio).
//   - Compression None: entries are small and often already encoded.
//   - NumVersionsToKeep 1 (default): overwritten entries are garbage.
//   - NumCompactors 2: the fewest that still compact.
//
// FootprintEdge makes the memtables 4 MiB (a transaction then carries
// ~600 KiB; bigger ops take the redo path) and lets a Pacer compact.
//   - DetectConflicts false: writes are blind and serialised by the store.
//   - MetricsEnabled false: no global expvar bookkeeping; Size reads the
//     directory instead.
func logStoreOptions(dir string, logger *slog.Logger) badger.Options {
	return badger.DefaultOptions(dir).
		WithLogger(logStoreBadgerLog{logger}).
		WithSyncWrites(true).
		WithMemTableSize(16 << 20).
		WithNumMemtables(2).
		WithValueThreshold(32 << 10).
		WithValueLogFileSize(128 << 20).
		WithBlockCacheSize(0).
		WithCompression(options.None).
		WithNumVersionsToKeep(1).
		WithNumCompactors(2).
		WithDetectConflicts(false).
		WithMetricsEnabled(false)
}

// recover redoes a pending op left by a crash and loads the cached indexes.
func (s *LogStore) recover() error {
	if err := s.loadIndexes(); err != nil {
		return err
	}
	var op []byte
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(pendingOpKey)
		if err != nil {
			return err
		}
		op, err = item.ValueCopy(nil)
		return err
	})
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
		return nil
	case err != nil:
		return fmt.Errorf("read pending op: %w", err)
	}
	s.logger.Warn("redoing interrupted oversized write", "bytes", len(op))
	if err := s.redo(op); err != nil {
		return fmt.Errorf("redo pending op: %w", err)
	}
	return s.loadIndexes()
}

// loadIndexes reads the first and last log index from disk.
func (s *LogStore) loadIndexes() error {
	first, err := s.seekLog(0, false)
	if err != nil {
		return err
	}
	last, err := s.seekLog(math.MaxUint64, true)
	if err != nil {
		return err
	}
	s.setIndexes(first, last)
	return nil
}

// Close closes the Badger database.
func (s *LogStore) Close() error {
	s.pacer.Stop()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close badger %s: %w", s.dir, err)
	}
	return nil
}

// FirstIndex returns the first stored log index, or 0 if there is none.
func (s *LogStore) FirstIndex() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.first, nil
}

// LastIndex returns the last stored log index, or 0 if there is none.
func (s *LogStore) LastIndex() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last, nil
}

// IsMonotonic reports true, so Raft deletes the whole log after installing or
// restoring a snapshot instead of leaving a gap: the log stays one dense
// range from FirstIndex to LastIndex, which lets DeleteRange delete by index
// instead of scanning keys. Gaps stay correct, only slower to delete.
func (s *LogStore) IsMonotonic() bool { return true }

// GetLog reads the log entry at index into log, or returns
// raft.ErrLogNotFound.
func (s *LogStore) GetLog(index uint64, log *raft.Log) error {
	var val []byte
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(logKey(index))
		if err != nil {
			return err
		}
		val, err = item.ValueCopy(nil)
		return err
	})
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
		return raft.ErrLogNotFound
	case err != nil:
		return fmt.Errorf("get log %d: %w", index, err)
	}
	var l raft.Log
	if err := decodeLogRecord(val, &l); err != nil {
		return fmt.Errorf("get log %d: %w", index, err)
	}
	if l.Index != index {
		return fmt.Errorf("get log %d: %w: holds index %d", index, ErrLogStoreCorrupt, l.Index)
	}
	*log = l
	return nil
}

// StoreLog stores one log entry.
func (s *LogStore) StoreLog(log *raft.Log) error {
	return s.StoreLogs([]*raft.Log{log})
}

// StoreLogs stores the entries atomically and durably: after a crash either
// all of them are present or none.
func (s *LogStore) StoreLogs(logs []*raft.Log) error {
	if len(logs) == 0 {
		return nil
	}
	op := []byte{logOpStore}
	lo, hi := logs[0].Index, logs[0].Index
	for _, l := range logs {
		op = appendFramedLog(op, l)
		lo, hi = min(lo, l.Index), max(hi, l.Index)
	}

	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if err := s.writeOp(op); err != nil {
		return fmt.Errorf("store logs %d-%d: %w", lo, hi, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.first == 0 || lo < s.first {
		s.first = lo
	}
	s.last = max(s.last, hi)
	return nil
}

// DeleteRange deletes the entries with indexes from through to, inclusive,
// atomically.
func (s *LogStore) DeleteRange(from, to uint64) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	first, last := s.indexes()
	lo, hi := max(from, first), min(to, last)
	if first == 0 || lo > hi {
		return nil
	}
	op := binary.BigEndian.AppendUint64([]byte{logOpDelete}, lo)
	op = binary.BigEndian.AppendUint64(op, hi)
	if err := s.writeOp(op); err != nil {
		return fmt.Errorf("delete logs %d-%d: %w", lo, hi, err)
	}

	// Raft trims the head after a snapshot and the tail on a conflict, so
	// the new bounds are one seek away from the deleted range.
	var err error
	switch {
	case lo == first && hi == last:
		first, last = 0, 0
	case lo == first:
		first, err = s.seekLog(hi+1, false)
	case hi == last:
		last, err = s.seekLog(lo-1, true)
	}
	if err != nil {
		return fmt.Errorf("delete logs %d-%d: %w", lo, hi, err)
	}
	s.setIndexes(first, last)
	return nil
}

// writeOp applies an encoded log mutation. It first tries one Badger
// transaction, which Badger makes atomic. An op too big for one transaction
// (badger.ErrTxnTooBig) is made atomic by redo logging instead: the op is
// committed as a single value under pendingOpKey (a large value goes to the
// value log, so one value can hold far more than one transaction), applied
// through a WriteBatch in as many transactions as it takes, and then the
// pending key is deleted. OpenLogStore redoes a pending op, so after a crash
// the op is either absent or complete. Oversized ops are written twice, which
// is cheap next to the simplicity: Raft batches (MaxAppendEntries, 256
// here) rarely reach the limit, and the common path pays nothing.
func (s *LogStore) writeOp(op []byte) error {
	if s.broken != nil {
		return fmt.Errorf("%w: %w", ErrLogStoreBroken, s.broken)
	}
	err := s.db.Update(func(txn *badger.Txn) error { return applyLogOp(txn, op) })
	if !errors.Is(err, badger.ErrTxnTooBig) {
		return err
	}
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(pendingOpKey, op) }); err != nil {
		return fmt.Errorf("record pending op: %w", err)
	}
	if err := s.redo(op); err != nil {
		// Later writes could be undone when the next open redoes this op.
		s.broken = err
		return err
	}
	return nil
}

// redo applies a recorded op in as many transactions as needed and then
// deletes the record.
func (s *LogStore) redo(op []byte) error {
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	if err := applyLogOp(wb, op); err != nil {
		return err
	}
	if err := wb.Flush(); err != nil {
		return err
	}
	return s.db.Update(func(txn *badger.Txn) error { return txn.Delete(pendingOpKey) })
}

// logBatchWriter is what badger.Txn and badger.WriteBatch have in common.
type logBatchWriter interface {
	Set(key, val []byte) error
	Delete(key []byte) error
}

// applyLogOp issues the writes of an encoded op to w.
func applyLogOp(w logBatchWriter, op []byte) error {
	if len(op) == 0 {
		return fmt.Errorf("%w: empty op", ErrLogStoreCorrupt)
	}
	body := op[1:]
	switch {
	case op[0] == logOpStore:
		for len(body) > 0 {
			if len(body) < 4 || uint64(len(body)-4) < uint64(binary.BigEndian.Uint32(body)) {
				return fmt.Errorf("%w: truncated op", ErrLogStoreCorrupt)
			}
			end := 4 + int(binary.BigEndian.Uint32(body))
			var l raft.Log
			if err := decodeLogRecord(body[4:end], &l); err != nil {
				return err
			}
			if err := w.Set(logKey(l.Index), body[4:end:end]); err != nil {
				return err
			}
			body = body[end:]
		}
		return nil
	case op[0] == logOpDelete && len(body) == 16:
		// By index: scanning for the keys first cost more than deleting them,
		// the log is dense (see IsMonotonic), and a tombstone for an absent
		// index is harmless.
		lo, hi := binary.BigEndian.Uint64(body), binary.BigEndian.Uint64(body[8:])
		for i := lo; i <= hi && i >= lo; i++ { // i >= lo: stop at wrap-around
			if err := w.Delete(logKey(i)); err != nil {
				return err
			}
		}
		return nil
	default:
		return fmt.Errorf("%w: op kind %d with %d bytes", ErrLogStoreCorrupt, op[0], len(body))
	}
}

// seekLog returns the index of the first entry at or after from (at or
// before from when reverse), or 0 if there is none.
func (s *LogStore) seekLog(from uint64, reverse bool) (uint64, error) {
	var index uint64
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: logKeyspace, Reverse: reverse})
		defer it.Close()
		if it.Seek(logKey(from)); it.Valid() {
			index = binary.BigEndian.Uint64(it.Item().Key()[1:])
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("seek log %d: %w", from, err)
	}
	return index, nil
}

func (s *LogStore) indexes() (first, last uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.first, s.last
}

func (s *LogStore) setIndexes(first, last uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.first, s.last = first, last
}

// Set stores a stable value. Set and SetUint64 share one key space.
func (s *LogStore) Set(key, val []byte) error {
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(stableKey(key), val) }); err != nil {
		return fmt.Errorf("set %q: %w", key, err)
	}
	return nil
}

// Get returns a stable value, or ErrStableKeyNotFound.
func (s *LogStore) Get(key []byte) ([]byte, error) {
	var val []byte
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(stableKey(key))
		if err != nil {
			return err
		}
		val, err = item.ValueCopy(nil)
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, ErrStableKeyNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get %q: %w", key, err)
	}
	return val, nil
}

// SetUint64 stores a stable integer.
func (s *LogStore) SetUint64(key []byte, val uint64) error {
	return s.Set(key, binary.BigEndian.AppendUint64(nil, val))
}

// GetUint64 returns a stable integer, or 0 and nil for a missing key, as
// raft.InmemStore does.
func (s *LogStore) GetUint64(key []byte) (uint64, error) {
	val, err := s.Get(key)
	switch {
	case errors.Is(err, ErrStableKeyNotFound):
		return 0, nil
	case err != nil:
		return 0, err
	case len(val) != 8:
		return 0, fmt.Errorf("get %q: %w: %d-byte integer", key, ErrLogStoreCorrupt, len(val))
	}
	return binary.BigEndian.Uint64(val), nil
}

// Size returns the bytes that Badger's tables, memtable logs and value logs
// occupy on disk, for metrics. Badger preallocates the active value log and
// memtable log as sparse files, so where the file system reports allocated
// blocks (every Unix) they count rather than the file length; and unlike
// badger.DB.Size the answer does not lag by a minute.
func (s *LogStore) Size() (int64, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return 0, fmt.Errorf("size of %s: %w", s.dir, err)
	}
	var n int64
	for _, e := range entries {
		switch filepath.Ext(e.Name()) {
		case ".sst", ".mem", ".vlog":
		default:
			continue
		}
		info, err := e.Info()
		switch {
		case errors.Is(err, os.ErrNotExist):
			continue // removed by compaction or GC since ReadDir
		case err != nil:
			return 0, fmt.Errorf("size of %s: %w", s.dir, err)
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			n += st.Blocks * 512
		} else {
			n += info.Size()
		}
	}
	return n, nil
}

// RunGC reclaims value-log space every few minutes, rewriting files until
// Badger finds none worth rewriting, and returns nil when ctx is done.
func (s *LogStore) RunGC(ctx context.Context) error {
	t := time.NewTicker(logGCInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		for ctx.Err() == nil {
			err := s.db.RunValueLogGC(logGCDiscardRatio)
			if err == nil {
				continue
			}
			if !errors.Is(err, badger.ErrNoRewrite) {
				s.logger.Warn("value log gc", "err", err)
			}
			break
		}
	}
}

func logKey(index uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{logKeyPrefix}, index)
}

func stableKey(key []byte) []byte {
	return append([]byte{stableKeyPrefix}, key...)
}

// logStoreBadgerLog bridges Badger's logger into slog. Badger's info
// messages are routine (tables opened, files replayed), so they go out at
// debug level.
type logStoreBadgerLog struct{ l *slog.Logger }

func (b logStoreBadgerLog) Errorf(f string, v ...any)   { b.log(slog.LevelError, f, v) }
func (b logStoreBadgerLog) Warningf(f string, v ...any) { b.log(slog.LevelWarn, f, v) }
func (b logStoreBadgerLog) Infof(f string, v ...any)    { b.log(slog.LevelDebug, f, v) }
func (b logStoreBadgerLog) Debugf(f string, v ...any)   { b.log(slog.LevelDebug, f, v) }

// log formats only when the level is enabled: Badger logs at debug level on
// every write.
func (b logStoreBadgerLog) log(level slog.Level, format string, args []any) {
	ctx := context.Background()
	if b.l.Enabled(ctx, level) {
		b.l.Log(ctx, level, strings.TrimSpace(fmt.Sprintf(format, args...)))
	}
}

// logRecordVersion tags the log record encoding:
//
//	version      byte (1)
//	index, term  uvarint
//	type         byte
//	data         uvarint length, bytes
//	extensions   uvarint length, bytes
//	appended_at  varint Unix seconds, uvarint nanoseconds
//
// A store op frames each record with a uint32 big-endian length.
const logRecordVersion = 1

// appendFramedLog appends l's record, framed by its length, to op.
func appendFramedLog(op []byte, l *raft.Log) []byte {
	at := len(op)
	op = appendLogRecord(append(op, 0, 0, 0, 0), l)
	binary.BigEndian.PutUint32(op[at:], uint32(len(op)-at-4))
	return op
}

// appendLogRecord appends the record of l to b.
func appendLogRecord(b []byte, l *raft.Log) []byte {
	b = append(b, logRecordVersion)
	b = binary.AppendUvarint(b, l.Index)
	b = binary.AppendUvarint(b, l.Term)
	b = append(b, byte(l.Type))
	b = binary.AppendUvarint(b, uint64(len(l.Data)))
	b = append(b, l.Data...)
	b = binary.AppendUvarint(b, uint64(len(l.Extensions)))
	b = append(b, l.Extensions...)
	b = binary.AppendVarint(b, l.AppendedAt.Unix())
	return binary.AppendUvarint(b, uint64(l.AppendedAt.Nanosecond()))
}

// decodeLogRecord decodes a record into l, whose Data and Extensions then
// alias b. A truncated, over-long or otherwise malformed record is an error
// wrapping ErrLogStoreCorrupt.
func decodeLogRecord(b []byte, l *raft.Log) error {
	d := logDecoder{b: b}
	if v := d.u8(); d.err == nil && v != logRecordVersion {
		return fmt.Errorf("%w: record version %d", ErrLogStoreCorrupt, v)
	}
	var out raft.Log
	out.Index = d.uvarint()
	out.Term = d.uvarint()
	out.Type = raft.LogType(d.u8())
	out.Data = d.bytes()
	out.Extensions = d.bytes()
	sec, nsec := d.varint(), d.uvarint()
	switch {
	case d.err != nil:
		return d.err
	case len(d.b) > 0:
		return fmt.Errorf("%w: %d trailing bytes", ErrLogStoreCorrupt, len(d.b))
	case nsec >= uint64(time.Second):
		return fmt.Errorf("%w: %d nanoseconds", ErrLogStoreCorrupt, nsec)
	}
	out.AppendedAt = time.Unix(sec, int64(nsec))
	*l = out
	return nil
}

// logDecoder reads a record front to back, keeping the first error.
type logDecoder struct {
	b   []byte
	err error
}

func (d *logDecoder) fail() {
	if d.err == nil {
		d.err = fmt.Errorf("%w: truncated", ErrLogStoreCorrupt)
	}
	d.b = nil
}

func (d *logDecoder) u8() byte {
	if len(d.b) == 0 {
		d.fail()
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *logDecoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *logDecoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

// bytes reads a length-prefixed slice, nil when empty.
func (d *logDecoder) bytes() []byte {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail()
		return nil
	}
	if n == 0 {
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}
