package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"golang.org/x/sync/errgroup"
)

// headerTimeout bounds how long an accepted stream may take to deliver its
// kind byte. The opener writes it at open time, so it normally arrives with
// the stream itself.
const headerTimeout = 10 * time.Second

// errRateLimited refuses a connection attempt over its source's budget.
var errRateLimited = errors.New("too many connection attempts from this source")

// Handler serves one accepted stream. ctx is cancelled when the Endpoint
// shuts down; the stream is closed when the handler returns.
type Handler func(ctx context.Context, s *Stream)

// Endpoint is a node's QUIC endpoint: one UDP socket that accepts streams
// from peers and dials them.
type Endpoint struct {
	cfg       Config
	log       *slog.Logger
	udp       *net.UDPConn
	advertise string
	limiter   *sourceLimiter
	serverTLS *tls.Config
	clientTLS *tls.Config
	handlers  [maxKind + 1]atomic.Pointer[Handler]

	running atomic.Bool
	ready   chan struct{}   // closed once Run has started the QUIC transport
	stopped chan struct{}   // closed when Run returns
	tr      *quic.Transport // set before ready is closed

	mu       sync.Mutex
	closing  bool
	outbound map[string]*outConn
	inbound  map[*quic.Conn]struct{}
	retired  []*quic.Conn // dialed before the last RetireConns; closed at the next

	handshakes atomic.Int64 // outbound handshakes completed, for tests
	closeOnce  sync.Once
	closeErr   error
}

// New validates cfg, binds the UDP socket (so Addr is known) and raises its
// buffers. It starts no goroutines: Run does.
func New(cfg Config) (*Endpoint, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("component", "transport")
	laddr, err := net.ResolveUDPAddr("udp", cfg.BindAddr)
	if err != nil {
		return nil, fmt.Errorf("resolve --bind-addr %s: %w", cfg.BindAddr, err)
	}
	udp, err := net.ListenUDP("udp", laddr)
	if err != nil {
		return nil, fmt.Errorf("bind %s: %w", cfg.BindAddr, err)
	}
	raiseBuffers(udp, logger)
	e := &Endpoint{
		cfg:       cfg,
		log:       logger,
		udp:       udp,
		advertise: advertiseAddr(cfg.AdvertiseAddr, udp.LocalAddr().(*net.UDPAddr), net.InterfaceAddrs),
		limiter:   newSourceLimiter(cfg.HandshakesPerSecondPerSource, cfg.HandshakeBurstPerSource),
		ready:     make(chan struct{}),
		stopped:   make(chan struct{}),
		outbound:  make(map[string]*outConn),
		inbound:   make(map[*quic.Conn]struct{}),
	}
	e.serverTLS = e.newServerTLS()
	e.clientTLS = e.newClientTLS()
	return e, nil
}

// Addr returns the bound UDP address.
func (e *Endpoint) Addr() net.Addr { return e.udp.LocalAddr() }

// AdvertiseAddr returns the host:port other nodes should dial.
func (e *Endpoint) AdvertiseAddr() string { return e.advertise }

// Handle registers h for incoming streams of kind k, replacing any earlier
// handler. Register before Run: a stream of a kind without a handler is
// refused with ErrUnknownKind.
func (e *Endpoint) Handle(k Kind, h func(ctx context.Context, s *Stream)) {
	if !k.valid() {
		return
	}
	if h == nil {
		e.handlers[k].Store(nil)
		return
	}
	hh := Handler(h)
	e.handlers[k].Store(&hh)
}

// Close releases the socket of an Endpoint whose Run was never called.
// After Run has started, Run owns the socket and Close does nothing.
func (e *Endpoint) Close() error {
	if e.running.Load() {
		return nil
	}
	return e.closeSocket()
}

func (e *Endpoint) closeSocket() error {
	e.closeOnce.Do(func() { e.closeErr = e.udp.Close() })
	return e.closeErr
}

// Run serves until ctx is done: it accepts connections and streams and runs
// each stream's handler in a goroutine it owns. On return every connection,
// the QUIC transport and the socket are closed.
func (e *Endpoint) Run(ctx context.Context) (err error) {
	if !e.running.CompareAndSwap(false, true) {
		return errors.New("transport: Run called twice")
	}
	defer close(e.stopped)
	tr := &quic.Transport{Conn: e.udp, ConnContext: e.connContext}
	if e.cfg.StatelessResetKey != nil {
		k := quic.StatelessResetKey(*e.cfg.StatelessResetKey)
		tr.StatelessResetKey = &k
	}
	defer func() { err = errors.Join(err, tr.Close(), e.closeSocket()) }()

	var ln *quic.Listener
	if e.cfg.GetCertificate != nil { // a join-only client accepts nothing
		if ln, err = tr.Listen(e.serverTLS, e.listenConfig()); err != nil {
			e.shutdown(nil)
			return fmt.Errorf("listen on %s: %w", e.Addr(), err)
		}
	}
	e.tr = tr
	close(e.ready)
	e.log.Info("QUIC endpoint running", "addr", e.Addr().String(), "advertise", e.advertise, "accepting", ln != nil)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		<-gctx.Done()
		e.shutdown(ln)
		return nil
	})
	if ln != nil {
		g.Go(func() error { return e.acceptConns(gctx, g, ln) })
	}
	return g.Wait()
}

