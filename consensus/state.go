package consensus

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/outpost-mesh/outpost/internal/compaction"
	"k8s.io/apimachinery/pkg/watch"
)

// The state store is one Badger DB. Everything the FSM owns lives under a
// generation prefix; the key "cur" names the live generation. Restore writes
// a new generation and flips "cur" in one transaction, which is what makes a
// restore atomic: a crash before the flip leaves the old state whole, after it
// the new one.
//
//	cur                  → generation (uint64)
//	g<gen>o<group/kind/ns/name> → object JSON
//	g<gen>e<index>       → event JSON (watch history)
//	g<gen>ma             → applied index
//	g<gen>mc             → compacted index: history holds every event after it
var curKey = []byte("cur")

const (
	nsObject    = 'o'
	nsEvent     = 'e'
	nsMeta      = 'm'
	metaApplied = "a"
	metaCompact = "c"
)

// Event is one change to an object, as seen by a watch.
type Event struct {
	Type   watch.EventType `json:"type"`
	Object *Object         `json:"object"`
	// Key is the object's store key, for filtering.
	Key string `json:"key"`
}

// Index returns the Raft index of the change: the object's resourceVersion.
func (e Event) Index() uint64 { return e.Object.Revision() }

type state struct {
	db    *badger.DB
	pacer *compaction.Pacer // nil when Badger compacts
	cache objectCache

	// closeMu orders reads (view) before close: a watcher or list still
	// reading when the group stops gets errStateClosed, where Badger
	// would panic on an iterator of a closed DB.
	closeMu sync.RWMutex
	closed  bool
}

// errStateClosed is a read's error once the store is closed.
var errStateClosed = errors.New("the node's state store is closed (the node is stopping)")

func openState(dir string, logger *slog.Logger, fp Footprint) (*state, error) {
	// Blocks are not compressed, so they need no block cache: Badger
	// reads them from the mapped tables. Compressed (Badger's default,
	// Snappy), the hub's compactions held 70 MiB of compressed blocks and
	// its reads 35 MiB of decompressed ones at the end of a 10,000-node
	// run, its peak memory went past 1 GiB, and every read and compaction
	// paid for the codec. The objects are JSON, so the tables are larger
	// on disk (the hub's state after that run: 100 MB, was 41). Tables
	// written compressed by an older version stay readable: Badger
	// records each table's compression.
	opts := badger.DefaultOptions(dir).
		WithLogger(stateLog{logger}).
		WithNumVersionsToKeep(1).
		WithMemTableSize(16 << 20).
		WithCompression(options.None).
		WithBlockCacheSize(0).
		WithIndexCacheSize(16 << 20).
		WithValueThreshold(4 << 10).
		WithNumCompactors(2).
		// Three memtables, not five: a flush takes a fraction of a
		// second, and each memtable is 16 MiB of arena.
		WithNumMemtables(3).
		// The Raft log is the durable record: after a crash, entries past
		// what reached this store are applied again from the log.
		WithSyncWrites(false)
	// Tables of 2 MB at every level (Badger doubles them per level by
	// default): a table being built holds an allocation of twice its
	// size, and compactions build several at once, so as the hub's state
	// grew into deeper levels its compactions held 124 MiB of builders
	// (a heap profile after three 10,000-node reads). More, smaller
	// tables instead.
	opts.TableSizeMultiplier = 1
	cacheLimit := objectCacheBytes
	if fp == FootprintEdge {
		opts = compaction.Paced(opts).
			WithMemTableSize(edgeMemTable).
			WithNumMemtables(2).
			WithIndexCacheSize(4 << 20)
		cacheLimit /= 4
	}
	db, err := badger.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("open state store %s: %w", dir, err)
	}
	s := &state{db: db, cache: objectCache{limit: cacheLimit}}
	if fp == FootprintEdge {
		s.pacer = compaction.Start(db, compaction.Interval, logger)
	}
	return s, nil
}

func (s *state) close() error {
	s.closeMu.Lock()
	s.closed = true
	s.closeMu.Unlock()
	s.pacer.Stop()
	return s.db.Close()
}

func genPrefix(gen uint64) []byte {
	b := make([]byte, 9)
	b[0] = 'g'
	binary.BigEndian.PutUint64(b[1:], gen)
	return b
}

func (s *state) gen(txn *badger.Txn) (uint64, error) {
	item, err := txn.Get(curKey)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var gen uint64
	err = item.Value(func(v []byte) error {
		if len(v) != 8 {
			return fmt.Errorf("state generation: %d bytes, want 8", len(v))
		}
		gen = binary.BigEndian.Uint64(v)
		return nil
	})
	return gen, err
}

// view runs fn in a read transaction with the live generation's prefix.
func (s *state) view(fn func(txn *badger.Txn, p []byte) error) error {
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	if s.closed {
		return errStateClosed
	}
	return s.db.View(func(txn *badger.Txn) error {
		gen, err := s.gen(txn)
		if err != nil {
			return err
		}
		return fn(txn, genPrefix(gen))
	})
}

func key(p []byte, ns byte, rest string) []byte {
	k := make([]byte, 0, len(p)+1+len(rest))
	k = append(k, p...)
	k = append(k, ns)
	return append(k, rest...)
}

