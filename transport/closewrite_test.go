package transport

import (
	"context"
	"io"
	"testing"
)

// A caller that half-closes after the callee has read its request,
// answered and closed (the callee's STOP_SENDING has arrived) gets no
// error from CloseWrite, and reads the answer.
func TestCloseWriteAfterThePeerStoppedReading(t *testing.T) {
	t.Parallel()
	ca := newCA(t)
	handled := make(chan struct{})
	server := start(t, testConfig(ca, nodeCert(t, ca, "s1-n01", "s1", RoleEdge)), allKinds(func(_ context.Context, s *Stream) {
		defer close(handled)
		b := make([]byte, 5)
		if _, err := io.ReadFull(s, b); err != nil { // the request, not to its end
			return
		}
		_, _ = s.Write(append([]byte("re:"), b...))
		s.Close() // FIN, and STOP_SENDING: the caller's FIN has not come
	}))
	client := start(t, testConfig(ca, nodeCert(t, ca, "s1-n00", "s1", RoleEdge)), nil)
	s, err := client.Dial(t.Context(), server.Addr().String(), KindRPC)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	<-handled
	b, err := io.ReadAll(s) // to the callee's FIN, which came with or after its STOP_SENDING
	if err != nil || string(b) != "re:hello" {
		t.Fatalf("answer %q, %v; want re:hello", b, err)
	}
	eventually(t, "the callee's STOP_SENDING to arrive", func() bool { return s.qs.Context().Err() != nil })
	if err := s.CloseWrite(); err != nil {
		t.Fatalf("CloseWrite after the callee stopped reading: %v; want nil", err)
	}
}
