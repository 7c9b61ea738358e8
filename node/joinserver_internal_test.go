package node

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/outpost-mesh/outpost/consensus"
)

// TestJoinAskedAgainIsCountedOnce: a join whose token use was counted but
// whose member was not recorded (the hub lost its leadership between the
// two writes) is admitted when the node asks again with the same key,
// without a second use of the token; a new key for the name is a new join
// and finds the single-use token used up.
func TestJoinAskedAgainIsCountedOnce(t *testing.T) {
	t.Parallel()
	n, ctx := startHubForLinkTest(t)
	store := n.group.Store()
	for deadline := time.Now().Add(30 * time.Second); !n.group.IsLeader(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the hub did not lead within 30s")
		}
	}
	tok := &consensus.Object{ObjectMeta: metav1.ObjectMeta{Name: "once"}}
	_ = tok.SetSpec(JoinTokenSpec{Site: "j", SecretHash: hashSecret("s3cret"), MaxUses: 1})
	if _, err := store.Create(ctx, &JoinTokenKind, tok); err != nil {
		t.Fatal(err)
	}
	request := func() *joinRequest {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "j-1"}}, key)
		if err != nil {
			t.Fatal(err)
		}
		return &joinRequest{
			TokenID: "once", Secret: "s3cret", Name: "j-1",
			CSR:      pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}),
			QUICAddr: "127.0.0.1:7443", GossipAddr: "127.0.0.1:7946",
		}
	}
	loseMember := func() {
		t.Helper()
		if _, err := store.Delete(ctx, &MemberKind, "", "j-1", 0, ""); err != nil {
			t.Fatal(err)
		}
	}
	uses := func() int {
		t.Helper()
		obj, err := store.Get(ctx, &JoinTokenKind, "", "once", consensus.ReadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var st JoinTokenStatus
		if err := obj.DecodeStatus(&st); err != nil {
			t.Fatal(err)
		}
		return st.Uses
	}

	req := request()
	if resp := n.admit(ctx, req); resp.Error != "" {
		t.Fatalf("first join refused: %s", resp.Error)
	}
	loseMember()
	if resp := n.admit(ctx, req); resp.Error != "" || len(resp.Cert) == 0 {
		t.Fatalf("the same join asked again: refused %q (want a certificate)", resp.Error)
	}
	if got := uses(); got != 1 {
		t.Errorf("token uses after a join asked twice: %d, want 1", got)
	}
	loseMember()
	resp := n.admit(ctx, request())
	if !strings.Contains(resp.Error, "used up") || resp.Retry {
		t.Errorf("a new key for j-1 with the single-use token spent: error %q retry %v, want used up, final", resp.Error, resp.Retry)
	}
}
