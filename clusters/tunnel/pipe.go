package tunnel

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"

	"golang.org/x/sync/errgroup"
)

// copyBuffer is the size of each direction's copy buffer: QUIC's CPU cost
// per byte is flat from 32 KiB writes up (transport/DESIGN.md), and a
// connection holds two of them, so buffers stay bounded.
const copyBuffer = 64 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, copyBuffer); return &b }}

// halfCloser is a connection whose write side can be closed alone:
// *net.TCPConn and *transport.Stream.
type halfCloser interface {
	net.Conn
	CloseWrite() error
}

// pipe copies a to b and b to a until both directions have ended, passing
// each end of stream on as a half-close, so a client that shuts down its
// write side still gets its answer. An error in either direction, or ctx
// ending, aborts both connections (a TCP peer sees a reset). It returns the bytes moved each way.
func pipe(ctx context.Context, a, b halfCloser) (aToB, bToA int64, err error) {
	closeBoth := func() { _ = a.Close(); _ = b.Close() }
	abort := func() { reset(a); reset(b); closeBoth() }
	stop := context.AfterFunc(ctx, abort)
	defer stop()
	defer closeBoth()
	var g errgroup.Group
	g.Go(func() (err error) {
		aToB, err = copyHalf(b, a)
		if err != nil {
			abort()
		}
		return err
	})
	bToA, err = copyHalf(a, b)
	if err != nil {
		abort()
	}
	return aToB, bToA, errors.Join(err, g.Wait())
}

// reset makes a TCP connection's close an RST, so that a client whose
// connection was cut midway sees an error instead of a clean end of data.
// Streams are reset by Close already when data is in flight.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
}

// copyHalf copies src to dst until src ends, then half-closes dst.
func copyHalf(dst, src halfCloser) (int64, error) {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	var n int64
	for {
		nr, rerr := src.Read(buf)
		if nr > 0 {
			nw, werr := dst.Write(buf[:nr])
			n += int64(nw)
			if werr != nil {
				return n, werr
			}
		}
		if rerr == io.EOF {
			return n, dst.CloseWrite()
		}
		if rerr != nil {
			return n, rerr
		}
	}
}