func eventKey(p []byte, index uint64) []byte {
	k := make([]byte, len(p)+9)
	copy(k, p)
	k[len(p)] = nsEvent
	binary.BigEndian.PutUint64(k[len(p)+1:], index)
	return k
}

func getUint(txn *badger.Txn, k []byte) (uint64, error) {
	item, err := txn.Get(k)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var n uint64
	err = item.Value(func(v []byte) error {
		if len(v) != 8 {
			return fmt.Errorf("key %q: %d bytes, want 8", k, len(v))
		}
		n = binary.BigEndian.Uint64(v)
		return nil
	})
	return n, err
}

func putUint(txn *badger.Txn, k []byte, n uint64) error {
	v := make([]byte, 8)
	binary.BigEndian.PutUint64(v, n)
	return txn.Set(k, v)
}

func getJSON(txn *badger.Txn, k []byte, v any) (bool, error) {
	item, err := txn.Get(k)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, item.Value(func(b []byte) error { return json.Unmarshal(b, v) })
}

// getObject reads one object; nil when absent.
func getObject(txn *badger.Txn, p []byte, okey string) (*Object, error) {
	var obj Object
	found, err := getJSON(txn, key(p, nsObject, okey), &obj)
	if err != nil || !found {
		return nil, err
	}
	return &obj, nil
}

// readObject reads one object in a read-only transaction through the
// cache; nil when absent. The object is shared: copy it before handing it
// out.
func (s *state) readObject(txn *badger.Txn, p []byte, okey string) (*Object, error) {
	item, err := txn.Get(key(p, nsObject, okey))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return s.cache.decode(item)
}

// readObjects calls fn for each object whose key starts with prefix, in a
// read-only transaction, through the cache; those it does not hold are
// added when keep is set. The objects are shared: copy the ones kept.
func (s *state) readObjects(txn *badger.Txn, p []byte, prefix string, keep bool, fn func(*Object) error) error {
	pre := key(p, nsObject, prefix)
	// Values are read only for objects the cache does not hold.
	it := txn.NewIterator(badger.IteratorOptions{Prefix: pre})
	defer it.Close()
	for it.Seek(pre); it.ValidForPrefix(pre); it.Next() {
		decode := s.cache.decode
		if !keep {
			decode = s.cache.peek
		}
		obj, err := decode(it.Item())
		if err != nil {
			return err
		}
		if err := fn(obj); err != nil {
			return err
		}
	}
	return nil
}

// applied returns the index of the last command applied to the state.
func (s *state) applied() (uint64, error) {
	var n uint64
	err := s.view(func(txn *badger.Txn, p []byte) error {
		var err error
		n, err = getUint(txn, key(p, nsMeta, metaApplied))
		return err
	})
	return n, err
}

// eventsAfter returns up to limit events with index > from whose key starts
// with prefix, the index of the last event examined, and whether the scan
// reached the end of history. A from older than the compacted history
// returns errCompacted.
func (s *state) eventsAfter(from uint64, prefix string, limit int) (evs []Event, last uint64, done bool, err error) {
	err = s.view(func(txn *badger.Txn, p []byte) error {
		compacted, err := getUint(txn, key(p, nsMeta, metaCompact))
		if err != nil {
			return err
		}
		if from < compacted {
			return &compactedError{from: from, compacted: compacted}
		}
		pre := key(p, nsEvent, "")
		// No prefetching, as in a snapshot (snapshot.go).
		it := txn.NewIterator(badger.IteratorOptions{Prefix: pre})
		defer it.Close()
		last = from
		for it.Seek(eventKey(p, from+1)); it.ValidForPrefix(pre); it.Next() {
			if len(evs) >= limit {
				return nil
			}
			var ev Event
			if err := it.Item().Value(func(b []byte) error { return json.Unmarshal(b, &ev) }); err != nil {
				return fmt.Errorf("decode event %x: %w", it.Item().Key(), err)
			}
			last = binary.BigEndian.Uint64(it.Item().Key()[len(pre):])
			if hasPrefix(ev.Key, prefix) {
				evs = append(evs, ev)
			}
		}
		done = true
		return nil
	})
	return evs, last, done, err
}

func hasPrefix(s, prefix string) bool { return len(s) >= len(prefix) && s[:len(prefix)] == prefix }

// compactedError reports a watch that starts before the kept history.
type compactedError struct{ from, compacted uint64 }

func (e *compactedError) Error() string {
	return fmt.Sprintf("resourceVersion %d is older than the kept history (after %d); list again", e.from, e.compacted)
}

// stateLog bridges Badger's logger into slog; Badger's Info is chatty,
// so it goes to Debug.
type stateLog struct{ l *slog.Logger }

func (b stateLog) log() *slog.Logger {
	if b.l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return b.l
}

func (b stateLog) Errorf(f string, a ...any)   { b.log().Error(fmt.Sprintf(f, a...)) }
func (b stateLog) Warningf(f string, a ...any) { b.log().Warn(fmt.Sprintf(f, a...)) }
func (b stateLog) Infof(f string, a ...any)    { b.log().Debug(fmt.Sprintf(f, a...)) }
func (b stateLog) Debugf(f string, a ...any)   { b.log().Debug(fmt.Sprintf(f, a...)) }
