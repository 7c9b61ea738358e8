package transport

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/quic-go/quic-go"
	"golang.org/x/sync/errgroup"
)

// ReverseConfig configures DialReverse. Start from DefaultReverseConfig.
type ReverseConfig struct {
	// Addr is the hub member's QUIC address, host:port.
	Addr string
	// CAFingerprint pins the mesh CA (hex SHA-256, as in tokens): the hub
	// is trusted only if its chain carries that CA and its leaf verifies
	// against it.
	CAFingerprint string
	// LocalIP is the address to dial from; "" lets the system choose.
	LocalIP string
	// MaxIncomingStreams is how many streams the hub may have open towards
	// the dialer at once; more wait for one to end.
	MaxIncomingStreams int64
	// IdleTimeout closes the connection when nothing has been received for
	// this long; KeepAlive, shorter, keeps an idle one open.
	IdleTimeout time.Duration
	KeepAlive   time.Duration
	// MaxStreamReceiveWindow and MaxConnectionReceiveWindow cap the
	// dialer's QUIC flow-control windows (bytes); zero keeps quic-go's
	// defaults.
	MaxStreamReceiveWindow     uint64
	MaxConnectionReceiveWindow uint64
	// Logger receives the connection's logs. Nil discards.
	Logger *slog.Logger
}

// DefaultReverseConfig returns the settings an edge cluster agent uses.
func DefaultReverseConfig() ReverseConfig {
	return ReverseConfig{MaxIncomingStreams: 1024, IdleTimeout: 30 * time.Second, KeepAlive: 10 * time.Second}
}

// ReverseConn is a connection dialed, without a certificate, to a hub
// member, on which the hub opens streams towards the dialer
// (Stream.OpenReverse on the hub's side of the dialer's stream). It lets a
// host that accepts nothing (behind NAT, no inbound port) serve the hub.
type ReverseConn struct {
	pc   *pinnedConn
	peer Peer
	log  *slog.Logger
}

// DialReverse dials the hub member at cfg.Addr as DialPinned does, opens a
// stream of kind k on the new connection (the control stream, which must be
// one of the hub's Config.AnonymousKinds) and returns both. Call Serve to
// accept the hub's streams; Close (or the end of Serve) closes the
// connection and with it the control stream.
func DialReverse(ctx context.Context, cfg ReverseConfig, k Kind) (*ReverseConn, *Stream, error) {
	switch {
	case !k.valid():
		return nil, nil, fmt.Errorf("dial %s: %w", cfg.Addr, ErrUnknownKind)
	case cfg.MaxIncomingStreams <= 0:
		return nil, nil, fmt.Errorf("dial %s: MaxIncomingStreams %d must be positive", cfg.Addr, cfg.MaxIncomingStreams)
	case cfg.IdleTimeout <= 0 || cfg.KeepAlive <= 0 || cfg.KeepAlive >= cfg.IdleTimeout:
		return nil, nil, fmt.Errorf("dial %s: KeepAlive %s must be positive and shorter than IdleTimeout %s", cfg.Addr, cfg.KeepAlive, cfg.IdleTimeout)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "transport")
	qconf := &quic.Config{
		MaxIdleTimeout:             cfg.IdleTimeout,
		KeepAlivePeriod:            cfg.KeepAlive,
		MaxIncomingStreams:         cfg.MaxIncomingStreams,
		MaxIncomingUniStreams:      -1,
		MaxStreamReceiveWindow:     cfg.MaxStreamReceiveWindow,
		MaxConnectionReceiveWindow: cfg.MaxConnectionReceiveWindow,
	}
	pc, err := dialPinnedConn(ctx, cfg.LocalIP, cfg.Addr, cfg.CAFingerprint, qconf, log)
	if err != nil {
		return nil, nil, err
	}
	r := &ReverseConn{pc: pc, peer: peerOfConn(pc.conn), log: log.With("peer", peerOfConn(pc.conn).String())}
	s, err := openStream(ctx, pc.conn, r.peer, k)
	if err != nil {
		pc.close()
		return nil, nil, fmt.Errorf("open %s stream to %s: %w", k, cfg.Addr, err)
	}
	return r, s, nil
}

// Peer returns the hub member at the other end.
func (r *ReverseConn) Peer() Peer { return r.peer }

// CA returns the mesh CA certificate the hub's chain was pinned to.
func (r *ReverseConn) CA() *x509.Certificate { return r.pc.ca }

// Done is closed when the connection has ended.
func (r *ReverseConn) Done() <-chan struct{} { return r.pc.conn.Context().Done() }

// Close closes the connection, every stream on it, and its socket.
func (r *ReverseConn) Close() error {
	r.pc.close()
	return nil
}

// Serve accepts the streams the hub opens, reads each one's kind byte and
// runs h for it in a goroutine it owns; the stream is closed when h
// returns. It returns when the connection ends or ctx is done, after
// closing the connection and waiting for every handler (handlers must honour
// ctx or their stream).
func (r *ReverseConn) Serve(ctx context.Context, h Handler) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		select {
		case <-gctx.Done():
		case <-r.Done():
		}
		r.pc.close()
		return nil
	})
	var err error
	for {
		qs, aerr := r.pc.conn.AcceptStream(gctx)
		if aerr != nil {
			if ctx.Err() == nil {
				err = fmt.Errorf("connection to %s ended: %w", r.peer, aerr)
			}
			break
		}
		g.Go(func() error {
			s := newStream(qs, r.pc.conn, 0, r.peer)
			var b [1]byte
			_ = qs.SetReadDeadline(time.Now().Add(headerTimeout))
			if _, err := io.ReadFull(qs, b[:]); err != nil {
				s.reset(codeStreamShutdown)
				return nil
			}
			_ = qs.SetReadDeadline(time.Time{})
			s.kind = Kind(b[0])
			if !s.kind.valid() {
				r.log.Debug("stream refused", "kind", s.kind.String(), "reason", ErrUnknownKind)
				s.reset(codeStreamUnknownKind)
				return nil
			}
			defer s.Close()
			h(gctx, s)
			return nil
		})
	}
	r.pc.close()
	return errors.Join(err, g.Wait())
}

// OpenReverse opens a stream of kind k towards the peer on the connection
// the peer dialed for s. The peer accepts it only if it dialed with
// DialReverse and serves it; on any other connection the peer allows no
// streams and OpenReverse waits until ctx ends. It also waits while the
// peer's MaxIncomingStreams are all in use.
func (s *Stream) OpenReverse(ctx context.Context, k Kind) (*Stream, error) {
	if !k.valid() {
		return nil, fmt.Errorf("open reverse stream to %s: %w", s.peer, ErrUnknownKind)
	}
	ns, err := openStream(ctx, s.conn, s.peer, k)
	if err != nil {
		return nil, fmt.Errorf("open reverse %s stream to %s: %w", k, s.peer, err)
	}
	return ns, nil
}

// ConnDone is closed when the connection carrying s has ended.
func (s *Stream) ConnDone() <-chan struct{} { return s.conn.Context().Done() }
