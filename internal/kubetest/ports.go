package kubetest

import (
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
)

// PortPair returns two adjacent TCP ports free on 127.0.0.1 now, for a
// test that gives them to code that binds them later (a hub's tunnel
// ports). They are picked below the kernel's ephemeral range: a port that
// net.Listen(":0") handed out and gave back can be taken, before the code
// binds it, by any process's outgoing connection (a parallel test's
// client), which failed TestVirtualCluster with "tunnel port in use".
func PortPair(tb testing.TB) (first, last int) {
	tb.Helper()
	low := 32768 // the kernel's default first ephemeral port
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				low = n
			}
		}
	}
	const from = 20000
	if low-2 <= from {
		tb.Fatalf("the ephemeral port range starts at %d: no room below it for test ports", low)
	}
	for range 100 {
		p := from + rand.IntN(low-2-from)
		a, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue
		}
		b, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p+1)))
		a.Close()
		if err == nil {
			b.Close()
			return p, p + 1
		}
	}
	tb.Fatal("no two adjacent free ports below the ephemeral range")
	return 0, 0
}
