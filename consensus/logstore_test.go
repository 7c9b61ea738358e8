package consensus

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"
)

// raftStore is what Raft needs from a log and stable store.
type raftStore interface {
	raft.LogStore
	raft.StableStore
}

func TestLogStoreConformance(t *testing.T) {
	t.Parallel()
	t.Run("inmem", func(t *testing.T) {
		t.Parallel()
		testLogStore(t, func(*testing.T) raftStore { return raft.NewInmemStore() })
	})
	t.Run("badger", func(t *testing.T) {
		t.Parallel()
		testLogStore(t, func(t *testing.T) raftStore { return openTestLogStore(t, t.TempDir()) })
	})
	t.Run("badger paced", func(t *testing.T) {
		t.Parallel()
		testLogStore(t, func(t *testing.T) raftStore {
			s, err := OpenLogStore(t.TempDir(), nil, FootprintEdge)
			noError(t, err)
			t.Cleanup(func() { noError(t, s.Close()) })
			return s
		})
	})
}

// testLogStore runs the conformance cases, each against a new store, so
// raft.InmemStore, the reference, and LogStore are held to the same table.
func testLogStore(t *testing.T, newStore func(*testing.T) raftStore) {
	for _, tc := range []struct {
		name string
		run  func(*testing.T, raftStore)
	}{
		{"empty indexes are zero", func(t *testing.T, s raftStore) {
			wantIndexes(t, s, 0, 0)
		}},
		{"log round trip", func(t *testing.T, s raftStore) {
			want := &raft.Log{
				Index:      7,
				Term:       3,
				Type:       raft.LogConfiguration,
				Data:       []byte("data"),
				Extensions: []byte("ext"),
				AppendedAt: time.Date(2025, 6, 1, 12, 0, 0, 123456789, time.UTC),
			}
			noError(t, s.StoreLog(want))
			wantLog(t, s, want)
			wantIndexes(t, s, 7, 7)
		}},
		{"missing log", func(t *testing.T, s raftStore) {
			var l raft.Log
			if err := s.GetLog(1, &l); !errors.Is(err, raft.ErrLogNotFound) {
				t.Fatalf("GetLog on empty store = %v, want raft.ErrLogNotFound", err)
			}
			noError(t, s.StoreLogs(testLogs(1, 3, 8)))
			if err := s.GetLog(4, &l); !errors.Is(err, raft.ErrLogNotFound) {
				t.Fatalf("GetLog past the end = %v, want raft.ErrLogNotFound", err)
			}
		}},
		{"delete range is inclusive", testDeleteRange},
		{"large batch", func(t *testing.T, s raftStore) {
			logs := testLogs(1, 10_000, 1024)
			noError(t, s.StoreLogs(logs))
			wantIndexes(t, s, 1, 10_000)
			for _, l := range logs {
				wantLog(t, s, l)
			}
		}},
		{"stable round trip", func(t *testing.T, s raftStore) {
			noError(t, s.Set([]byte("candidate"), []byte("node-a")))
			noError(t, s.Set([]byte("candidate"), []byte("node-b")))
			if got, err := s.Get([]byte("candidate")); err != nil || string(got) != "node-b" {
				t.Fatalf("Get = %q, %v, want node-b", got, err)
			}
			for _, v := range []uint64{0, 42, math.MaxUint64} {
				noError(t, s.SetUint64([]byte("term"), v))
				if got, err := s.GetUint64([]byte("term")); err != nil || got != v {
					t.Fatalf("GetUint64 = %d, %v, want %d", got, err, v)
				}
			}
		}},
		{"missing stable key", func(t *testing.T, s raftStore) {
			// Raft compares the error text with "not found".
			if _, err := s.Get([]byte("missing")); err == nil || err.Error() != "not found" {
				t.Fatalf("Get(missing) error = %v, want exactly \"not found\"", err)
			}
			if got, err := s.GetUint64([]byte("missing")); got != 0 || err != nil {
				t.Fatalf("GetUint64(missing) = %d, %v, want 0, nil", got, err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.run(t, newStore(t))
		})
	}
}

func testDeleteRange(t *testing.T, s raftStore) {
	// The cases share one store: each stores 1..10 again first.
	for _, tc := range []struct {
		name        string
		min, max    uint64
		first, last uint64
	}{
		{"head", 1, 3, 4, 10},
		{"tail", 8, 10, 1, 7},
		{"middle", 4, 6, 1, 10},
		{"single", 10, 10, 1, 9},
		{"all", 1, 10, 0, 0},
		{"past both ends", 1, 20, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs := testLogs(1, 10, 8)
			noError(t, s.StoreLogs(logs))
			noError(t, s.DeleteRange(tc.min, tc.max))
			wantIndexes(t, s, tc.first, tc.last)
			for _, l := range logs {
				if l.Index >= tc.min && l.Index <= tc.max {
					var got raft.Log
					if err := s.GetLog(l.Index, &got); !errors.Is(err, raft.ErrLogNotFound) {
						t.Fatalf("GetLog(%d) after DeleteRange(%d, %d) = %v, want raft.ErrLogNotFound", l.Index, tc.min, tc.max, err)
					}
				} else {
					wantLog(t, s, l)
				}
			}
			noError(t, s.DeleteRange(1, 10))
		})
	}
}

func TestLogStoreReopen(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := OpenLogStore(dir, nil, FootprintHub)
	noError(t, err)
	logs := testLogs(1, 100, 64)
	noError(t, s.StoreLogs(logs))
	noError(t, s.DeleteRange(1, 10))
	noError(t, s.Set([]byte("vote"), []byte("node-a")))
	noError(t, s.SetUint64([]byte("term"), 9))
	noError(t, s.Close())

	s = openTestLogStore(t, dir)
	wantIndexes(t, s, 11, 100)
	for _, l := range logs[10:] {
		wantLog(t, s, l)
	}
	if got, err := s.Get([]byte("vote")); err != nil || string(got) != "node-a" {
		t.Fatalf("Get(vote) = %q, %v, want node-a", got, err)
	}
	if got, err := s.GetUint64([]byte("term")); err != nil || got != 9 {
		t.Fatalf("GetUint64(term) = %d, %v, want 9", got, err)
	}
}

// TestLogStoreOversizedOp covers the redo path that keeps an op too big for
// one Badger transaction atomic. A crash can leave the recorded op applied
// in full, in part or not at all; reopening must complete it in every case.
func TestLogStoreOversizedOp(t *testing.T) {
	t.Parallel()
	stored := testLogs(1, 10_000, 1024) // 10 MiB; a transaction takes 2.4
	storeOp := []byte{logOpStore}
	for _, l := range stored {
		storeOp = appendFramedLog(storeOp, l)
	}
	deleted := testLogs(1, 30_000, 16) // a transaction takes 26,214 deletes
	deleteOp := binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64([]byte{logOpDelete}, 1), 30_000)

	for _, tc := range []struct {
		name    string
		op      []byte  // recorded under pendingOpKey at the crash
		applied float64 // fraction of the op the crash left written
	}{
		{"store not applied", storeOp, 0},
		{"store half applied", storeOp, 0.5},
		{"store fully applied", storeOp, 1},
		{"delete not applied", deleteOp, 0},
		{"delete half applied", deleteOp, 0.5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			s, err := OpenLogStore(dir, nil, FootprintHub)
			noError(t, err)
			logs := stored
			if tc.op[0] == logOpDelete {
				logs = deleted
				noError(t, s.StoreLogs(logs))
			}
			// The op must really be too big for one transaction.
			err = s.db.Update(func(txn *badger.Txn) error { return applyLogOp(txn, tc.op) })
			if !errors.Is(err, badger.ErrTxnTooBig) {
				t.Fatalf("op in one transaction: %v, want badger.ErrTxnTooBig", err)
			}
			// Simulate the crash: the op is recorded, part of it written.
			noError(t, s.db.Update(func(txn *badger.Txn) error { return txn.Set(pendingOpKey, tc.op) }))
			wb := s.db.NewWriteBatch()
			for _, l := range logs[:int(tc.applied*float64(len(logs)))] {
				if tc.op[0] == logOpStore {
					noError(t, wb.Set(logKey(l.Index), appendLogRecord(nil, l)))
				} else {
					noError(t, wb.Delete(logKey(l.Index)))
				}
			}
			noError(t, wb.Flush())
			noError(t, s.Close())

			s = openTestLogStore(t, dir)
			wantNoPendingOp(t, s)
			if tc.op[0] == logOpDelete {
				wantIndexes(t, s, 0, 0)
				return
			}
			wantIndexes(t, s, 1, 10_000)
			for _, l := range logs {
				wantLog(t, s, l)
			}
		})
	}
}

