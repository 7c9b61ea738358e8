package consensus

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb"
	"golang.org/x/sync/errgroup"
)

const (
	benchEntrySize     = 256 // bytes of data per entry
	benchApplyInFlight = 64  // concurrent Apply calls in BenchmarkRaftApply
)

// benchStores are the stores compared side by side: ours, and raft-boltdb
// with fsync on (NoSync false), the store most hashicorp/raft users run.
var benchStores = []struct {
	name string
	open func(b *testing.B, dir string) raftStore
}{
	{"badger", func(b *testing.B, dir string) raftStore {
		s, err := OpenLogStore(dir, nil, FootprintHub)
		noError(b, err)
		b.Cleanup(func() { noError(b, s.Close()) })
		return s
	}},
	{"bolt", func(b *testing.B, dir string) raftStore {
		s, err := raftboltdb.NewBoltStore(filepath.Join(dir, "raft.db"))
		noError(b, err)
		b.Cleanup(func() { noError(b, s.Close()) })
		return s
	}},
}

func BenchmarkLogStore(b *testing.B) {
	for _, st := range benchStores {
		b.Run("store="+st.name, func(b *testing.B) {
			for _, n := range []int{1, 64, 1024} {
				b.Run(fmt.Sprintf("op=StoreLogs/batch=%d", n), func(b *testing.B) {
					s := st.open(b, b.TempDir())
					logs := benchLogs(n)
					for next := uint64(1); b.Loop(); next += uint64(n) {
						setIndexes(logs, next)
						noError(b, s.StoreLogs(logs))
					}
					reportRate(b, n, "entries/s")
				})
			}

			b.Run("op=GetLog", func(b *testing.B) {
				const stored = 10_000
				s := st.open(b, b.TempDir())
				logs := benchLogs(1000)
				for next := uint64(1); next <= stored; next += uint64(len(logs)) {
					setIndexes(logs, next)
					noError(b, s.StoreLogs(logs))
				}
				var l raft.Log
				for i := uint64(0); b.Loop(); i++ {
					noError(b, s.GetLog(i%stored+1, &l))
				}
				reportRate(b, 1, "entries/s")
			})

			// Raft trims the head of its log after a snapshot: store a batch
			// (untimed), then delete the batch before it.
			b.Run("op=DeleteRange/range=1024", func(b *testing.B) {
				const n = 1024
				s := st.open(b, b.TempDir())
				logs := benchLogs(n)
				setIndexes(logs, 1)
				noError(b, s.StoreLogs(logs))
				for next := uint64(n + 1); b.Loop(); next += n {
					b.StopTimer()
					setIndexes(logs, next)
					noError(b, s.StoreLogs(logs))
					b.StartTimer()
					noError(b, s.DeleteRange(next-n, next-1))
				}
				reportRate(b, n, "entries/s")
			})
		})
	}
}

// BenchmarkRaftApply measures a three-node Raft group's Apply throughput and
// latency with benchApplyInFlight calls in flight, each store wrapped in
// raft.NewLogCache(512) as production wires it.
func BenchmarkRaftApply(b *testing.B) {
	for _, st := range benchStores {
		b.Run("store="+st.name, func(b *testing.B) {
			leader, fsm := newBenchRaftGroup(b, st.open)
			cmd := make([]byte, benchEntrySize)
			work := make(chan struct{})
			g, ctx := errgroup.WithContext(b.Context())
			var mu sync.Mutex
			var latencies []time.Duration
			for range benchApplyInFlight {
				g.Go(func() error {
					var mine []time.Duration
					for range work {
						start := time.Now()
						if err := leader.Apply(cmd, 10*time.Second).Error(); err != nil {
							return fmt.Errorf("apply: %w", err)
						}
						mine = append(mine, time.Since(start))
					}
					mu.Lock()
					defer mu.Unlock()
					latencies = append(latencies, mine...)
					return nil
				})
			}

			start := time.Now()
			for b.Loop() {
				select {
				case work <- struct{}{}:
				case <-ctx.Done(): // a worker failed; g.Wait returns its error
				}
			}
			close(work)
			noError(b, g.Wait())
			elapsed := time.Since(start) // includes the applies still in flight when b.Loop ended
			if applied := fsm.applied.Load(); applied < uint64(len(latencies)) {
				b.Fatalf("leader FSM applied %d commands, want %d", applied, len(latencies))
			}

			slices.Sort(latencies)
			b.ReportMetric(float64(len(latencies))/elapsed.Seconds(), "applies/s")
			b.ReportMetric(micros(latencies[len(latencies)/2]), "p50-µs")
			b.ReportMetric(micros(latencies[len(latencies)*99/100]), "p99-µs")
		})
	}
}

