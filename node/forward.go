package node

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httputil"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/outpost-mesh/outpost/transport"
)

const (
	// forwardDialTimeout bounds reaching the leader for a forwarded call.
	forwardDialTimeout = 5 * time.Second
	// forwardHeaderTimeout bounds the wait for the leader's answer to
	// begin; watches stream after their headers, so they are not cut.
	forwardHeaderTimeout = 10 * time.Second
)

// forwardToLeader proxies an admin API call that needs the leader (a write,
// or a linearizable read) from a hub follower to the hub leader, over a
// QUIC stream. The leader authenticates the caller's token itself.
func (n *Node) forwardToLeader(w http.ResponseWriter, r *http.Request) {
	var addr string
	if rf := n.group.Raft(); rf != nil {
		a, _ := rf.LeaderWithID()
		addr = string(a)
	}
	if addr == "" || addr == n.ep.AdvertiseAddr() {
		writeError(w, apierrors.NewServiceUnavailable("the hub has no leader right now; retry in a moment"), n.log)
		return
	}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = "outpost-leader"
			pr.Out.Header.Set(forwardedByHeader, n.id.Name)
			pr.SetXForwarded() // the leader audits the client's address (audit.go)
		},
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				ctx, cancel := context.WithTimeout(ctx, forwardDialTimeout)
				defer cancel()
				return n.dialRPC(ctx, addr, methodAPI)
			},
			DisableKeepAlives: true,
			// A leader that died a moment ago still has an open QUIC
			// connection here; without this a call would wait for the
			// connection's idle timeout instead of failing fast so the
			// client retries on the new leader.
			ResponseHeaderTimeout: forwardHeaderTimeout,
		},
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			writeError(w, apierrors.NewServiceUnavailable("forward to the hub leader: "+err.Error()+"; retry"), n.log)
		},
	}
	proxy.ServeHTTP(w, r)
}

// serveForwarded hands a forwarded call's stream to the leader's API
// server and returns when the stream is done.
func (n *Node) serveForwarded(ctx context.Context, s *transport.Stream) {
	c := &doneConn{Conn: s, done: make(chan struct{})}
	select {
	case n.fwd.conns <- c:
	case <-ctx.Done():
		s.Close()
		return
	}
	select {
	case <-c.done:
	case <-ctx.Done():
		s.Close()
	}
}

// doneConn signals when the HTTP server is finished with a stream.
type doneConn struct {
	net.Conn
	once sync.Once
	done chan struct{}
}

func (c *doneConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { close(c.done) })
	return err
}

// connListener is a net.Listener fed by stream handlers.
type connListener struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
	addr   net.Addr
}

func newConnListener(addr net.Addr) *connListener {
	return &connListener{conns: make(chan net.Conn), closed: make(chan struct{}), addr: addr}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *connListener) Addr() net.Addr { return l.addr }

// serveForwardedAPI serves forwarded calls until the listener closes.
func serveForwardedAPI(srv *http.Server, l *connListener) error {
	err := srv.Serve(l)
	if errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}
