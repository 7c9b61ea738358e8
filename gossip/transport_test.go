package gossip

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"strconv"
	"testing"
	"time"
)

// TestTransportPacketsAndStreams: packets arrive whole, each in a buffer
// of its own size (not a 64 KiB one kept alive with it); streams are
// accepted; the advertised address is the bound one unless one is given.
func TestTransportPacketsAndStreams(t *testing.T) {
	a, err := newTransport("127.0.0.1", 0, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown()
	b, err := newTransport("127.0.0.1", 0, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Shutdown()
	bAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(b.port()))

	msgs := [][]byte{[]byte("ping"), bytes.Repeat([]byte{7}, 1400)}
	for _, m := range msgs {
		if _, err := a.WriteTo(m, bAddr); err != nil {
			t.Fatal(err)
		}
		select {
		case p := <-b.PacketCh():
			if !bytes.Equal(p.Buf, m) || cap(p.Buf) != len(m) {
				t.Fatalf("got %d bytes (cap %d), want %d", len(p.Buf), cap(p.Buf), len(m))
			}
			if p.From.String() != net.JoinHostPort("127.0.0.1", strconv.Itoa(a.port())) {
				t.Fatalf("from %s", p.From)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no packet")
		}
	}

	c, err := a.DialTimeout(bAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("push-pull")); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-b.StreamCh():
		got := make([]byte, 9)
		if _, err := io.ReadFull(s, got); err != nil || string(got) != "push-pull" {
			t.Fatalf("stream read %q, %v", got, err)
		}
		s.Close()
	case <-time.After(10 * time.Second):
		t.Fatal("no stream")
	}

	ip, port, err := b.FinalAdvertiseAddr("", 0)
	if err != nil || !ip.Equal(net.ParseIP("127.0.0.1")) || port != b.port() {
		t.Fatalf("advertise %v:%d, %v", ip, port, err)
	}
	if ip, port, err = b.FinalAdvertiseAddr("10.1.2.3", 7946); err != nil || ip.String() != "10.1.2.3" || port != 7946 {
		t.Fatalf("explicit advertise %v:%d, %v", ip, port, err)
	}
	if _, _, err = b.FinalAdvertiseAddr("not-an-ip", 1); err == nil {
		t.Fatal("a bad advertise address was accepted")
	}
	any, err := newTransport("0.0.0.0", 0, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer any.Shutdown()
	if _, _, err := any.FinalAdvertiseAddr("", 0); err == nil {
		t.Fatal("an unspecified bind address was advertised")
	}
}
