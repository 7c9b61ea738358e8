package grant_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/outpost-mesh/outpost/ota"
	"github.com/outpost-mesh/outpost/ota/grant"
)

func TestVerify(t *testing.T) {
	t.Parallel()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	req := grant.Request{Task: "t", UID: "u1", Node: "n1", Site: "s", Attempt: 1,
		Steps: []ota.Step{{Name: "a", Type: "exec", Command: []string{"true"}}}, TimeoutMillis: 1000}
	g, err := grant.New(key, req, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	forged, _ := grant.New(other, req, now.Add(time.Hour))
	changed := req
	changed.Steps = []ota.Step{{Name: "a", Type: "exec", Command: []string{"rm", "-rf", "/"}}}
	otherNode := req
	otherNode.Node = "n2"
	retried := req
	retried.Attempt = 2
	tampered := g
	tampered.Expires = g.Expires.Add(24 * time.Hour)
	for _, tc := range []struct {
		name string
		g    *grant.Grant
		req  grant.Request
		now  time.Time
		want error
	}{
		{"valid", &g, req, now, nil},
		{"missing", nil, req, now, grant.ErrMissing},
		{"other key", &forged, req, now, grant.ErrSignature},
		{"expiry changed", &tampered, req, now, grant.ErrSignature},
		{"other steps", &g, changed, now, grant.ErrMismatch},
		{"other node", &g, otherNode, now, grant.ErrMismatch},
		{"other attempt", &g, retried, now, grant.ErrMismatch},
		{"expired", &g, req, now.Add(2 * time.Hour), grant.ErrExpired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := grant.Verify(&key.PublicKey, tc.g, tc.req, tc.now)
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("Verify = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestGuardRemembersAcrossRestart(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "grants.log")
	now := time.Now()
	g, err := grant.OpenGuard(path, 0, now)
	if err != nil {
		t.Fatal(err)
	}
	live := &grant.Grant{ID: "a", Expires: now.Add(time.Hour)}
	lapsing := &grant.Grant{ID: "b", Expires: now.Add(time.Minute)}
	for _, gr := range []*grant.Grant{live, lapsing} {
		if seen, err := g.Admit(gr); err != nil || seen {
			t.Fatalf("first Admit(%s) = %v, %v; want false, nil", gr.ID, seen, err)
		}
	}
	if seen, _ := g.Admit(live); !seen {
		t.Fatal("second Admit of a grant reported it unseen")
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	g, err = grant.OpenGuard(path, 0, now.Add(2*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if seen, _ := g.Admit(live); !seen {
		t.Fatal("a grant admitted before the restart was forgotten")
	}
	if g.Len() != 1 {
		t.Fatalf("guard holds %d grants after reopening past one's expiry, want 1", g.Len())
	}
}

func TestGuardIsBounded(t *testing.T) {
	t.Parallel()
	now := time.Now()
	g, err := grant.OpenGuard(filepath.Join(t.TempDir(), "grants.log"), 3, now)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	for i := range 5 {
		if _, err := g.Admit(&grant.Grant{ID: string(rune('a' + i)), Expires: now.Add(time.Duration(i+1) * time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	if g.Len() != 3 {
		t.Fatalf("guard of size 3 holds %d", g.Len())
	}
	if seen, _ := g.Admit(&grant.Grant{ID: "e", Expires: now.Add(5 * time.Hour)}); !seen {
		t.Fatal("the latest grant was evicted instead of the first to expire")
	}
}
