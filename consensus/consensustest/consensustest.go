// Package consensustest gives tests of other packages a real object store:
// a one-member Raft group in a temporary directory, on an in-memory Raft
// transport, with a sealing key for secret fields, as a hub has.
package consensustest

import (
	"context"
	"crypto/rand"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/outpost-mesh/outpost/consensus"
	"github.com/outpost-mesh/outpost/internal/seal"
)

// NewStore starts a one-member group whose registry register fills, waits
// until it leads, and returns its store. The group stops on cleanup.
func NewStore(tb testing.TB, register func(*consensus.Registry) error) *consensus.Store {
	tb.Helper()
	reg := consensus.NewRegistry()
	if err := register(reg); err != nil {
		tb.Fatal(err)
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	box, err := seal.New(key)
	if err != nil {
		tb.Fatal(err)
	}
	cfg := consensus.DefaultConfig()
	cfg.ID, cfg.Dir, cfg.Bootstrap, cfg.Sealer = "hub", tb.TempDir(), true, box
	_, cfg.Transport = raft.NewInmemTransport("hub")
	cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = 50*time.Millisecond, 50*time.Millisecond, 50*time.Millisecond
	g, err := consensus.New(cfg, reg)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	tb.Cleanup(func() { cancel(); <-done })
	deadline := time.Now().Add(10 * time.Second)
	for !g.IsLeader() {
		if time.Now().After(deadline) {
			tb.Fatal("raft group never elected a leader")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return g.Store()
}
