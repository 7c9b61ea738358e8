package pki

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadOrCreateKeepsTheCA(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a, err := LoadOrCreate(dir, "test CA")
	if err != nil {
		t.Fatal(err)
	}
	b, err := LoadOrCreate(dir, "test CA")
	if err != nil {
		t.Fatal(err)
	}
	if a.Fingerprint() != b.Fingerprint() {
		t.Error("a second LoadOrCreate made a new CA")
	}
	st, err := os.Stat(filepath.Join(dir, "ca.key"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("ca.key mode %v (%v), want 0600", st.Mode().Perm(), err)
	}
}

func TestIncompleteCAIsAnError(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := LoadOrCreate(dir, "test CA"); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "ca.key")); err != nil {
		t.Fatal(err)
	}
	_, err := LoadOrCreate(dir, "test CA")
	if err == nil || !strings.Contains(err.Error(), "incomplete") {
		t.Fatalf("LoadOrCreate with ca.crt alone: %v, want an 'incomplete' error", err)
	}
}

func TestIssuedCertificatesVerify(t *testing.T) {
	t.Parallel()
	ca, err := LoadOrCreate(t.TempDir(), "test CA")
	if err != nil {
		t.Fatal(err)
	}
	other, err := LoadOrCreate(t.TempDir(), "other CA")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Issue(Request{CommonName: "n1", Organization: []string{"site-a"}, OrganizationalUnit: []string{"edge"}, Client: true, Server: true, Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	opts := x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if _, err := cert.Leaf.Verify(opts); err != nil {
		t.Errorf("issued certificate does not verify against its CA: %v", err)
	}
	opts.Roots = other.Pool()
	if _, err := cert.Leaf.Verify(opts); err == nil {
		t.Error("issued certificate verifies against another CA")
	}
	if got := cert.Leaf.Subject.OrganizationalUnit; len(got) != 1 || got[0] != "edge" {
		t.Errorf("OU = %v, want [edge]", got)
	}
	if skew := cert.Leaf.NotAfter.Sub(cert.Leaf.NotBefore); skew > 2*time.Hour {
		t.Errorf("validity span %s; back-dating should be at most an hour", skew)
	}
}
