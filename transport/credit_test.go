package transport

import (
	"context"
	"io"
	"net"
	"testing"
	"time"
)

// A listener grants stream credit back in batches: sequential calls on
// one connection cost the server one packet each (the answer, carrying
// the acknowledgement of the request), not also a MAX_STREAMS packet per
// call that the caller must acknowledge.
func TestStreamCreditReturnsInBatches(t *testing.T) {
	t.Parallel()
	ca := newCA(t)
	server := start(t, testConfig(ca, nodeCert(t, ca, "s1-n01", "s1", RoleEdge)), allKinds(echo))
	relay := newUDPRelay(t, server.Addr().(*net.UDPAddr))
	client := start(t, testConfig(ca, nodeCert(t, ca, "s1-n00", "s1", RoleEdge)), nil)
	addr := relay.conn.LocalAddr().String()
	if got, err := dialExchange(t, client, addr); err != nil || got != "rpc:ping" {
		t.Fatalf("first call: %q, %v", got, err) // the handshake
	}
	before := relay.fromServe.Load()
	const calls = 64
	for i := range calls {
		s, err := client.Dial(t.Context(), addr, KindRPC)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := exchange(s, "x"); err != nil || got != "rpc:x" {
			t.Fatalf("call %d: %q, %v", i, got, err)
		}
	}
	sent := relay.fromServe.Load() - before
	t.Logf("the server sent %d packets for %d calls", sent, calls)
	if sent > calls*3/2 {
		t.Fatalf("the server sent %d packets for %d calls, want at most %d: a stream's credit costs a packet of its own", sent, calls, calls*3/2)
	}
}

// A peer never waits for credit held back: with a limit of 4 (a batch of
// 1), 40 streams kept open two at a time all get through.
func TestStreamCreditNeverBlocksThePeer(t *testing.T) {
	t.Parallel()
	server, client := limitedStreams(t, 4)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second) // held credit would block a Dial
	defer cancel()
	var open *Stream
	for i := range 40 {
		s, err := client.Dial(ctx, server.Addr().String(), KindRPC)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Write([]byte("y")); err != nil {
			t.Fatal(err)
		}
		if open != nil {
			if err := open.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadAll(open); err != nil {
				t.Fatalf("stream %d: %v", i-1, err)
			}
			open.Close()
		}
		open = s
	}
	if got, err := exchange(open, ""); err != nil || got != "rpc:y" {
		t.Fatalf("last stream: %q, %v", got, err)
	}
}

// limitedStreams starts an echoing server that takes at most limit
// streams from a peer at once, and a client.
func limitedStreams(t *testing.T, limit int64) (server, client *Endpoint) {
	t.Helper()
	ca := newCA(t)
	cfg := testConfig(ca, nodeCert(t, ca, "hub-1", "hub", RoleHub))
	cfg.MaxIncomingStreams = limit
	server = start(t, cfg, allKinds(echo))
	return server, start(t, testConfig(ca, nodeCert(t, ca, "edge-1", "a", RoleEdge)), nil)
}
