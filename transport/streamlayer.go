package transport

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"github.com/quic-go/quic-go"
)

// StreamLayer carries hashicorp/raft's NetworkTransport over KindRaft
// streams of an Endpoint. Pass it to raft.NewNetworkTransportWithConfig.
//
// Each raft connection is one QUIC stream. The Endpoint's KindRaft handler
// hands an accepted stream to Accept and then waits, without touching it,
// until raft closes it (or the layer or endpoint shuts down, in which case
// it closes the stream so raft's reader ends): the handler goroutine
// belongs to the Endpoint's Run, so the stream's lifetime stays accounted
// for there.
type StreamLayer struct {
	e         *Endpoint
	addr      streamAddr
	accept    chan *Stream
	closed    chan struct{}
	closeOnce sync.Once
}

var _ raft.StreamLayer = (*StreamLayer)(nil)

// NewStreamLayer registers the KindRaft handler on e and returns the layer.
// advertise is the address raft records for this server; empty means
// e.AdvertiseAddr(). Call it before e.Run.
func NewStreamLayer(e *Endpoint, advertise string) *StreamLayer {
	if advertise == "" {
		advertise = e.AdvertiseAddr()
	}
	l := &StreamLayer{
		e:      e,
		addr:   streamAddr(advertise),
		accept: make(chan *Stream),
		closed: make(chan struct{}),
	}
	e.Handle(KindRaft, l.serve)
	return l
}

// serve is the KindRaft handler: it passes the stream to Accept and holds
// the handler open until the stream is closed.
func (l *StreamLayer) serve(ctx context.Context, s *Stream) {
	select {
	case l.accept <- s:
	case <-l.closed:
		return
	case <-ctx.Done():
		return
	}
	select {
	case <-s.done: // raft closed it
	case <-l.closed:
	case <-ctx.Done():
	}
	// The Endpoint closes s when this returns, ending raft's reader.
}

// Accept waits for the next incoming raft connection. After Close it
// returns net.ErrClosed.
func (l *StreamLayer) Accept() (net.Conn, error) {
	select {
	case s := <-l.accept:
		return raftConn{s}, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

// Close stops Accept and closes the raft streams accepted through this
// layer. Outgoing streams are raft's to close. It is idempotent.
func (l *StreamLayer) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return nil
}

// Addr returns the advertised address, which raft uses as this server's
// address.
func (l *StreamLayer) Addr() net.Addr { return l.addr }

// Dial opens a KindRaft stream to address within timeout (zero means no
// limit).
func (l *StreamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	select {
	case <-l.closed:
		return nil, net.ErrClosed
	default:
	}
	ctx := context.Background()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	s, err := l.e.Dial(ctx, string(address), KindRaft)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// raftConn is an accepted raft stream whose Read reports a clean shutdown
// (this end closed it, or the peer closed the connection normally) as
// io.EOF, which raft's connection handler takes as the end of the
// connection instead of logging a decode error.
type raftConn struct{ *Stream }

// Read reads from the stream.
func (c raftConn) Read(p []byte) (int, error) {
	n, err := c.Stream.Read(p)
	if err != nil && err != io.EOF && c.cleanEnd(err) {
		return n, io.EOF
	}
	return n, err
}

func (c raftConn) cleanEnd(err error) bool {
	if c.closed.Load() {
		return true
	}
	var ae *quic.ApplicationError
	return errors.As(err, &ae) && ae.ErrorCode == codeConnClosed
}

// streamAddr is a raft server address on a QUIC endpoint.
type streamAddr string

// Network returns "quic".
func (a streamAddr) Network() string { return "quic" }

// String returns host:port.
func (a streamAddr) String() string { return string(a) }