// listenConfig is the listener's QUIC configuration. It serves the
// streams its peers open and hands their credit back in batches
// (streamCredit); it sends no keep-alives (the dialer does) and accepts
// the longer of the idle timeouts of Dial and DialSite.
func (e *Endpoint) listenConfig() *quic.Config {
	c := e.quicConfig(max(e.cfg.IdleTimeout, e.cfg.SiteIdleTimeout), 0)
	c.MaxIncomingStreams, c.RequireStreamCreditRelease = e.cfg.MaxIncomingStreams, true
	return c
}

// dialConfig is the QUIC configuration of a connection this endpoint
// dials: it accepts no streams (the dialer opens, the listener serves) and
// sends the keep-alives, at the site's timings for DialSite.
func (e *Endpoint) dialConfig(site bool) *quic.Config {
	idle, keepAlive := e.cfg.IdleTimeout, e.cfg.KeepAlive
	if site {
		idle, keepAlive = e.cfg.siteTimings()
	}
	c := e.quicConfig(idle, keepAlive)
	c.MaxIncomingStreams = -1
	return c
}

func (e *Endpoint) quicConfig(idle, keepAlive time.Duration) *quic.Config {
	return &quic.Config{
		MaxIdleTimeout:                 idle,
		KeepAlivePeriod:                keepAlive,
		MaxIncomingUniStreams:          -1,
		MaxStreamReceiveWindow:         e.cfg.MaxStreamReceiveWindow,
		MaxConnectionReceiveWindow:     e.cfg.MaxConnectionReceiveWindow,
		InitialConnectionReceiveWindow: e.cfg.InitialConnectionReceiveWindow,
	}
}

// connContext runs for each connection attempt before any cryptography and
// refuses sources over their handshake budget.
func (e *Endpoint) connContext(ctx context.Context, info *quic.ClientInfo) (context.Context, error) {
	if !e.limiter.allow(info.RemoteAddr, time.Now()) {
		e.log.Debug("connection attempt refused: over the handshake rate", "addr", info.RemoteAddr.String())
		return nil, errRateLimited
	}
	return ctx, nil
}

// shutdown stops new work and closes every connection, which ends every
// stream and so every handler blocked on one.
func (e *Endpoint) shutdown(ln *quic.Listener) {
	e.mu.Lock()
	e.closing = true
	conns := make([]*quic.Conn, 0, len(e.inbound)+len(e.outbound))
	for c := range e.inbound {
		conns = append(conns, c)
	}
	for _, oc := range e.outbound {
		select {
		case <-oc.ready:
			if oc.conn != nil {
				conns = append(conns, oc.conn)
			}
		default: // handshake in progress: it sees closing when done, and tr.Close aborts it
		}
	}
	clear(e.outbound)
	conns = append(conns, e.retired...)
	e.retired = nil
	e.mu.Unlock()
	if ln != nil {
		_ = ln.Close()
	}
	for _, c := range conns {
		_ = c.CloseWithError(codeConnClosed, "shutting down")
	}
}

// acceptConns accepts connections until the listener closes, serving each
// in a goroutine of g.
func (e *Endpoint) acceptConns(ctx context.Context, g *errgroup.Group, ln *quic.Listener) error {
	for {
		conn, err := ln.Accept(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("accept QUIC connection: %w", err)
		}
		e.mu.Lock()
		if e.closing {
			e.mu.Unlock()
			_ = conn.CloseWithError(codeConnClosed, "shutting down")
			continue
		}
		e.inbound[conn] = struct{}{}
		e.mu.Unlock()
		g.Go(func() error {
			e.serveConn(ctx, g, conn)
			return nil
		})
	}
}

