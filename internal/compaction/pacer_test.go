package compaction

import (
	"fmt"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// smallStore opens a paced store whose memtables are 1 MiB, level 0 is
// due past 2 tables and writes stall at 4.
func smallStore(t *testing.T) *badger.DB {
	t.Helper()
	opts := Paced(badger.DefaultOptions(t.TempDir()).
		WithLogger(nil).
		WithMemTableSize(1 << 20).
		WithNumMemtables(2).
		WithNumLevelZeroTables(2).
		WithNumLevelZeroTablesStall(4).
		WithValueThreshold(4 << 10).
		WithBlockCacheSize(1 << 20))
	db, err := badger.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// fill writes n batches of about 256 KiB, batch b's keys "b-i".
func fill(t *testing.T, db *badger.DB, from, n int) {
	t.Helper()
	val := make([]byte, 1<<10)
	for b := from; b < from+n; b++ {
		wb := db.NewWriteBatch()
		for i := range 256 {
			if err := wb.Set(fmt.Appendf(nil, "%04d-%03d", b, i), val); err != nil {
				t.Fatal(err)
			}
		}
		if err := wb.Flush(); err != nil {
			t.Fatal(err)
		}
	}
}

func level0(db *badger.DB) int { return db.Levels()[0].NumTables }

func TestCompactMergesLevelZeroWhenDue(t *testing.T) {
	t.Parallel()
	db := smallStore(t)
	p := &Pacer{db: db}
	if n, err := p.compact(); err != nil || n != 0 || level0(db) != 0 {
		t.Fatalf("an empty store: compact = %d, %v, level 0 has %d tables", n, err, level0(db))
	}
	// Fill until three memtables have been flushed to level 0, which makes
	// the store due (and is still short of the stall at 4).
	deadline := time.Now().Add(time.Minute)
	batches := 0
	for level0(db) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("level 0 has %d tables after %d batches", level0(db), batches)
		}
		fill(t, db, batches, 1)
		batches++
	}
	if !due(db) {
		t.Fatalf("level 0 has %d tables but the store is not due: %+v", level0(db), db.Levels()[0])
	}
	if n, err := p.compact(); err != nil || n != 0 {
		t.Fatalf("compact = %d, %v; want level 0 empty", n, err)
	}
	if due(db) || level0(db) != 0 {
		t.Fatalf("after compact: due %v, level 0 has %d tables", due(db), level0(db))
	}
	// Every key is still there.
	err := db.View(func(txn *badger.Txn) error {
		for b := range batches {
			for _, i := range []int{0, 255} {
				if _, err := txn.Get(fmt.Appendf(nil, "%04d-%03d", b, i)); err != nil {
					return fmt.Errorf("key %04d-%03d: %w", b, i, err)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Without compactors, writes stall for good once level 0 holds 4 tables;
// with a Pacer they go on, and level 0 stays below the stall.
func TestPacerKeepsWritesFlowing(t *testing.T) {
	t.Parallel()
	db := smallStore(t)
	p := Start(db, 10*time.Millisecond, nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		fill(t, db, 0, 80) // 20 MiB: 20 memtables, five times the stall
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		n := level0(db)
		// Drain level 0 so that the writer and the store's Close can end.
		_ = db.Flatten(1)
		<-done
		t.Fatalf("writes stalled with level 0 at %d tables", n)
	}
	p.Stop()
	if n := level0(db); n >= 4 {
		t.Fatalf("level 0 has %d tables", n)
	}
	var keys int
	err := db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			keys++
		}
		return nil
	})
	if err != nil || keys != 80*256 {
		t.Fatalf("%d keys (want %d), err %v", keys, 80*256, err)
	}
}

// TestNextWait: a Pacer backs off while its store does not change, up to
// idleLooks intervals, and looks at once again after a change.
func TestNextWait(t *testing.T) {
	t.Parallel()
	const i = time.Second
	wait := i
	var got []time.Duration
	for _, changed := range []bool{false, false, false, false, false, true, false} {
		wait = nextWait(wait, i, changed)
		got = append(got, wait)
	}
	want := []time.Duration{2 * i, 4 * i, 8 * i, 8 * i, 8 * i, i, 2 * i}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("waits %v, want %v", got, want)
	}
}
