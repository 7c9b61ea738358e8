package grant_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
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
	gs, err := grant.New(key, req, []string{"n1"}, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	g := gs[0]
	forgedAll, _ := grant.New(other, req, []string{"n1"}, now.Add(time.Hour))
	forged := forgedAll[0]
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

// TestVerifyTogether: the grants of many nodes signed together each
// verify for their own node only; a grant whose place in the signed list
// or whose proof was changed, or that claims a node the hub did not sign
// for, is refused as not signed by the hub.
func TestVerifyTogether(t *testing.T) {
	t.Parallel()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	req := grant.Request{Task: "t", UID: "u1", Site: "s", Attempt: 1,
		Steps: []ota.Step{{Name: "a", Type: "read", Path: "/etc/hostname"}}, TimeoutMillis: 1000}
	for _, n := range []int{1, 2, 3, 7, 8, 100, 1000} {
		var nodes []string
		for i := range n {
			nodes = append(nodes, fmt.Sprintf("s-n%04d", i))
		}
		gs, err := grant.New(key, req, nodes, now.Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if len(gs) != n {
			t.Fatalf("%d nodes: %d grants", n, len(gs))
		}
		for i, g := range gs {
			r := req
			r.Node = nodes[i]
			if err := grant.Verify(&key.PublicKey, &g, r, now); err != nil {
				t.Fatalf("%d nodes: grant %d of %s: %v", n, i, nodes[i], err)
			}
			if g.Sig == nil || string(g.Sig) != string(gs[0].Sig) || g.ID != gs[0].ID {
				t.Fatalf("%d nodes: grant %d has its own signature or id; want the assignment's", n, i)
			}
		}
		last := gs[n-1]
		outsider, moved, swapped, grown := last, last, last, last
		outsider.Node = "s-n9999" // not signed for, with another's proof
		moved.Index = (last.Index + 1) % last.Size
		swapped.Proof = gs[0].Proof
		grown.Size++
		refused := map[string]grant.Grant{"outsider": outsider, "size changed": grown}
		if n > 1 {
			refused["index changed"], refused["proof of another"] = moved, swapped
		}
		for name, g := range refused {
			r := req
			r.Node = g.Node
			if err := grant.Verify(&key.PublicKey, &g, r, now); !errors.Is(err, grant.ErrSignature) {
				t.Errorf("%d nodes, %s: Verify = %v, want %v", n, name, err, grant.ErrSignature)
			}
		}
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

// TestGuardWritesInBackground: admissions do not wait for the file, yet
// every admitted grant is in it once Sync returns, the guard holds no
// descriptor of it between writes, and a write that fails refuses the
// next grant.
func TestGuardWritesInBackground(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "grants.log")
	now := time.Now()
	g, err := grant.OpenGuard(path, 0, now)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if seen, err := g.Admit(&grant.Grant{ID: fmt.Sprintf("g%03d", i), Expires: now.Add(time.Hour)}); err != nil || seen {
				t.Errorf("Admit(g%03d) = %v, %v; want false, nil", i, seen, err)
			}
		}()
	}
	wg.Wait()
	if err := g.Sync(); err != nil {
		t.Fatal(err)
	}
	if fds, _ := os.ReadDir("/proc/self/fd"); len(fds) > 0 {
		for _, fd := range fds {
			if target, _ := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); target == path {
				t.Fatalf("the guard holds %s open between writes", path)
			}
		}
	}
	again, err := grant.OpenGuard(path, 0, now)
	if err != nil {
		t.Fatal(err)
	}
	if again.Len() != 200 {
		t.Fatalf("the file holds %d grants after Sync, want 200", again.Len())
	}

	// The file's directory goes: the background write fails, and the
	// next grant is refused with that error.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Admit(&grant.Grant{ID: "lost", Expires: now.Add(time.Hour)}); err != nil {
		t.Fatalf("Admit before the failed write = %v", err)
	}
	if err := g.Sync(); err == nil || !strings.Contains(err.Error(), "grants.log") {
		t.Fatalf("Sync after a failed write = %v, want an error naming the file", err)
	}
	if _, err := g.Admit(&grant.Grant{ID: "next", Expires: now.Add(time.Hour)}); err == nil {
		t.Fatal("a grant was admitted after the guard failed to record one")
	}
}
