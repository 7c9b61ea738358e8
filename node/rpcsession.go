package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/outpost-mesh/outpost/ota/control"
	"github.com/outpost-mesh/outpost/transport"
)

// methodSession opens a stream that carries many calls from a site leader
// to a member, answered in any order: a device's run costs the leader and
// the member a request and an answer on a stream they hold, not a stream
// of its own. A stream of its own is opened, and once the answer is
// acknowledged the member grants the leader a new one (QUIC's
// MAX_STREAMS), a packet the leader must acknowledge in turn: on a machine
// of a hundred sites, a third more packets per device, each of which can
// make the sender probe when the acknowledgement is late.
//
// On the session, a call is a sessionCall message and its request, and an
// answer a sessionReply message and, unless the reply carries an error, the
// response; each pair is written in one Write. The callee's first message
// is a sessionHello; a node of an older version refuses the method, and
// the caller then makes its calls on streams of their own.
const methodSession = "session"

const (
	// sessionCalls bounds the calls one session runs at once on the
	// callee; past it, the callee reads no more until one ends.
	sessionCalls = 64
	// sessionWriteTimeout bounds one write on a session: a peer that does
	// not read ends the session.
	sessionWriteTimeout = 30 * time.Second
	// sessionRetryRefused is how long a node that refused sessions is
	// called on streams of their own before it is asked again (it may
	// have been upgraded).
	sessionRetryRefused = 10 * time.Minute
)

// sessionHello opens a session on the callee's side.
type sessionHello struct {
	Session bool   `json:"session,omitempty"`
	Error   string `json:"error,omitempty"` // an older node's refusal of the method
}

// sessionCall heads a call on a session.
type sessionCall struct {
	ID     uint64 `json:"id"`
	Method string `json:"method"`
}

// sessionReply heads an answer on a session. With Error, the call was
// refused (its method is not served on sessions, its request did not
// decode) and no response follows.
type sessionReply struct {
	ID    uint64 `json:"id"`
	Error string `json:"error,omitempty"`
}

// sessionStream is what a session runs on: a transport.Stream, or a pipe in
// tests.
type sessionStream interface {
	io.ReadWriteCloser
	SetWriteDeadline(time.Time) error
}

// errSessionRefused is a callee's refusal of sessions (an older version).
var errSessionRefused = errors.New("the node does not serve call sessions")

// rpcSessions holds a node's call sessions by peer address.
type rpcSessions struct {
	mu      sync.Mutex
	m       map[string]*rpcSession
	refused map[string]time.Time // address → when to ask it again
	closed  bool
}

// rpcSession is the caller's side of one session.
type rpcSession struct {
	ready chan struct{} // closed once the session is open or failed to open
	s     sessionStream
	wmu   sync.Mutex // serialises writes

	mu      sync.Mutex
	next    uint64
	pending map[uint64]*pendingCall
	err     error // why the session ended; set once
	done    chan struct{}
}

// pendingCall is a call waiting for its answer.
type pendingCall struct {
	resp any
	done chan error // buffered: the reader never blocks on it
}

// callSession calls method on the node at addr over a session, opened on
// first use; a node that refuses sessions is called on a stream of its own.
func (n *Node) callSession(ctx context.Context, addr, method string, req, resp any) error {
	sess, err := n.sessions.get(ctx, addr, func(ctx context.Context) (sessionStream, error) {
		return n.dialRPC(ctx, addr, methodSession)
	})
	if errors.Is(err, errSessionRefused) {
		return n.call(ctx, addr, method, req, resp)
	}
	if err != nil {
		return err
	}
	return sess.call(ctx, method, req, resp)
}

// get returns the open session to addr, opening one with dial when there
// is none; errSessionRefused when addr refused sessions lately.
func (r *rpcSessions) get(ctx context.Context, addr string, dial func(context.Context) (sessionStream, error)) (*rpcSession, error) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, net.ErrClosed
	}
	if until, ok := r.refused[addr]; ok && time.Now().Before(until) {
		r.mu.Unlock()
		return nil, errSessionRefused
	}
	sess, ok := r.m[addr]
	if !ok {
		sess = &rpcSession{ready: make(chan struct{}), pending: map[uint64]*pendingCall{}, done: make(chan struct{})}
		if r.m == nil {
			r.m = map[string]*rpcSession{}
		}
		r.m[addr] = sess
		r.mu.Unlock()
		r.open(ctx, addr, sess, dial)
	} else {
		r.mu.Unlock()
	}
	select {
	case <-sess.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case <-sess.done:
		return nil, sess.err
	default:
		return sess, nil
	}
}

// open dials sess and reads the callee's hello, then starts its reader;
// a failure ends sess (and a refusal is remembered).
func (r *rpcSessions) open(ctx context.Context, addr string, sess *rpcSession, dial func(context.Context) (sessionStream, error)) {
	defer close(sess.ready)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s, err := dial(ctx)
	if err != nil {
		r.end(addr, sess, err)
		return
	}
	stop := context.AfterFunc(ctx, func() { s.Close() })
	var hello sessionHello
	err = readMessage(s, &hello, 4<<10)
	if !stop() {
		err = errors.Join(err, ctx.Err())
	}
	switch {
	case err != nil:
	case hello.Error != "" || !hello.Session:
		err = errSessionRefused
		r.mu.Lock()
		if r.refused == nil {
			r.refused = map[string]time.Time{}
		}
		r.refused[addr] = time.Now().Add(sessionRetryRefused)
		r.mu.Unlock()
	}
	if err != nil {
		s.Close()
		r.end(addr, sess, err)
		return
	}
	sess.s = s
	go sess.read(func(err error) { r.end(addr, sess, err) })
}