// newBenchRaftGroup starts a three-node Raft group over raft.InmemTransport
// with test timings, each node's log and stable store from open, and returns
// its leader with the leader's FSM. The group shuts down on b.Cleanup, before
// the stores close.
func newBenchRaftGroup(b *testing.B, open func(*testing.B, string) raftStore) (*raft.Raft, *benchFSM) {
	const size = 3
	var (
		servers    []raft.Server
		transports []*raft.InmemTransport
		stores     []raftStore
	)
	for i := range size {
		addr, tr := raft.NewInmemTransport("")
		servers = append(servers, raft.Server{ID: raft.ServerID(fmt.Sprintf("node%d", i)), Address: addr})
		transports = append(transports, tr)
		stores = append(stores, open(b, b.TempDir()))
	}
	for _, tr := range transports {
		for _, peer := range transports {
			tr.Connect(peer.LocalAddr(), peer)
		}
	}

	var (
		nodes []*raft.Raft
		fsms  []*benchFSM
	)
	b.Cleanup(func() {
		for _, r := range nodes {
			noError(b, r.Shutdown().Error())
		}
		for _, tr := range transports {
			noError(b, tr.Close())
		}
	})
	for i, srv := range servers {
		conf := raft.DefaultConfig()
		conf.LocalID = srv.ID
		conf.HeartbeatTimeout = 50 * time.Millisecond
		conf.ElectionTimeout = 50 * time.Millisecond
		conf.LeaderLeaseTimeout = 50 * time.Millisecond
		conf.CommitTimeout = 5 * time.Millisecond
		conf.SnapshotThreshold = 1 << 40 // measure the log path only
		conf.Logger = hclog.NewNullLogger()
		logs, err := raft.NewLogCache(512, stores[i])
		noError(b, err)
		fsm := new(benchFSM)
		r, err := raft.NewRaft(conf, fsm, logs, stores[i], raft.NewInmemSnapshotStore(), transports[i])
		noError(b, err)
		nodes, fsms = append(nodes, r), append(fsms, fsm)
	}
	noError(b, nodes[0].BootstrapCluster(raft.Configuration{Servers: servers}).Error())

	ctx, cancel := context.WithTimeout(b.Context(), 10*time.Second)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		for i, r := range nodes {
			if r.State() == raft.Leader {
				return r, fsms[i]
			}
		}
		select {
		case <-ctx.Done():
			b.Fatal("no leader elected")
		case <-tick.C:
		}
	}
}

// benchFSM only counts commands: the benchmarks measure Raft and its stores.
type benchFSM struct{ applied atomic.Uint64 }

func (f *benchFSM) Apply(*raft.Log) any { return f.applied.Add(1) }

func (*benchFSM) Snapshot() (raft.FSMSnapshot, error) {
	return nil, errors.New("benchFSM: no snapshots")
}

func (*benchFSM) Restore(rc io.ReadCloser) error {
	return errors.Join(errors.New("benchFSM: no snapshots"), rc.Close())
}

// benchLogs returns n command entries of benchEntrySize bytes, to be indexed
// with setIndexes. The stores copy what they store, so the entries are reused.
func benchLogs(n int) []*raft.Log {
	data := make([]byte, benchEntrySize)
	now := time.Now()
	logs := make([]*raft.Log, n)
	for i := range logs {
		logs[i] = &raft.Log{Term: 1, Type: raft.LogCommand, Data: data, AppendedAt: now}
	}
	return logs
}

// setIndexes numbers logs from first.
func setIndexes(logs []*raft.Log, first uint64) {
	for i, l := range logs {
		l.Index = first + uint64(i)
	}
}

// reportRate reports perOp units per timed second.
func reportRate(b *testing.B, perOp int, unit string) {
	b.ReportMetric(float64(b.N*perOp)/b.Elapsed().Seconds(), unit)
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
