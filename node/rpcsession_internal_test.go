package node

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// echo is the request and response of the session tests' handler.
type echo struct {
	Text string `json:"text"`
}

// sessionPair dials sessions to an in-memory callee that serves handle;
// dials counts them.
type sessionPair struct {
	r     rpcSessions
	dials atomic.Int32
	wg    sync.WaitGroup
	serve func(ctx context.Context, s sessionStream)
}

func newSessionPair(t *testing.T, handle func(ctx context.Context, method string, req []byte) (any, error)) *sessionPair {
	p := &sessionPair{serve: func(ctx context.Context, s sessionStream) { serveSession(ctx, s, handle) }}
	t.Cleanup(func() {
		p.r.close()
		p.wg.Wait()
	})
	return p
}

func (p *sessionPair) dial(context.Context) (sessionStream, error) {
	p.dials.Add(1)
	caller, callee := net.Pipe()
	p.wg.Go(func() { p.serve(context.Background(), callee) })
	return caller, nil
}

func (p *sessionPair) call(ctx context.Context, method, text string) (string, error) {
	sess, err := p.r.get(ctx, "peer", p.dial)
	if err != nil {
		return "", err
	}
	var out echo
	err = sess.call(ctx, method, echo{Text: text}, &out)
	return out.Text, err
}

// TestSessionAnswersInAnyOrder: calls on one session are answered as they
// finish, each to its own caller; a method the callee does not serve on
// sessions fails that call alone.
func TestSessionAnswersInAnyOrder(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	p := newSessionPair(t, func(ctx context.Context, method string, body []byte) (any, error) {
		var in echo
		if err := decodeMessage(body, &in); err != nil {
			return nil, err
		}
		switch method {
		case "slow":
			select {
			case <-release:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		case "fast":
		default:
			return nil, nil
		}
		return echo{Text: method + ":" + in.Text}, nil
	})
	slow := make(chan string, 1)
	go func() {
		got, err := p.call(t.Context(), "slow", "a")
		if err != nil {
			got = err.Error()
		}
		slow <- got
	}()
	for i := range 3 { // the fast calls pass the slow one
		want := "fast:" + string(rune('b'+i))
		if got, err := p.call(t.Context(), "fast", want[5:]); err != nil || got != want {
			t.Fatalf("fast call %d: %q, %v; want %q", i, got, err, want)
		}
	}
	if _, err := p.call(t.Context(), "other", "x"); err == nil || !strings.Contains(err.Error(), `"other" is not served`) {
		t.Fatalf("a method not served: %v, want its refusal", err)
	}
	close(release)
	if got := <-slow; got != "slow:a" {
		t.Fatalf("slow call: %q, want slow:a", got)
	}
	if n := p.dials.Load(); n != 1 {
		t.Fatalf("%d sessions opened, want 1", n)
	}
}

// TestSessionBreakFailsItsCalls: when the stream breaks, the calls waiting
// on it fail and the next call opens a new session; a caller that gives up
// leaves the session working.
func TestSessionBreakFailsItsCalls(t *testing.T) {
	t.Parallel()
	var (
		mu      sync.Mutex
		streams []sessionStream
	)
	p := newSessionPair(t, func(ctx context.Context, method string, body []byte) (any, error) {
		if method == "hang" {
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return echo{Text: "ok"}, nil
	})
	serve := p.serve
	p.serve = func(ctx context.Context, s sessionStream) {
		mu.Lock()
		streams = append(streams, s)
		mu.Unlock()
		serve(ctx, s)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	if _, err := p.call(ctx, "hang", ""); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a call whose caller gave up: %v, want its deadline", err)
	}
	cancel()
	if got, err := p.call(t.Context(), "ok", ""); err != nil || got != "ok" {
		t.Fatalf("the session after a caller gave up: %q, %v", got, err)
	}

	hung := make(chan error, 1)
	go func() {
		_, err := p.call(t.Context(), "hang", "")
		hung <- err
	}()
	// Break the callee's end once the call is pending on it.
	for {
		p.r.mu.Lock()
		sess := p.r.m["peer"]
		p.r.mu.Unlock()
		sess.mu.Lock()
		n := len(sess.pending)
		sess.mu.Unlock()
		if n > 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	mu.Lock()
	streams[0].Close()
	mu.Unlock()
	if err := <-hung; err == nil || !strings.Contains(err.Error(), "call session") {
		t.Fatalf("a call on a broken session: %v, want the session's end", err)
	}
	if got, err := p.call(t.Context(), "ok", ""); err != nil || got != "ok" {
		t.Fatalf("after the break: %q, %v", got, err)
	}
	if n := p.dials.Load(); n != 2 {
		t.Fatalf("%d sessions opened, want 2 (one after the break)", n)
	}
}

// TestSessionRefusedIsRemembered: a callee of an older version refuses the
// method (refuseMethod's answer); the caller is told to call on streams of
// their own and does not ask again for a while.
func TestSessionRefusedIsRemembered(t *testing.T) {
	t.Parallel()
	p := newSessionPair(t, nil)
	p.serve = func(_ context.Context, s sessionStream) {
		defer s.Close()
		_ = writeMessage(s, map[string]string{"error": `method "session" is not served to a/b here`})
	}
	for range 2 {
		if _, err := p.call(t.Context(), "ok", ""); !errors.Is(err, errSessionRefused) {
			t.Fatalf("a refused session: %v, want errSessionRefused", err)
		}
	}
	if n := p.dials.Load(); n != 1 {
		t.Fatalf("%d sessions dialled, want 1: a refusal is remembered", n)
	}
}
