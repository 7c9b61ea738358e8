package consensus

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"
)

// snapshotMagic starts every state snapshot; the digit is the format version.
const snapshotMagic = "OUTPOST-STATE-1\n"

// maxSnapshotRecord bounds one key or value read from a snapshot, so a
// corrupt length cannot make Restore allocate without limit.
const maxSnapshotRecord = 64 << 20

// fsmSnapshot streams one generation of the state as length-prefixed
// key/value records, ending with an empty key.
type fsmSnapshot struct {
	txn    *badger.Txn
	prefix []byte
}

var _ raft.FSMSnapshot = (*fsmSnapshot)(nil)

// Persist implements raft.FSMSnapshot.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := s.write(sink); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("persist snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) write(w io.Writer) error {
	bw := bufio.NewWriterSize(w, 256<<10)
	if _, err := bw.WriteString(snapshotMagic); err != nil {
		return err
	}
	// No prefetching: Badger would start a goroutine and copy the value
	// for each key, and nearly every value (an object or an event, under
	// the store's 4 KiB value threshold) sits in the table beside its key.
	it := s.txn.NewIterator(badger.IteratorOptions{Prefix: s.prefix})
	defer it.Close()
	var lenbuf [binary.MaxVarintLen64]byte
	writeRecord := func(b []byte) error {
		n := binary.PutUvarint(lenbuf[:], uint64(len(b)))
		if _, err := bw.Write(lenbuf[:n]); err != nil {
			return err
		}
		_, err := bw.Write(b)
		return err
	}
	for it.Rewind(); it.ValidForPrefix(s.prefix); it.Next() {
		item := it.Item()
		if err := writeRecord(item.Key()[len(s.prefix):]); err != nil {
			return err
		}
		if err := item.Value(writeRecord); err != nil {
			return err
		}
	}
	if err := writeRecord(nil); err != nil {
		return err
	}
	return bw.Flush()
}

// Release implements raft.FSMSnapshot.
func (s *fsmSnapshot) Release() { s.txn.Discard() }

// restoreState replaces the live state with a snapshot stream and returns
// the snapshot's applied index. Nothing is visible until the stream has
// been read to its end marker and the generation flip commits.
func restoreState(st *state, r io.Reader) (uint64, error) {
	br := bufio.NewReaderSize(r, 256<<10)
	magic := make([]byte, len(snapshotMagic))
	if _, err := io.ReadFull(br, magic); err != nil || string(magic) != snapshotMagic {
		return 0, fmt.Errorf("restore snapshot: not an Outpost state snapshot (header %q)", magic)
	}
	var oldGen uint64
	if err := st.db.View(func(txn *badger.Txn) (err error) { oldGen, err = st.gen(txn); return }); err != nil {
		return 0, err
	}
	newGen := oldGen + 1
	np := genPrefix(newGen)
	// A restore that crashed half-way may have left part of this generation.
	if err := st.db.DropPrefix(np); err != nil {
		return 0, fmt.Errorf("restore snapshot: clear generation %d: %w", newGen, err)
	}
	wb := st.db.NewWriteBatch()
	defer wb.Cancel()
	var applied uint64
	appliedKey := string([]byte{nsMeta}) + metaApplied
	for {
		k, err := readRecord(br)
		if err != nil {
			return 0, fmt.Errorf("restore snapshot: %w", err)
		}
		if len(k) == 0 {
			break
		}
		v, err := readRecord(br)
		if err != nil {
			return 0, fmt.Errorf("restore snapshot: value of %q: %w", k, err)
		}
		if string(k) == appliedKey && len(v) == 8 {
			applied = binary.BigEndian.Uint64(v)
		}
		if err := wb.Set(append(append([]byte{}, np...), k...), v); err != nil {
			return 0, fmt.Errorf("restore snapshot: %w", err)
		}
	}
	if err := wb.Flush(); err != nil {
		return 0, fmt.Errorf("restore snapshot: write: %w", err)
	}
	if err := st.db.Update(func(txn *badger.Txn) error {
		v := make([]byte, 8)
		binary.BigEndian.PutUint64(v, newGen)
		return txn.Set(curKey, v)
	}); err != nil {
		return 0, fmt.Errorf("restore snapshot: switch generation: %w", err)
	}
	if err := st.db.Sync(); err != nil {
		return 0, fmt.Errorf("restore snapshot: sync: %w", err)
	}
	// The new state is live; a failure here leaves only garbage that the
	// next restore's DropPrefix of its own generation does not touch, so
	// it is logged by the caller's health, not returned.
	_ = st.db.DropPrefix(genPrefix(oldGen))
	return applied, nil
}

func readRecord(r *bufio.Reader) ([]byte, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, io.ErrUnexpectedEOF
		}
		return nil, err
	}
	if n > maxSnapshotRecord {
		return nil, fmt.Errorf("record of %d bytes exceeds %d", n, maxSnapshotRecord)
	}
	b := make([]byte, n)
	_, err = io.ReadFull(r, b)
	return b, err
}
