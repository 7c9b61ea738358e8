package transport

import (
	"context"
	"errors"
	"io"
	"testing"
)

// TestReverseStreams checks that a hub can open streams back to an agent
// on the connection the agent dialed without a certificate, and that the
// anonymous control stream is only admitted for AnonymousKinds.
func TestReverseStreams(t *testing.T) {
	t.Parallel()
	ca := newCA(t)
	cert := nodeCert(t, ca, "hub-1", "hub", RoleHub)
	got := make(chan string, 1)
	cfg := testConfig(ca, cert)
	cfg.AnonymousKinds = []Kind{KindJoin, KindTunnel}
	hub := start(t, cfg, map[Kind]Handler{KindTunnel: func(ctx context.Context, s *Stream) {
		// The control stream: open three streams back, each echoed by the agent.
		for _, msg := range []string{"one", "two", "three"} {
			rs, err := s.OpenReverse(ctx, KindTunnel)
			if err != nil {
				got <- "open: " + err.Error()
				return
			}
			reply, err := exchange(rs, msg)
			if err != nil || reply != "tunnel:"+msg {
				got <- "exchange: " + reply
				return
			}
		}
		got <- "ok"
	}})

	rcfg := DefaultReverseConfig()
	rcfg.Addr, rcfg.CAFingerprint = hub.Addr().String(), ca.Fingerprint()
	rc, ctl, err := DialReverse(t.Context(), rcfg, KindTunnel)
	if err != nil {
		t.Fatal(err)
	}
	if rc.Peer().Name != "hub-1" || !rc.CA().Equal(ca.Cert) {
		t.Errorf("peer %v, CA %q: want hub-1 and the mesh CA", rc.Peer(), rc.CA().Subject.CommonName)
	}
	ctx, cancel := context.WithCancel(t.Context())
	served := make(chan error, 1)
	go func() { served <- rc.Serve(ctx, echo) }()
	if r := <-got; r != "ok" {
		t.Fatalf("hub side: %s", r)
	}
	cancel()
	if err := <-served; err != nil {
		t.Errorf("Serve after cancel: %v", err)
	}
	if _, err := ctl.Write([]byte("x")); err == nil {
		if _, err := io.ReadAll(ctl); err == nil {
			t.Error("control stream still usable after Serve returned")
		}
	}
	_ = ctl.Close()
}

// TestReverseControlStreamNeedsAnonymousKind checks that a hub without
// KindTunnel in AnonymousKinds refuses an agent's control stream.
func TestReverseControlStreamNeedsAnonymousKind(t *testing.T) {
	t.Parallel()
	ca := newCA(t)
	hub := start(t, testConfig(ca, nodeCert(t, ca, "hub-1", "hub", RoleHub)), allKinds(echo))
	rcfg := DefaultReverseConfig()
	rcfg.Addr, rcfg.CAFingerprint = hub.Addr().String(), ca.Fingerprint()
	rc, ctl, err := DialReverse(t.Context(), rcfg, KindTunnel)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if err := refusedRead(t, ctl); !errors.Is(err, ErrCertificateRequired) {
		t.Errorf("tunnel control stream without AnonymousKinds: %v, want ErrCertificateRequired", err)
	}
	other := newCA(t)
	rcfg.CAFingerprint = other.Fingerprint()
	if _, _, err := DialReverse(t.Context(), rcfg, KindTunnel); !errors.Is(err, ErrFingerprintMismatch) {
		t.Errorf("wrong fingerprint: %v, want ErrFingerprintMismatch", err)
	}
}