// TestLogStoreOversizedBatch stores a batch too big for one transaction and
// checks that it lands whole and leaves no pending op behind.
func TestLogStoreOversizedBatch(t *testing.T) {
	t.Parallel()
	s := openTestLogStore(t, t.TempDir())
	logs := testLogs(5, 10_004, 1024)
	noError(t, s.StoreLogs(logs))
	noError(t, s.DeleteRange(5, 10_000))
	wantIndexes(t, s, 10_001, 10_004)
	wantNoPendingOp(t, s)
}

func TestLogStoreDecodeCorrupt(t *testing.T) {
	t.Parallel()
	rec := appendLogRecord(nil, &raft.Log{
		Index: 300, Term: 2, Type: raft.LogCommand,
		Data: []byte("payload"), Extensions: []byte("x"), AppendedAt: time.Now(),
	})
	cases := []struct {
		name string
		rec  []byte
	}{
		{"trailing bytes", append(append([]byte{}, rec...), 0)},
		{"unknown version", append([]byte{9}, rec[1:]...)},
		{"data length past end", []byte{logRecordVersion, 1, 1, 0, 0xff, 0x01, 'a'}},
	}
	for n := range len(rec) {
		cases = append(cases, struct {
			name string
			rec  []byte
		}{fmt.Sprintf("truncated to %d bytes", n), rec[:n]})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if err := decodeLogRecord(tc.rec, new(raft.Log)); !errors.Is(err, ErrLogStoreCorrupt) {
				t.Fatalf("decode = %v, want ErrLogStoreCorrupt", err)
			}
		})
	}
}

