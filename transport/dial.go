package transport

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"

	"github.com/quic-go/quic-go"
)

// kindHeaders holds each kind's one-byte stream header; quic-go only reads
// the slices it is given, so they are shared.
var kindHeaders = [maxKind + 1]byte{0, byte(KindRaft), byte(KindRPC), byte(KindTunnel), byte(KindBlob), byte(KindJoin)}

// outConn is the one connection this endpoint keeps to a peer address. Its
// fields are set before ready is closed and never after.
type outConn struct {
	ready chan struct{}
	conn  *quic.Conn
	peer  Peer
	err   error
}

// Dial opens a stream of kind k to the endpoint at addr (host:port). It
// keeps one connection per address and reuses it: concurrent dials share
// one handshake, and a connection found dead is replaced. The server must
// present a mesh node certificate from the CA (see Stream.Peer). Dial waits
// for Run to start, and fails with ErrClosed once it has returned.
func (e *Endpoint) Dial(ctx context.Context, addr string, k Kind) (*Stream, error) {
	return e.dial(ctx, addr, k, false)
}

// DialSite is Dial for a peer of this node's own site (a site leader's
// calls to its members): a connection it makes idles out and pings at
// Config.SiteIdleTimeout and SiteKeepAlive. It shares Dial's connections:
// one already open to addr is used as it is.
func (e *Endpoint) DialSite(ctx context.Context, addr string, k Kind) (*Stream, error) {
	return e.dial(ctx, addr, k, true)
}

func (e *Endpoint) dial(ctx context.Context, addr string, k Kind, site bool) (*Stream, error) {
	if !k.valid() {
		return nil, fmt.Errorf("dial %s: %w", addr, ErrUnknownKind)
	}
	select {
	case <-e.ready:
	case <-e.stopped:
		return nil, ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	for attempt := 0; ; attempt++ {
		oc, err := e.connTo(ctx, addr, site)
		if err != nil {
			return nil, err
		}
		s, err := openStream(ctx, oc.conn, oc.peer, k)
		if err == nil {
			return s, nil
		}
		if oc.conn.Context().Err() != nil && attempt == 0 && ctx.Err() == nil {
			e.forget(addr, oc) // died between the check and the open: replace it once
			continue
		}
		return nil, fmt.Errorf("open %s stream to %s: %w", k, addr, err)
	}
}

// openStream opens a stream on conn and writes its kind byte, which is what
// lets the peer accept it.
func openStream(ctx context.Context, conn *quic.Conn, peer Peer, k Kind) (*Stream, error) {
	qs, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := qs.Write(kindHeaders[k : k+1]); err != nil {
		qs.CancelWrite(codeStreamClosed)
		qs.CancelRead(codeStreamClosed)
		return nil, err
	}
	return newStream(qs, conn, k, peer), nil
}

// connTo returns the live connection to addr, dialing it if there is none.
func (e *Endpoint) connTo(ctx context.Context, addr string, site bool) (*outConn, error) {
	for {
		e.mu.Lock()
		if e.closing {
			e.mu.Unlock()
			return nil, ErrClosed
		}
		oc := e.outbound[addr]
		if oc != nil {
			select {
			case <-oc.ready:
				if oc.err == nil && oc.conn.Context().Err() == nil {
					e.mu.Unlock()
					return oc, nil
				}
				delete(e.outbound, addr) // failed or dead: dial anew below
			default:
				e.mu.Unlock()
				select { // another Dial is shaking hands: share its result
				case <-oc.ready:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
				if oc.err != nil && !(isContextErr(oc.err) && ctx.Err() == nil) {
					return nil, oc.err
				}
				continue // it worked (check it is alive), or its dialer gave up but we have not
			}
		}
		oc = &outConn{ready: make(chan struct{})}
		e.outbound[addr] = oc
		e.mu.Unlock()

		e.handshake(ctx, addr, oc, site)
		close(oc.ready)
		if oc.err != nil {
			e.forget(addr, oc)
			return nil, oc.err
		}
		return oc, nil
	}
}

// handshake dials addr (at the site's timings when site is set) and fills
// in oc.
func (e *Endpoint) handshake(ctx context.Context, addr string, oc *outConn, site bool) {
	raddr, err := resolveUDP(ctx, addr, e.udp.LocalAddr().(*net.UDPAddr).IP.To4() != nil)
	if err != nil {
		oc.err = fmt.Errorf("dial %s: %w", addr, err)
		return
	}
	conn, err := e.tr.Dial(ctx, raddr, e.clientTLS, e.dialConfig(site))
	if err != nil {
		oc.err = fmt.Errorf("dial %s: %w", addr, err)
		return
	}
	e.mu.Lock()
	closing := e.closing
	e.mu.Unlock()
	if closing {
		_ = conn.CloseWithError(codeConnClosed, "shutting down")
		oc.err = ErrClosed
		return
	}
	oc.conn, oc.peer = conn, peerOfConn(conn)
	e.handshakes.Add(1)
	e.log.Debug("connected to peer", "peer", oc.peer.String(), "addr", addr)
}

// forget removes oc from the pool if it is still the entry for addr.
func (e *Endpoint) forget(addr string, oc *outConn) {
	e.mu.Lock()
	if e.outbound[addr] == oc {
		delete(e.outbound, addr)
	}
	e.mu.Unlock()
}

func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// resolveUDP resolves host:port, preferring IPv4 for an IPv4 socket.
func resolveUDP(ctx context.Context, addr string, v4 bool) (*net.UDPAddr, error) {
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		return net.UDPAddrFromAddrPort(ap), nil
	}
	host, port, err := splitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("address %q must be host:port: %w", addr, err)
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, err
	}
	for _, ip := range ips {
		if ip.Unmap().Is4() == v4 {
			return net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip.Unmap(), uint16(port))), nil
		}
	}
	if len(ips) == 0 || v4 {
		return nil, fmt.Errorf("no usable address for %s", host)
	}
	return net.UDPAddrFromAddrPort(netip.AddrPortFrom(ips[0], uint16(port))), nil
}

