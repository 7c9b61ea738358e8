package node_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-mesh/outpost/node"
)

// hubQUIC returns the QUIC address the hub node registered.
func (tn *testNode) hubQUIC(t *testing.T) string {
	t.Helper()
	var addr string
	eventually(t, 30*time.Second, func() error {
		var o object
		code, b := tn.do(t, call{method: http.MethodGet, path: nodesPath + "/" + tn.name})
		if code != http.StatusOK {
			return errors.New(string(b))
		}
		if err := json.Unmarshal(b, &o); err != nil {
			return err
		}
		addr, _ = o.Status["quicAddr"].(string)
		if addr == "" {
			return errors.New("no status.quicAddr yet")
		}
		return nil
	})
	return addr
}

// fingerprint is the hub CA's SHA-256, as a token carries it.
func (tn *testNode) fingerprint(t *testing.T) string {
	t.Helper()
	creds, err := node.LoadCredentials(filepath.Join(tn.dir, "admin.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode([]byte(creds.CA))
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(sum[:])
}

// createToken makes a join token through the API as the CLI does and
// returns it.
func (tn *testNode) createToken(t *testing.T, site string, uses int, expires time.Time) string {
	t.Helper()
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	secret := hex.EncodeToString(b)
	sum := sha256.Sum256([]byte(secret))
	id := "jt-" + hex.EncodeToString(b[:4])
	spec := map[string]any{"site": site, "secretHash": hex.EncodeToString(sum[:]), "maxUses": uses}
	if !expires.IsZero() {
		spec["expires"] = expires.UTC().Format(time.RFC3339)
	}
	body, _ := json.Marshal(map[string]any{
		"apiVersion": "core.outpost.dev/v1alpha1", "kind": "JoinToken",
		"metadata": map[string]any{"name": id}, "spec": spec,
	})
	tn.mustDo(t, call{method: http.MethodPost, path: "/apis/core.outpost.dev/v1alpha1/jointokens", body: body}, http.StatusCreated, nil)
	return id + "." + secret + "." + tn.fingerprint(t)
}

func joinConfig(t *testing.T, hubAddr, token, name, site string) node.Config {
	cfg := node.DefaultConfig()
	cfg.Name = name
	cfg.DataDir = t.TempDir()
	cfg.BindAddr = "127.0.0.1"
	cfg.RegistryAddr = "" // no mirror on the host's port 5000; tests opt in with mirrorAt
	cfg.JoinAddr = hubAddr
	cfg.Token = token
	if site != "" {
		cfg.Site, cfg.SiteSet = site, true
	}
	return cfg
}

// TestJoinRefusals checks that every bad join is refused with a message
// that says which, and that a refused join writes nothing.
func TestJoinRefusals(t *testing.T) {
	t.Parallel()
	hub := startNode(t)
	addr := hub.hubQUIC(t)
	good := hub.createToken(t, "a", 0, time.Time{})
	once := hub.createToken(t, "a", 1, time.Time{})
	expired := hub.createToken(t, "a", 0, time.Now().Add(-time.Minute))
	id, _, fp, err := node.ParseJoinToken(good)
	if err != nil {
		t.Fatal(err)
	}
	if err := node.Join(t.Context(), joinConfig(t, addr, once, "first", ""), nil); err != nil {
		t.Fatalf("first join with a one-use token: %v", err)
	}
	otherFP := strings.Repeat("ab", 32)
	cases := []struct {
		name, token, node, site, want string
	}{
		{"malformed", "garbage", "n1", "", "malformed"},
		{"wrong secret", id + ".not-the-secret." + fp, "n2", "", "wrong"},
		{"unknown token", "jt-00000000.x." + fp, "n3", "", "not known"},
		{"expired", expired, "n4", "", "expired"},
		{"used up", once, "n5", "", "used up"},
		{"other site", good, "n6", "b", "for site a"},
		{"name taken", good, "first", "", "taken"},
		{"name of the hub", good, hub.name, "", "taken"},
		{"wrong CA fingerprint", id + ".x." + otherFP, "n7", "", "fingerprint"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := joinConfig(t, addr, tc.token, tc.node, tc.site)
			err := node.Join(t.Context(), cfg, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Join: %v, want an error containing %q", err, tc.want)
			}
			if _, err := os.Stat(filepath.Join(cfg.DataDir, "identity")); !os.IsNotExist(err) {
				t.Errorf("a refused join left %s/identity behind", cfg.DataDir)
			}
		})
	}
	// The hub audits each join it answers: who (the token), which node,
	// from where, the result.
	onceID, _, _, _ := node.ParseJoinToken(once)
	for _, tc := range []struct {
		what  string
		match func(e node.AuditEventSpec) bool
	}{
		{"the join", func(e node.AuditEventSpec) bool {
			return e.Verb == "join" && e.User == onceID && e.Name == "first" && e.Code == 201 && e.Source == "127.0.0.1" && e.Message == "joined site a"
		}},
		{"the join with a wrong secret", func(e node.AuditEventSpec) bool {
			return e.Verb == "join" && e.User == id && e.Name == "n2" && e.Code == 403 && strings.Contains(e.Message, "wrong")
		}},
		{"the join with a used-up token", func(e node.AuditEventSpec) bool {
			return e.Verb == "join" && e.User == onceID && e.Name == "n5" && e.Code == 403 && strings.Contains(e.Message, "used up")
		}},
	} {
		hub.findEvent(t, tc.what, tc.match)
	}
}

// TestJoinOnceThenNoToken checks that a joined node keeps its identity:
// a second Join needs no token and changes nothing, and the join took the
// token's site when --site was not given.
func TestJoinOnceThenNoToken(t *testing.T) {
	t.Parallel()
	hub := startNode(t)
	addr := hub.hubQUIC(t)
	cfg := joinConfig(t, addr, hub.createToken(t, "factory", 0, time.Time{}), "edge-1", "")
	if err := node.Join(t.Context(), cfg, nil); err != nil {
		t.Fatal(err)
	}
	idFile := filepath.Join(cfg.DataDir, "identity", "identity.yaml")
	before, err := os.ReadFile(idFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(before), "site: factory") {
		t.Errorf("identity %s does not name the token's site", before)
	}
	cfg.Token, cfg.JoinAddr = "", ""
	if err := node.Join(t.Context(), cfg, nil); err != nil {
		t.Fatalf("second start: %v", err)
	}
	after, _ := os.ReadFile(idFile)
	if string(after) != string(before) {
		t.Error("a second start rewrote the identity")
	}
}

// TestJoinWaitsOutALeaderlessHub: a join that reaches a hub without a
// leader (two of its three voters are down) is refused with a retry, asked
// again, and admitted once the hub has a leader again.
func TestJoinWaitsOutALeaderlessHub(t *testing.T) {
	t.Parallel()
	first := startNode(t, calmRaft)
	addr := first.hubQUIC(t)
	hubToken := first.createToken(t, "hub", 0, time.Time{})
	var second *node.Config // startEdge's own, ports included once it returns
	member := startEdge(t, addr, hubToken, "node-2", calmRaft, func(c *node.Config) {
		c.APIAddr = "127.0.0.1:0"
		second = c
	})
	third := startEdge(t, addr, hubToken, "node-3", calmRaft, func(c *node.Config) { c.APIAddr = "127.0.0.1:0" })
	eventually(t, 60*time.Second, func() error { return leadsVoters(first, 3) })
	token := first.createToken(t, "w", 0, time.Time{})
	member.stop()
	third.stop()
	eventually(t, 30*time.Second, func() error {
		if first.node.Group().IsLeader() {
			return errors.New("node-1 still leads a hub of three voters with two down")
		}
		return nil
	})

	var logs lockedBuffer
	joined := make(chan error, 1)
	go func() {
		joined <- node.Join(t.Context(), joinConfig(t, addr, token, "w-1", ""), slog.New(slog.NewTextHandler(&logs, nil)))
	}()
	eventually(t, 30*time.Second, func() error {
		select {
		case err := <-joined:
			t.Fatalf("the join ended while the hub had no leader: %v", err)
		default:
		}
		if !strings.Contains(logs.String(), "no leader right now") {
			return fmt.Errorf("no refusal with a retry yet; logs:\n%s", logs.String())
		}
		return nil
	})

	restarted, err := node.New(*second, slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		t.Fatalf("restart node-2: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- restarted.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case err := <-joined:
		if err != nil {
			t.Fatalf("join after the hub had a leader again: %v", err)
		}
	case <-time.After(90 * time.Second):
		t.Fatalf("the join did not end within 90s of node-2's return; logs:\n%s", logs.String())
	}
}

// lockedBuffer is a bytes.Buffer safe for a logger and a reader at once.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