// end fails sess with err and forgets it, so the next call opens another.
func (r *rpcSessions) end(addr string, sess *rpcSession, err error) {
	r.mu.Lock()
	if r.m[addr] == sess {
		delete(r.m, addr)
	}
	r.mu.Unlock()
	sess.fail(err)
}

// close ends every session; no new one opens.
func (r *rpcSessions) close() {
	r.mu.Lock()
	r.closed = true
	all := r.m
	r.m = nil
	r.mu.Unlock()
	for _, sess := range all {
		sess.fail(net.ErrClosed)
	}
}

// fail ends the session: its stream is closed and every pending call
// returns err.
func (sess *rpcSession) fail(err error) {
	sess.mu.Lock()
	if sess.err != nil {
		sess.mu.Unlock()
		return
	}
	sess.err = fmt.Errorf("call session: %w", err)
	pending := sess.pending
	sess.pending = nil
	close(sess.done)
	sess.mu.Unlock()
	if sess.s != nil {
		sess.s.Close()
	}
	for _, c := range pending {
		c.done <- sess.err
	}
}

// call sends one call and waits for its answer, ctx or the session's end.
func (sess *rpcSession) call(ctx context.Context, method string, req, resp any) error {
	c := &pendingCall{resp: resp, done: make(chan error, 1)}
	sess.mu.Lock()
	if sess.err != nil {
		sess.mu.Unlock()
		return sess.err
	}
	sess.next++
	id := sess.next
	sess.pending[id] = c
	sess.mu.Unlock()
	b, err := appendMessage(nil, sessionCall{ID: id, Method: method})
	if err == nil {
		b, err = appendMessage(b, req)
	}
	if err != nil {
		sess.forget(id)
		return err
	}
	sess.wmu.Lock()
	_ = sess.s.SetWriteDeadline(time.Now().Add(sessionWriteTimeout))
	_, err = sess.s.Write(b)
	sess.wmu.Unlock()
	if err != nil {
		sess.fail(err)
	}
	select {
	case err := <-c.done:
		return err
	case <-ctx.Done():
		sess.forget(id)
		return ctx.Err()
	}
}

// forget drops a pending call whose caller no longer waits.
func (sess *rpcSession) forget(id uint64) {
	sess.mu.Lock()
	delete(sess.pending, id)
	sess.mu.Unlock()
}

// read delivers answers to their calls until the stream breaks, then calls
// end with why.
func (sess *rpcSession) read(end func(error)) {
	for {
		var h sessionReply
		if err := readMessage(sess.s, &h, 4<<10); err != nil {
			end(err)
			return
		}
		var body []byte
		if h.Error == "" {
			var err error
			if body, err = readFrame(sess.s, maxMessageBytes); err != nil {
				end(err)
				return
			}
		}
		sess.mu.Lock()
		c := sess.pending[h.ID]
		delete(sess.pending, h.ID)
		sess.mu.Unlock()
		switch {
		case c == nil: // its caller gave up
		case h.Error != "":
			c.done <- errors.New(h.Error)
		default:
			c.done <- decodeMessage(body, c.resp)
		}
	}
}

// serveSession is the callee's side: each call is answered by
// handle(method, request) on a goroutine of its own (at most sessionCalls
// at once), until the stream ends. handle returns nil for a method it does
// not serve on sessions.
func serveSession(ctx context.Context, s sessionStream, handle func(ctx context.Context, method string, req []byte) (any, error)) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		s.Close()
		wg.Wait()
	}()
	var wmu sync.Mutex
	write := func(b []byte) bool {
		wmu.Lock()
		defer wmu.Unlock()
		_ = s.SetWriteDeadline(time.Now().Add(sessionWriteTimeout))
		if _, err := s.Write(b); err != nil {
			s.Close() // ends the read loop
			return false
		}
		return true
	}
	reply := func(id uint64, resp any, err error) {
		var b []byte
		if err == nil {
			b, err = appendMessage(b, sessionReply{ID: id})
			if err == nil {
				b, err = appendMessage(b, resp)
			}
		}
		if err != nil {
			b, _ = appendMessage(nil, sessionReply{ID: id, Error: err.Error()})
		}
		write(b)
	}
	if b, _ := appendMessage(nil, sessionHello{Session: true}); !write(b) {
		return
	}
	sem := make(chan struct{}, sessionCalls)
	for {
		var h sessionCall
		if err := readMessage(s, &h, 4<<10); err != nil {
			return
		}
		body, err := readFrame(s, maxMessageBytes)
		if err != nil {
			return
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		wg.Go(func() {
			defer func() { <-sem }()
			resp, err := handle(ctx, h.Method, body)
			if resp == nil && err == nil {
				err = fmt.Errorf("method %q is not served on a call session", h.Method)
			}
			reply(h.ID, resp, err)
		})
	}
}

// serveSession answers a site leader's calls on a session: device runs.
func (a *agentService) serveSession(ctx context.Context, s *transport.Stream) {
	peer := s.Peer()
	serveSession(ctx, s, func(ctx context.Context, method string, body []byte) (any, error) {
		if method != methodOTARun {
			return nil, nil
		}
		var req control.RunRequest
		if err := decodeMessage(body, &req); err != nil {
			return nil, fmt.Errorf("decode the run request: %w", err)
		}
		return a.answerRun(ctx, peer, req), nil
	})
}
