package consensus

import (
	"fmt"
	"testing"

	"github.com/hashicorp/raft"
)

// discardSink is a raft.SnapshotSink that counts what it is given.
type discardSink struct{ n int64 }

var _ raft.SnapshotSink = (*discardSink)(nil)

func (s *discardSink) Write(p []byte) (int, error) { s.n += int64(len(p)); return len(p), nil }
func (s *discardSink) ID() string                  { return "bench" }
func (s *discardSink) Cancel() error               { return nil }
func (s *discardSink) Close() error                { return nil }

// BenchmarkSnapshotPersist measures writing a snapshot of a state of
// 20,000 objects and their creation events (the hub's after two
// 10,000-device tasks holds about four times as many keys).
func BenchmarkSnapshotPersist(b *testing.B) {
	f := newTestFSM(b, 0)
	const objects, batch = 20000, 500
	for i := 0; i < objects; i += batch {
		cmds := make([]*command, batch)
		for j := range cmds {
			cmds[j] = f.create("ns", fmt.Sprintf("o-%06d", i+j), i+j)
		}
		f.apply(b, cmds...)
	}
	var bytes int64
	for b.Loop() {
		snap, err := f.Snapshot()
		if err != nil {
			b.Fatal(err)
		}
		var sink discardSink
		if err := snap.Persist(&sink); err != nil {
			b.Fatal(err)
		}
		snap.Release()
		bytes = sink.n
	}
	b.SetBytes(bytes)
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/(2*objects), "µs/key")
}