// DialPinned opens a stream of kind k (KindJoin, normally) to addr for a
// node that has no certificate yet: it presents none, and trusts the server
// only if the server's chain carries a CA certificate whose SHA-256 (hex, as
// pki.CA.Fingerprint writes it) is caFingerprint and the server's leaf
// verifies against that CA. It returns the stream and that CA certificate.
// The connection is its own and is closed when the stream is closed, at
// once: read the peer's reply before closing. A mismatch fails with
// ErrFingerprintMismatch.
func DialPinned(ctx context.Context, addr string, caFingerprint string, k Kind) (*Stream, *x509.Certificate, error) {
	return DialPinnedFrom(ctx, "", addr, caFingerprint, k)
}

// DialPinnedFrom is DialPinned from the local IP localIP (a node's
// --bind-addr on a host with several addresses); "" or an unspecified IP
// lets the system choose.
func DialPinnedFrom(ctx context.Context, localIP, addr string, caFingerprint string, k Kind) (*Stream, *x509.Certificate, error) {
	if !k.valid() {
		return nil, nil, fmt.Errorf("dial %s: %w", addr, ErrUnknownKind)
	}
	pc, err := dialPinnedConn(ctx, localIP, addr, caFingerprint, &quic.Config{MaxIncomingStreams: -1, MaxIncomingUniStreams: -1}, nil)
	if err != nil {
		return nil, nil, err
	}
	s, err := openStream(ctx, pc.conn, peerOfConn(pc.conn), k)
	if err != nil {
		pc.close()
		return nil, nil, fmt.Errorf("open %s stream to %s: %w", k, addr, err)
	}
	s.onClose = pc.close
	return s, pc.ca, nil
}

// pinnedConn is a connection of its own (socket, QUIC transport) to a hub
// member trusted by its CA fingerprint.
type pinnedConn struct {
	conn *quic.Conn
	ca   *x509.Certificate
	tr   *quic.Transport
	udp  *net.UDPConn
}

// close closes the connection, its transport and its socket.
func (pc *pinnedConn) close() {
	_ = pc.conn.CloseWithError(codeConnClosed, "")
	_ = pc.tr.Close()
	_ = pc.udp.Close()
}

// dialPinnedConn dials addr from localIP without a client certificate,
// trusting the server by caFingerprint (see DialPinned), on a socket of its
// own. With a logger, the socket's buffers are raised for bulk traffic
// (see raiseBuffers).
func dialPinnedConn(ctx context.Context, localIP, addr, caFingerprint string, qconf *quic.Config, log *slog.Logger) (*pinnedConn, error) {
	var ca *x509.Certificate
	tlsConf, err := pinnedTLS(caFingerprint, &ca)
	if err != nil {
		return nil, err
	}
	local := &net.UDPAddr{}
	if localIP != "" {
		if local.IP = net.ParseIP(localIP); local.IP == nil {
			return nil, fmt.Errorf("dial %s from %q: not an IP address", addr, localIP)
		}
	}
	var raddr *net.UDPAddr
	if local.IP != nil {
		raddr, err = resolveUDP(ctx, addr, local.IP.To4() != nil)
	} else {
		raddr, err = net.ResolveUDPAddr("udp", addr)
	}
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	udp, err := net.ListenUDP("udp", local)
	if err != nil {
		return nil, fmt.Errorf("dial %s from %s: %w", addr, localIP, err)
	}
	if log != nil {
		raiseBuffers(udp, log)
	}
	tr := &quic.Transport{Conn: udp}
	conn, err := tr.Dial(ctx, raddr, tlsConf, qconf)
	if err != nil {
		_ = tr.Close()
		_ = udp.Close()
		if errors.Is(err, ErrFingerprintMismatch) {
			return nil, fmt.Errorf("dial %s: %w", addr, ErrFingerprintMismatch)
		}
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	return &pinnedConn{conn: conn, ca: ca, tr: tr, udp: udp}, nil
}

// RetireConns is for after GetCertificate's certificate changed (a
// renewal). The connections dialed so far keep the streams they carry, but
// new streams go on new connections, made with the new certificate. The
// connections the previous call retired are closed now: they were made
// with a certificate two renewals old, which the hub no longer accepts (it
// keeps a name's two latest), so they would be refused anyway. A handshake
// in progress is left alone: it is retired by the next call.
func (e *Endpoint) RetireConns() {
	e.mu.Lock()
	old := e.retired
	e.retired = nil
	for addr, oc := range e.outbound {
		select {
		case <-oc.ready:
			if oc.conn != nil && oc.conn.Context().Err() == nil {
				e.retired = append(e.retired, oc.conn)
			}
			delete(e.outbound, addr)
		default:
		}
	}
	e.mu.Unlock()
	for _, c := range old {
		_ = c.CloseWithError(codeConnClosed, "certificate renewed")
	}
}