func TestLogStoreCorruptEntry(t *testing.T) {
	t.Parallel()
	s := openTestLogStore(t, t.TempDir())
	noError(t, s.db.Update(func(txn *badger.Txn) error { return txn.Set(logKey(1), []byte{logRecordVersion, 1}) }))
	if err := s.GetLog(1, new(raft.Log)); !errors.Is(err, ErrLogStoreCorrupt) {
		t.Fatalf("GetLog of a truncated record = %v, want ErrLogStoreCorrupt", err)
	}
}

func TestLogStoreSize(t *testing.T) {
	t.Parallel()
	s := openTestLogStore(t, t.TempDir())
	const stored = 100 * 64 << 10 // in the value log: entries over ValueThreshold
	noError(t, s.StoreLogs(testLogs(1, 100, 64<<10)))
	n, err := s.Size()
	noError(t, err)
	// Far below the 256 MiB the preallocated value log would count.
	if n < stored || n > 2*stored {
		t.Fatalf("Size = %d, want between %d and %d", n, stored, 2*stored)
	}
}

func openTestLogStore(t *testing.T, dir string) *LogStore {
	t.Helper()
	s, err := OpenLogStore(dir, nil, FootprintHub)
	noError(t, err)
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

// testLogs returns entries first..last whose data of size bytes is derived
// from the index.
func testLogs(first, last uint64, size int) []*raft.Log {
	logs := make([]*raft.Log, 0, last-first+1)
	for i := first; i <= last; i++ {
		logs = append(logs, &raft.Log{
			Index:      i,
			Term:       i/100 + 1,
			Type:       raft.LogCommand,
			Data:       testData(i, size),
			Extensions: []byte{byte(i)},
			AppendedAt: time.Unix(1_700_000_000+int64(i), int64(i)),
		})
	}
	return logs
}

// testData returns size bytes derived from index.
func testData(index uint64, size int) []byte {
	pattern := fmt.Appendf(nil, "entry %d;", index)
	return bytes.Repeat(pattern, size/len(pattern)+1)[:size]
}

func wantIndexes(t *testing.T, s raft.LogStore, first, last uint64) {
	t.Helper()
	gotFirst, err := s.FirstIndex()
	noError(t, err)
	gotLast, err := s.LastIndex()
	noError(t, err)
	if gotFirst != first || gotLast != last {
		t.Fatalf("FirstIndex, LastIndex = %d, %d, want %d, %d", gotFirst, gotLast, first, last)
	}
}

func wantLog(t *testing.T, s raft.LogStore, want *raft.Log) {
	t.Helper()
	var got raft.Log
	if err := s.GetLog(want.Index, &got); err != nil {
		t.Fatalf("GetLog(%d): %v", want.Index, err)
	}
	if got.Index != want.Index || got.Term != want.Term || got.Type != want.Type ||
		!bytes.Equal(got.Data, want.Data) || !bytes.Equal(got.Extensions, want.Extensions) ||
		!got.AppendedAt.Equal(want.AppendedAt) {
		t.Fatalf("GetLog(%d) = %+v, want %+v", want.Index, got, *want)
	}
}

func wantNoPendingOp(t *testing.T, s *LogStore) {
	t.Helper()
	err := s.db.View(func(txn *badger.Txn) error {
		_, err := txn.Get(pendingOpKey)
		return err
	})
	if !errors.Is(err, badger.ErrKeyNotFound) {
		t.Fatalf("pending op lookup = %v, want badger.ErrKeyNotFound", err)
	}
}

func noError(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
