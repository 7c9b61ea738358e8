package transport

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"time"

	"github.com/outpost-mesh/outpost/internal/pki"
)

// The node roles a certificate may carry in its OrganizationalUnit.
const (
	// RoleHub is a hub member: it runs the hub's Raft group and issues
	// certificates.
	RoleHub = "hub"
	// RoleEdge is a node at a site.
	RoleEdge = "edge"
)

// Peer is the other end of a connection, as its certificate names it. A
// connection without a certificate (a joining node) has an empty Name.
type Peer struct {
	// Name is the node name (Subject.CommonName).
	Name string
	// Site is the node's site (Subject.Organization[0]).
	Site string
	// Role is RoleHub or RoleEdge (Subject.OrganizationalUnit[0]).
	Role string
	// Serial is the certificate serial number in lowercase hex, as
	// revocation lists name it.
	Serial string
	// Addr is the peer's UDP address.
	Addr net.Addr
}

// String returns name@site, or the address for a peer without a
// certificate.
func (p Peer) String() string {
	if p.Name == "" {
		if p.Addr == nil {
			return "anonymous"
		}
		return "anonymous@" + p.Addr.String()
	}
	return p.Name + "@" + p.Site
}

// PeerFromCert reads a node certificate's identity. It does not verify the
// certificate: callers pass one that verified against the mesh CA. The
// error wraps ErrNotMeshCertificate.
func PeerFromCert(cert *x509.Certificate) (Peer, error) {
	if cert == nil {
		return Peer{}, fmt.Errorf("no certificate: %w", ErrNotMeshCertificate)
	}
	s := cert.Subject
	switch {
	case s.CommonName == "":
		return Peer{}, fmt.Errorf("certificate has no common name (node name): %w", ErrNotMeshCertificate)
	case len(s.Organization) != 1 || s.Organization[0] == "":
		return Peer{}, fmt.Errorf("certificate of %q must name one site in its organization: %w", s.CommonName, ErrNotMeshCertificate)
	case len(s.OrganizationalUnit) != 1 || (s.OrganizationalUnit[0] != RoleHub && s.OrganizationalUnit[0] != RoleEdge):
		return Peer{}, fmt.Errorf("certificate of %q must name its role (%q or %q) in its organizational unit: %w", s.CommonName, RoleHub, RoleEdge, ErrNotMeshCertificate)
	}
	return Peer{
		Name:   s.CommonName,
		Site:   s.Organization[0],
		Role:   s.OrganizationalUnit[0],
		Serial: cert.SerialNumber.Text(16),
	}, nil
}

// IssueNodeCert issues a node certificate from ca, usable as both TLS server
// and client: CommonName name, Organization [site], OrganizationalUnit
// [role], and ips as IP SANs.
func IssueNodeCert(ca *pki.CA, name, site, role string, ips []net.IP, validity time.Duration) (tls.Certificate, error) {
	if name == "" || site == "" {
		return tls.Certificate{}, fmt.Errorf("issue node certificate: name and site are required")
	}
	if role != RoleHub && role != RoleEdge {
		return tls.Certificate{}, fmt.Errorf("issue node certificate for %s: role %q must be %q or %q", name, role, RoleHub, RoleEdge)
	}
	cert, err := ca.Issue(pki.Request{
		CommonName:         name,
		Organization:       []string{site},
		OrganizationalUnit: []string{role},
		IPs:                ips,
		Server:             true,
		Client:             true,
		Validity:           validity,
	})
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("issue node certificate for %s: %w", name, err)
	}
	return cert, nil
}
