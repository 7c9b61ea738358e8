package clusters

import (
	"errors"
	"strings"
	"testing"

	"github.com/outpost-mesh/outpost/consensus"
)

// TestVerifyToken: only the token whose hash a proxy Cluster holds opens
// it; a deleting Cluster's token works until the finalizer revokes it.
func TestVerifyToken(t *testing.T) {
	store := newStore(t)
	token, hash, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	createCluster(t, store, "edge", ClusterSpec{Connection: Connection{Type: ConnectionProxy, TokenHash: hash}})
	createCluster(t, store, "plain", direct(kubeconfigFor(t, "https://127.0.0.1:6443", nil, "x")))
	other, _, _ := NewToken()
	if err := VerifyToken(t.Context(), store, "edge", token); err != nil {
		t.Fatalf("good token: %v", err)
	}
	for _, tc := range []struct{ name, cluster, token string }{
		{"wrong-token", "edge", other},
		{"empty-token", "edge", ""},
		{"another-cluster", "plain", token},
		{"no-such-cluster", "nope", token},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := VerifyToken(t.Context(), store, tc.cluster, tc.token); !errors.Is(err, ErrBadToken) {
				t.Errorf("VerifyToken = %v, want ErrBadToken", err)
			}
		})
	}
	obj, _ := store.Get(t.Context(), &ClusterKind, "", "edge", consensus.ReadOptions{})
	obj.Finalizers = []string{Finalizer}
	if _, err := store.Update(t.Context(), &ClusterKind, obj); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Delete(t.Context(), &ClusterKind, "", "edge", 0, ""); err != nil {
		t.Fatal(err)
	}
	// Deletion alone does not revoke it: the installers' cleanup reaches
	// the cluster through the agent. The finalizer's revocation does.
	if err := VerifyToken(t.Context(), store, "edge", token); err != nil {
		t.Errorf("token of a cluster whose cleanup has not run: %v, want it valid", err)
	}
	c, err := New(testConfig(store))
	if err != nil {
		t.Fatal(err)
	}
	obj, _ = store.Get(t.Context(), &ClusterKind, "", "edge", consensus.ReadOptions{})
	if _, err := c.revokeToken(t.Context(), obj); err != nil {
		t.Fatal(err)
	}
	if err := VerifyToken(t.Context(), store, "edge", token); !errors.Is(err, ErrBadToken) {
		t.Errorf("token after revocation: %v, want ErrBadToken", err)
	}
}

// TestAgentTokenRoundTrip: an agent token splits back into its parts; a
// token without a fingerprint is refused.
func TestAgentTokenRoundTrip(t *testing.T) {
	tok, _, _ := NewToken()
	fp := strings.Repeat("ab", 32)
	got, gotFP, err := ParseAgentToken(FormatAgentToken(tok, fp))
	if err != nil || got != tok || gotFP != fp {
		t.Fatalf("round trip: %q %q %v", got, gotFP, err)
	}
	for _, bad := range []string{tok, tok + ".", "." + fp, tok + ".zz"} {
		if _, _, err := ParseAgentToken(bad); err == nil {
			t.Errorf("ParseAgentToken(%q) accepted", bad)
		}
	}
}
