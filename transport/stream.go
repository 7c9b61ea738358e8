package transport

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
)

// Stream is one QUIC stream of a known kind, from or to a known peer. It is
// a net.Conn: Close ends both directions, deadlines work as on a TCP
// connection, and the addresses are the connection's UDP addresses.
type Stream struct {
	qs   *quic.Stream
	conn *quic.Conn
	kind Kind
	peer Peer

	closed    atomic.Bool  // Close was called
	writers   atomic.Int32 // Writes in progress, so Close can abort them
	closeOnce sync.Once
	done      chan struct{} // closed by Close
	onClose   func()        // optional: runs once after Close, e.g. to close a pinned connection
}

var _ net.Conn = (*Stream)(nil)

func newStream(qs *quic.Stream, conn *quic.Conn, k Kind, p Peer) *Stream {
	return &Stream{qs: qs, conn: conn, kind: k, peer: p, done: make(chan struct{})}
}

// Kind returns the stream's kind.
func (s *Stream) Kind() Kind { return s.kind }

// Peer returns the node at the other end, as its certificate names it. For
// a stream from a node without a certificate, Name is empty.
func (s *Stream) Peer() Peer { return s.peer }

// Read reads from the stream. A stream the peer refused fails with an
// error wrapping ErrUnauthorized, ErrRevoked, ErrUnknownKind or
// ErrCertificateRequired.
func (s *Stream) Read(p []byte) (int, error) {
	n, err := s.qs.Read(p)
	if err != nil && err != io.EOF {
		if s.closed.Load() {
			return n, net.ErrClosed
		}
		err = s.streamErr(err)
	}
	return n, err
}

// Write writes to the stream; it blocks while the peer's flow-control
// window is full.
func (s *Stream) Write(p []byte) (int, error) {
	s.writers.Add(1)
	defer s.writers.Add(-1)
	if s.closed.Load() {
		return 0, net.ErrClosed
	}
	n, err := s.qs.Write(p)
	if err != nil {
		if s.closed.Load() {
			return n, net.ErrClosed
		}
		err = s.streamErr(err)
	}
	return n, err
}

// CloseWrite ends the write direction (the peer reads io.EOF after the data
// written so far) and keeps the read direction open, like
// net.TCPConn.CloseWrite. It must not be called during a Write.
//
// A peer that has stopped reading (STOP_SENDING: it read what it wanted and
// closed) needs no end of the data: CloseWrite then returns nil, and what
// the peer wrote before closing is still there to read. quic-go returns an
// error for it, and a caller that wrote a request and half-closed after
// the callee had already read it, answered and closed (a callee faster
// than the caller's next statement, on a loaded machine) took the answer
// it was about to read for a failed call, and sent the request again.
func (s *Stream) CloseWrite() error {
	err := s.qs.Close()
	var se *quic.StreamError
	if err != nil && errors.As(context.Cause(s.qs.Context()), &se) && se.Remote {
		return nil
	}
	return err
}

// Close ends both directions. Data already written is still delivered
// unless a Write is in progress, which Close aborts; unread incoming data is
// discarded and the peer told to stop sending. It is safe to call more than
// once and concurrently with Read and Write.
func (s *Stream) Close() error {
	s.closeOnce.Do(func() {
		// With closed set first, a Write either sees it and returns, or was
		// counted in writers before this load and gets aborted.
		s.closed.Store(true)
		if s.writers.Load() > 0 {
			s.qs.CancelWrite(codeStreamClosed)
		} else {
			_ = s.qs.Close() // errors only if already reset: nothing to do then
		}
		s.qs.CancelRead(codeStreamClosed)
		close(s.done)
		if s.onClose != nil {
			s.onClose()
		}
	})
	return nil
}

// reset refuses the stream with code, in both directions.
func (s *Stream) reset(code quic.StreamErrorCode) {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.qs.CancelWrite(code)
		s.qs.CancelRead(code)
		close(s.done)
		if s.onClose != nil {
			s.onClose()
		}
	})
}

// LocalAddr returns this node's UDP address of the connection.
func (s *Stream) LocalAddr() net.Addr { return s.conn.LocalAddr() }

// RemoteAddr returns the peer's UDP address.
func (s *Stream) RemoteAddr() net.Addr { return s.conn.RemoteAddr() }

// SetDeadline sets the read and write deadlines.
func (s *Stream) SetDeadline(t time.Time) error { return s.qs.SetDeadline(t) }

// SetReadDeadline sets the deadline for Read.
func (s *Stream) SetReadDeadline(t time.Time) error { return s.qs.SetReadDeadline(t) }

// SetWriteDeadline sets the deadline for Write.
func (s *Stream) SetWriteDeadline(t time.Time) error { return s.qs.SetWriteDeadline(t) }
