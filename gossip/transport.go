package gossip

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

const (
	// maxPacket is the largest UDP packet memberlist sends.
	maxPacket = 65536
	// udpRecvBuf is the socket receive buffer asked for (halved until the
	// kernel grants it), as memberlist's own transport does.
	udpRecvBuf = 2 << 20
	// bindAttempts bounds the tries for a TCP and UDP port pair when the
	// port is chosen by the kernel (port 0).
	bindAttempts = 10
)

// transport is memberlist's network transport: TCP for streams, UDP for
// packets on the same port, as memberlist.NetTransport. It differs in one
// thing: a packet is read into one reused buffer and handed to memberlist
// in a copy of its own size. NetTransport reads each packet into a fresh
// 64 KiB buffer, which memberlist keeps alive while it holds any part of
// the message: with thousands of members in a process (e2e/otascale) that
// was most of gossip's memory and of the garbage collector's work.
type transport struct {
	tcp      *net.TCPListener
	udp      *net.UDPConn
	packetCh chan *memberlist.Packet
	streamCh chan net.Conn
	log      *slog.Logger
	deaf     *atomic.Bool // when set and true, drop what arrives (Gossip.deaf)

	closed atomic.Bool
	wg     sync.WaitGroup
}

var _ memberlist.NodeAwareTransport = (*transport)(nil)

// newTransport binds TCP and UDP on addr:port (port 0: a free port that
// both protocols have) and starts reading; while deaf (if not nil) holds
// true, what arrives is dropped.
func newTransport(addr string, port int, deaf *atomic.Bool, logger *slog.Logger) (*transport, error) {
	ip := net.ParseIP(addr)
	if ip == nil {
		return nil, fmt.Errorf("bind address %q is not an IP address", addr)
	}
	attempts := 1
	if port == 0 {
		attempts = bindAttempts
	}
	var err error
	for range attempts {
		var t *transport
		if t, err = bind(ip, port, logger); err == nil {
			t.deaf = deaf
			t.wg.Add(2)
			go t.readPackets()
			go t.acceptStreams()
			return t, nil
		}
	}
	return nil, err
}

func bind(ip net.IP, port int, logger *slog.Logger) (*transport, error) {
	tcp, err := net.ListenTCP("tcp", &net.TCPAddr{IP: ip, Port: port})
	if err != nil {
		return nil, err
	}
	port = tcp.Addr().(*net.TCPAddr).Port
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: ip, Port: port})
	if err != nil {
		tcp.Close()
		return nil, err
	}
	for size := udpRecvBuf; size > 0; size /= 2 {
		if udp.SetReadBuffer(size) == nil {
			break
		}
	}
	return &transport{
		tcp: tcp, udp: udp, log: logger,
		packetCh: make(chan *memberlist.Packet),
		streamCh: make(chan net.Conn),
	}, nil
}

// port is the bound port, TCP and UDP alike.
func (t *transport) port() int { return t.tcp.Addr().(*net.TCPAddr).Port }

// FinalAdvertiseAddr returns ip:port when ip is set (port 0: the bound
// one), else the bound address, which must then be a specific one.
func (t *transport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	if port == 0 {
		port = t.port()
	}
	if ip != "" {
		a := net.ParseIP(ip)
		if a == nil {
			return nil, 0, fmt.Errorf("advertise address %q is not an IP address", ip)
		}
		if a4 := a.To4(); a4 != nil {
			a = a4
		}
		return a, port, nil
	}
	bound := t.tcp.Addr().(*net.TCPAddr).IP
	if bound.IsUnspecified() {
		return nil, 0, errors.New("gossip is bound to every address: set the address to advertise")
	}
	if b4 := bound.To4(); b4 != nil {
		bound = b4
	}
	return bound, port, nil
}

// WriteTo sends one packet to addr ("ip:port").
func (t *transport) WriteTo(b []byte, addr string) (time.Time, error) {
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		_, err = t.udp.WriteToUDPAddrPort(b, ap)
		return time.Now(), err
	}
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return time.Time{}, err
	}
	_, err = t.udp.WriteTo(b, ua)
	return time.Now(), err
}

// WriteToAddress sends one packet to a.
func (t *transport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	return t.WriteTo(b, a.Addr)
}

// PacketCh delivers the packets received.
func (t *transport) PacketCh() <-chan *memberlist.Packet { return t.packetCh }

// DialTimeout opens a stream to addr.
func (t *transport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	return d.Dial("tcp", addr)
}

// DialAddressTimeout opens a stream to a.
func (t *transport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.DialTimeout(a.Addr, timeout)
}

// StreamCh delivers the streams accepted.
func (t *transport) StreamCh() <-chan net.Conn { return t.streamCh }

// Shutdown closes the sockets and waits for the readers to stop.
func (t *transport) Shutdown() error {
	t.closed.Store(true)
	t.tcp.Close()
	t.udp.Close()
	t.wg.Wait()
	return nil
}

func (t *transport) readPackets() {
	defer t.wg.Done()
	buf := make([]byte, maxPacket)
	for {
		n, from, err := t.udp.ReadFromUDPAddrPort(buf)
		ts := time.Now()
		if err != nil {
			if t.closed.Load() {
				return
			}
			t.log.Warn("read a gossip packet", "err", err)
			continue
		}
		if n < 1 || t.deaf != nil && t.deaf.Load() {
			continue
		}
		pkt := make([]byte, n)
		copy(pkt, buf[:n])
		t.packetCh <- &memberlist.Packet{Buf: pkt, From: net.UDPAddrFromAddrPort(from), Timestamp: ts}
	}
}

func (t *transport) acceptStreams() {
	defer t.wg.Done()
	delay := time.Duration(0)
	for {
		c, err := t.tcp.AcceptTCP()
		if err != nil {
			if t.closed.Load() {
				return
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			t.log.Warn("accept a gossip stream", "err", err, "retry_in", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		if t.deaf != nil && t.deaf.Load() {
			_ = c.Close()
			continue
		}
		t.streamCh <- c
	}
}
