package transport

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/outpost-mesh/outpost/internal/logbridge"
)

// countFSM sums the uint64s applied to it.
type countFSM struct{ n, sum atomic.Uint64 }

var _ raft.FSM = (*countFSM)(nil)

func (f *countFSM) Apply(l *raft.Log) any {
	f.n.Add(1)
	f.sum.Add(binary.BigEndian.Uint64(l.Data))
	return nil
}

func (f *countFSM) Snapshot() (raft.FSMSnapshot, error) { return noSnapshot{}, nil }
func (f *countFSM) Restore(rc io.ReadCloser) error      { return rc.Close() }

type noSnapshot struct{}

func (noSnapshot) Persist(sink raft.SnapshotSink) error { return sink.Close() }
func (noSnapshot) Release()                             {}

// raftMember is one server of a test Raft group.
type raftMember struct {
	r   *raft.Raft
	fsm *countFSM
}

// startRaft starts a Raft group of len(trans) servers over the given
// transports, bootstrapped from the first, with heartbeat and election
// timeouts of timing, and shuts it down when the test ends.
func startRaft(t testing.TB, trans []raft.Transport, timing time.Duration) []raftMember {
	t.Helper()
	var servers []raft.Server
	for i, tr := range trans {
		servers = append(servers, raft.Server{ID: raft.ServerID(fmt.Sprint("n", i)), Address: tr.LocalAddr()})
	}
	members := make([]raftMember, len(trans))
	for i, tr := range trans {
		conf := raft.DefaultConfig()
		conf.LocalID = servers[i].ID
		conf.HeartbeatTimeout = timing
		conf.ElectionTimeout = timing
		conf.LeaderLeaseTimeout = timing / 2
		conf.CommitTimeout = 5 * time.Millisecond
		conf.Logger = logbridge.HCLog(testLogger())
		store := raft.NewInmemStore()
		fsm := &countFSM{}
		r, err := raft.NewRaft(conf, fsm, store, store, raft.NewInmemSnapshotStore(), tr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := r.Shutdown().Error(); err != nil {
				t.Errorf("raft shutdown: %v", err)
			}
			if nt, ok := tr.(*raft.NetworkTransport); ok {
				nt.CloseStreams() // its pooled outbound connections: peers' readers end
			}
			if c, ok := tr.(io.Closer); ok {
				_ = c.Close()
			}
		})
		if i == 0 {
			if err := r.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
				t.Fatal(err)
			}
		}
		members[i] = raftMember{r: r, fsm: fsm}
	}
	return members
}

// leader waits for the group to elect a leader and returns it.
func leader(t testing.TB, members []raftMember) *raft.Raft {
	t.Helper()
	var l *raft.Raft
	eventually(t, "a leader", func() bool {
		for _, m := range members {
			if m.r.State() == raft.Leader {
				l = m.r
				return true
			}
		}
		return false
	})
	return l
}

// quicRaftTransports starts n endpoints with stream layers and returns
// raft transports over them.
func quicRaftTransports(t testing.TB, n int) []raft.Transport {
	t.Helper()
	ca := newCA(t)
	var trans []raft.Transport
	for i := range n {
		e, err := New(testConfig(ca, nodeCert(t, ca, fmt.Sprint("hub-", i), "hub", RoleHub)))
		if err != nil {
			t.Fatal(err)
		}
		layer := NewStreamLayer(e, "")
		run(t, e)
		trans = append(trans, raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
			Stream:  layer,
			MaxPool: 3,
			Timeout: 2 * time.Second,
			Logger:  logbridge.HCLog(testLogger()),
		}))
	}
	return trans
}

func TestRaftOverStreamLayer(t *testing.T) {
	t.Parallel()
	members := startRaft(t, quicRaftTransports(t, 3), 200*time.Millisecond)
	const entries = 50
	for i := 0; i < entries; {
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], uint64(i+1))
		err := leader(t, members).Apply(b[:], 5*time.Second).Error()
		switch {
		case err == nil:
			i++
		case errors.Is(err, raft.ErrLeadershipLost) || errors.Is(err, raft.ErrNotLeader):
			// A loaded machine can cost the leader its lease; the entry may
			// or may not have committed, so it is sent again and the check
			// below compares the members instead of exact totals.
		default:
			t.Fatalf("apply %d: %v", i, err)
		}
	}
	eventually(t, "every member to apply the same entries", func() bool {
		n, sum := members[0].fsm.n.Load(), members[0].fsm.sum.Load()
		for _, m := range members[1:] {
			if m.fsm.n.Load() != n || m.fsm.sum.Load() != sum {
				return false
			}
		}
		return n >= entries && sum >= entries*(entries+1)/2
	})
}

func TestStreamLayerAcceptAfterClose(t *testing.T) {
	t.Parallel()
	ca := newCA(t)
	e, err := New(testConfig(ca, nodeCert(t, ca, "hub-1", "hub", RoleHub)))
	if err != nil {
		t.Fatal(err)
	}
	layer := NewStreamLayer(e, "10.9.8.7:7443")
	run(t, e)
	if got := layer.Addr().String(); got != "10.9.8.7:7443" {
		t.Errorf("Addr() = %q, want the advertised address", got)
	}
	_ = layer.Close()
	_ = layer.Close()
	if _, err := layer.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: %v, want net.ErrClosed", err)
	}
	if _, err := layer.Dial(raft.ServerAddress(e.Addr().String()), time.Second); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Dial after Close: %v, want net.ErrClosed", err)
	}
}
