package transport

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// udpRelay forwards datagrams between one client and a server, counting
// them each way.
type udpRelay struct {
	conn       *net.UDPConn // the client's side
	up         *net.UDPConn // towards the server
	fromServe  atomic.Int64
	fromClient atomic.Int64
	mu         sync.Mutex
	client     *net.UDPAddr
}

func newUDPRelay(t *testing.T, server *net.UDPAddr) *udpRelay {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	up, err := net.DialUDP("udp", nil, server)
	if err != nil {
		t.Fatal(err)
	}
	r := &udpRelay{conn: conn, up: up}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // client → server
		defer wg.Done()
		b := make([]byte, 64<<10)
		for {
			n, from, err := conn.ReadFromUDP(b)
			if err != nil {
				return
			}
			r.fromClient.Add(1)
			r.mu.Lock()
			r.client = from
			r.mu.Unlock()
			_, _ = up.Write(b[:n])
		}
	}()
	go func() { // server → client
		defer wg.Done()
		b := make([]byte, 64<<10)
		for {
			n, err := up.Read(b)
			if err != nil {
				return
			}
			r.fromServe.Add(1)
			r.mu.Lock()
			to := r.client
			r.mu.Unlock()
			if to != nil {
				_, _ = conn.WriteToUDP(b[:n], to)
			}
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		up.Close()
		wg.Wait()
	})
	return r
}
