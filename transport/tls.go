package transport

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// alpn is the ALPN protocol of Outpost's QUIC connections; a new
// incompatible wire format gets a new one.
const alpn = "outpost/1"

// errNoCertificate is returned by the server's GetCertificate when the
// node has none configured.
var errNoCertificate = errors.New("this node has no certificate")

// newServerTLS is the accepting side: TLS 1.3, our certificate fetched per
// handshake, client certificates optional but verified against the CA when
// given, then checked to be node certificates and not revoked.
func (e *Endpoint) newServerTLS() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{alpn},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			if e.cfg.GetCertificate == nil {
				return nil, errNoCertificate
			}
			return e.cfg.GetCertificate()
		},
		ClientAuth: tls.VerifyClientCertIfGiven,
		ClientCAs:  e.cfg.CAs,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return nil // anonymous: AnonymousKinds only, enforced per stream
			}
			return e.checkPeerCert(cs.PeerCertificates[0])
		},
	}
}

// newClientTLS is the dialing side: our certificate when we have one, and the
// server verified against the CA as a mesh node certificate. The host name
// is not checked: a node's identity is its certificate's node name, and an
// address may change (NAT, renumbering) while the node stays the same.
func (e *Endpoint) newClientTLS() *tls.Config {
	conf := &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{alpn},
		// Verification is done in VerifyConnection, against the mesh CA
		// and without a host name.
		InsecureSkipVerify: true, //nolint:gosec // see VerifyConnection
		VerifyConnection: func(cs tls.ConnectionState) error {
			leaf, err := verifyChain(cs.PeerCertificates, e.cfg.CAs, x509.ExtKeyUsageServerAuth)
			if err != nil {
				return err
			}
			return e.checkPeerCert(leaf)
		},
	}
	if e.cfg.GetCertificate != nil {
		conf.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return e.cfg.GetCertificate()
		}
	}
	return conf
}

// checkPeerCert rejects a verified certificate that is not a node
// certificate or is revoked.
func (e *Endpoint) checkPeerCert(leaf *x509.Certificate) error {
	p, err := PeerFromCert(leaf)
	if err != nil {
		return err
	}
	if e.cfg.Revoked != nil && e.cfg.Revoked(p) {
		return fmt.Errorf("peer %s (serial %s): %w", p, p.Serial, ErrRevoked)
	}
	return nil
}

// verifyChain verifies certs[0] against roots with certs[1:] as
// intermediates, for the given usage, and returns the leaf.
func verifyChain(certs []*x509.Certificate, roots *x509.CertPool, usage x509.ExtKeyUsage) (*x509.Certificate, error) {
	if len(certs) == 0 {
		return nil, errors.New("peer presented no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	leaf := certs[0]
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		return nil, fmt.Errorf("verify certificate of %q: %w", leaf.Subject.CommonName, err)
	}
	return leaf, nil
}

// pinnedTLS is the dialing side of DialPinned: no client certificate, and
// the server trusted only if its chain carries the CA whose fingerprint is
// pinned and its leaf verifies against that CA. The CA found is stored in
// *ca.
func pinnedTLS(fingerprint string, ca **x509.Certificate) (*tls.Config, error) {
	want, err := parseFingerprint(fingerprint)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		NextProtos:         []string{alpn},
		InsecureSkipVerify: true, //nolint:gosec // pinned in VerifyConnection
		VerifyConnection: func(cs tls.ConnectionState) error {
			var pinned *x509.Certificate
			for _, c := range cs.PeerCertificates {
				sum := sha256.Sum256(c.Raw)
				if c.IsCA && bytes.Equal(sum[:], want) {
					pinned = c
					break
				}
			}
			if pinned == nil {
				return ErrFingerprintMismatch
			}
			roots := x509.NewCertPool()
			roots.AddCert(pinned)
			leaf, err := verifyChain(cs.PeerCertificates, roots, x509.ExtKeyUsageServerAuth)
			if err != nil {
				return fmt.Errorf("%w: %v", ErrFingerprintMismatch, err)
			}
			if _, err := PeerFromCert(leaf); err != nil {
				return fmt.Errorf("%w: %v", ErrFingerprintMismatch, err)
			}
			*ca = pinned
			return nil
		},
	}, nil
}

// parseFingerprint decodes a hex SHA-256 fingerprint, as pki.CA.Fingerprint
// writes it; upper case and colons are accepted.
func parseFingerprint(s string) ([]byte, error) {
	b, err := hex.DecodeString(strings.ToLower(strings.ReplaceAll(s, ":", "")))
	if err != nil || len(b) != sha256.Size {
		return nil, fmt.Errorf("CA fingerprint %q must be 64 hex digits (a SHA-256)", s)
	}
	return b, nil
}
