package transport

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"
)

// A connection DialSite makes pings at the site's keep-alive, not the
// endpoint's, and outlives the endpoint's idle timeout; one Dial makes
// keeps the endpoint's timings.
func TestDialSiteUsesTheSiteTimings(t *testing.T) {
	t.Parallel()
	ca := newCA(t)
	timings := func(c Config) Config {
		c.IdleTimeout, c.KeepAlive = 2*time.Second, 200*time.Millisecond
		c.SiteIdleTimeout, c.SiteKeepAlive = 8*time.Second, 2*time.Second
		return c
	}
	server := start(t, timings(testConfig(ca, nodeCert(t, ca, "s1-n01", "s1", RoleEdge))), allKinds(echo))
	type dialer struct {
		relay  *udpRelay
		client *Endpoint
		dial   func(context.Context, string, Kind) (*Stream, error)
	}
	var ds []dialer
	for i, site := range []bool{false, true} {
		relay := newUDPRelay(t, server.Addr().(*net.UDPAddr))
		client := start(t, timings(testConfig(ca, nodeCert(t, ca, fmt.Sprintf("s1-n0%d", 2+i), "s1", RoleEdge))), nil)
		dial := client.Dial
		if site {
			dial = client.DialSite
		}
		ds = append(ds, dialer{relay, client, dial})
	}
	call := func(d dialer) {
		t.Helper()
		s, err := d.dial(t.Context(), d.relay.conn.LocalAddr().String(), KindRPC)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := exchange(s, "x"); err != nil || got != "rpc:x" {
			t.Fatalf("call: %q, %v", got, err)
		}
	}
	// After a first call and 2.5 s (the connection's path MTU probes, and
	// a first ping at either timing), count what each client sends in 3 s
	// of idling, past the endpoint's idle timeout.
	var idle [2]int64
	var g errgroup.Group
	for i, d := range ds {
		g.Go(func() error {
			call(d)
			time.Sleep(2500 * time.Millisecond)
			before := d.relay.fromClient.Load()
			time.Sleep(3 * time.Second)
			idle[i] = d.relay.fromClient.Load() - before
			return nil
		})
	}
	_ = g.Wait()
	for i, d := range ds {
		call(d)
		if n := d.client.handshakes.Load(); n != 1 {
			t.Fatalf("dialer %d made %d handshakes, want 1: its idle connection was closed", i, n)
		}
	}
	t.Logf("packets sent while idle for 3 s: Dial %d, DialSite %d", idle[0], idle[1])
	// Unloaded, 14 or 15 against 1; on a loaded machine a late
	// acknowledgement makes a ping's probe go again, so the bound is a
	// ratio far below the timings' tenfold.
	if idle[0] < 8 || 2*idle[1] > idle[0] {
		t.Fatalf("packets sent while idle for 3 s: Dial %d (pings every 200 ms: want 8 or more), DialSite %d (every 2 s: want at most half of Dial's)", idle[0], idle[1])
	}
}