// serveConn accepts the streams of one connection until it closes.
func (e *Endpoint) serveConn(ctx context.Context, g *errgroup.Group, conn *quic.Conn) {
	defer func() {
		e.mu.Lock()
		delete(e.inbound, conn)
		e.mu.Unlock()
	}()
	peer := peerOfConn(conn)
	log := e.log.With("peer", peer.String(), "addr", conn.RemoteAddr().String())
	log.Debug("peer connected", "role", peer.Role)
	credit := newStreamCredit(e.cfg.MaxIncomingStreams)
	for {
		qs, err := conn.AcceptStream(ctx)
		if err != nil {
			log.Debug("peer connection ended", "err", err)
			return
		}
		credit.accepted(qs)
		g.Go(func() error {
			e.serveStream(ctx, conn, peer, qs, log)
			return nil
		})
	}
}

// serveStream reads the kind byte, admits the stream and runs its handler.
func (e *Endpoint) serveStream(ctx context.Context, conn *quic.Conn, peer Peer, qs *quic.Stream, log *slog.Logger) {
	s := newStream(qs, conn, 0, peer)
	var b [1]byte
	_ = qs.SetReadDeadline(time.Now().Add(headerTimeout))
	if _, err := io.ReadFull(qs, b[:]); err != nil {
		s.reset(codeStreamShutdown)
		return
	}
	_ = qs.SetReadDeadline(time.Time{})
	s.kind = Kind(b[0])
	h, code, why := e.admit(peer, s.kind)
	if h == nil {
		level := slog.LevelWarn // an authenticated peer refused: worth an operator's look
		if peer.Name == "" || code == codeStreamUnknownKind {
			level = slog.LevelDebug // anyone can send these: not worth a line each
		}
		log.Log(ctx, level, "stream refused", "kind", s.kind.String(), "reason", why)
		s.reset(code)
		if code == codeStreamRevoked {
			_ = conn.CloseWithError(codeConnRevoked, "certificate revoked")
		}
		return
	}
	defer s.Close()
	(*h)(ctx, s)
}

// admit decides whether peer may open a stream of kind k, returning its
// handler, or the refusal code and why.
func (e *Endpoint) admit(peer Peer, k Kind) (*Handler, quic.StreamErrorCode, error) {
	var h *Handler
	if k.valid() {
		h = e.handlers[k].Load()
	}
	switch {
	case h == nil:
		return nil, codeStreamUnknownKind, ErrUnknownKind
	case peer.Name == "" && !e.anonymousOK(k):
		return nil, codeStreamCertRequired, ErrCertificateRequired
	case peer.Name != "" && e.cfg.Revoked != nil && e.cfg.Revoked(peer):
		return nil, codeStreamRevoked, ErrRevoked
	}
	if e.cfg.Authorize != nil {
		if err := e.cfg.Authorize(peer, k); err != nil {
			return nil, codeStreamUnauthorized, err
		}
	}
	return h, 0, nil
}

// anonymousOK reports whether a connection without a certificate may open
// a stream of kind k.
func (e *Endpoint) anonymousOK(k Kind) bool {
	if e.cfg.AnonymousKinds == nil {
		return k == KindJoin
	}
	return slices.Contains(e.cfg.AnonymousKinds, k)
}

// peerOfConn is the peer named by the connection's verified certificate,
// or an anonymous Peer when it presented none.
func peerOfConn(conn *quic.Conn) Peer {
	var p Peer
	if certs := conn.ConnectionState().TLS.PeerCertificates; len(certs) > 0 {
		p, _ = PeerFromCert(certs[0]) // verified in the handshake
	}
	p.Addr = conn.RemoteAddr()
	return p
}

// ConnectionCount returns how many QUIC connections are open: dialed by
// this endpoint plus accepted by it.
func (e *Endpoint) ConnectionCount() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := len(e.inbound)
	for _, c := range e.retired {
		if c.Context().Err() == nil {
			n++
		}
	}
	for _, oc := range e.outbound {
		select {
		case <-oc.ready:
			if oc.conn != nil && oc.conn.Context().Err() == nil {
				n++
			}
		default:
		}
	}
	return n
}

// CloseRevoked closes every open connection whose peer Config.Revoked now
// reports revoked, in both directions, and returns how many it closed. Call
// it after the revocation list changes: without it a revoked peer keeps its
// open connection (though every new stream on it is refused).
func (e *Endpoint) CloseRevoked() int {
	if e.cfg.Revoked == nil {
		return 0
	}
	e.mu.Lock()
	var conns []*quic.Conn
	for c := range e.inbound {
		if p := peerOfConn(c); p.Name != "" && e.cfg.Revoked(p) {
			conns = append(conns, c)
		}
	}
	for _, oc := range e.outbound {
		select {
		case <-oc.ready:
			if oc.conn != nil && e.cfg.Revoked(oc.peer) {
				conns = append(conns, oc.conn)
			}
		default:
		}
	}
	e.mu.Unlock()
	for _, c := range conns {
		_ = c.CloseWithError(codeConnRevoked, "certificate revoked")
	}
	return len(conns)
}
