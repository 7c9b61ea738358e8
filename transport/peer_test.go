package transport

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"strings"
	"testing"
)

func TestPeerFromCert(t *testing.T) {
	t.Parallel()
	cert := func(cn string, o, ou []string) *x509.Certificate {
		return &x509.Certificate{SerialNumber: big.NewInt(0xbeef), Subject: pkix.Name{CommonName: cn, Organization: o, OrganizationalUnit: ou}}
	}
	tests := []struct {
		name    string
		cert    *x509.Certificate
		want    Peer
		wantErr string
	}{
		{"edge", cert("edge-1", []string{"a"}, []string{"edge"}), Peer{Name: "edge-1", Site: "a", Role: RoleEdge, Serial: "beef"}, ""},
		{"hub", cert("hub-1", []string{"hub"}, []string{"hub"}), Peer{Name: "hub-1", Site: "hub", Role: RoleHub, Serial: "beef"}, ""},
		{"nil", nil, Peer{}, "no certificate"},
		{"no name", cert("", []string{"a"}, []string{"edge"}), Peer{}, "no common name"},
		{"no site", cert("x", nil, []string{"edge"}), Peer{}, "one site"},
		{"two sites", cert("x", []string{"a", "b"}, []string{"edge"}), Peer{}, "one site"},
		{"no role", cert("x", []string{"a"}, nil), Peer{}, "role"},
		{"unknown role", cert("x", []string{"a"}, []string{"admin"}), Peer{}, "role"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := PeerFromCert(tc.cert)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, ErrNotMeshCertificate) {
					t.Fatalf("PeerFromCert() error = %v, want ErrNotMeshCertificate containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("PeerFromCert() = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestIssueNodeCert(t *testing.T) {
	t.Parallel()
	ca := newCA(t)
	c := nodeCert(t, ca, "edge-1", "a", RoleEdge)
	p, err := PeerFromCert(c.Leaf)
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != "edge-1" || p.Site != "a" || p.Role != RoleEdge || p.Serial != c.Leaf.SerialNumber.Text(16) {
		t.Errorf("peer %+v does not match the request", p)
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := verifyChain([]*x509.Certificate{c.Leaf}, ca.Pool(), usage); err != nil {
			t.Errorf("usage %v: %v", usage, err)
		}
	}
	if _, err := IssueNodeCert(ca, "x", "a", "admin", nil, 0); err == nil {
		t.Error("issued a certificate with an unknown role")
	}
	if got := (Peer{Name: "edge-1", Site: "a"}).String(); got != "edge-1@a" {
		t.Errorf("Peer.String() = %q", got)
	}
}

func TestKindString(t *testing.T) {
	t.Parallel()
	want := map[Kind]string{KindRaft: "raft", KindRPC: "rpc", KindTunnel: "tunnel", KindBlob: "blob", KindJoin: "join", 0: "kind(0)", 9: "kind(9)"}
	for k, s := range want {
		if k.String() != s {
			t.Errorf("Kind(%d).String() = %q, want %q", k, k.String(), s)
		}
	}
	if Kind(0).valid() || Kind(6).valid() || !KindJoin.valid() {
		t.Error("valid() is wrong at the edges")
	}
}
