package node

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/outpost-mesh/outpost/consensus"
	"github.com/outpost-mesh/outpost/internal/pki"
	"github.com/outpost-mesh/outpost/transport"
)

// renewRequest asks the hub for a new certificate for the caller's own
// identity (taken from its current certificate, not from the request).
type renewRequest struct {
	CSR []byte `json:"csr"`
}

type renewResponse struct {
	Error string `json:"error,omitempty"`
	Cert  []byte `json:"cert,omitempty"`
}

// nodeCertRequest is what a node certificate certifies: the name, the
// site (Organization) and the role (OrganizationalUnit).
func (n *Node) nodeCertRequest(name, site, role string, ips []net.IP) pki.Request {
	return pki.Request{
		CommonName: name, Organization: []string{site}, OrganizationalUnit: []string{role},
		IPs: ips, Server: true, Client: true, Validity: n.cfg.CertValidity,
	}
}

// runRenewal renews the node certificate when a third of its validity is
// left: from the hub over QUIC, or, on a hub member, from its own CA.
func (n *Node) runRenewal(ctx context.Context) error {
	t := time.NewTicker(min(time.Hour, max(time.Second, n.cfg.CertValidity/20)))
	defer t.Stop()
	for {
		cert, _ := n.id.certificate()
		left := time.Until(cert.Leaf.NotAfter)
		if left < cert.Leaf.NotAfter.Sub(cert.Leaf.NotBefore)/3 {
			if err := n.renew(ctx); err != nil {
				n.log.Warn("certificate renewal failed; will retry", "err", err, "expires", cert.Leaf.NotAfter)
			} else {
				n.log.Info("certificate renewed")
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (n *Node) renew(ctx context.Context) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: n.id.Name}}, key)
	if err != nil {
		return err
	}
	// Every renewal is certified by the hub's leader, which records the new
	// serial where every hub member checks it; the leader serves itself.
	csrPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	var resp renewResponse
	if n.ca != nil && n.group.IsLeader() {
		resp = n.certify(ctx, n.self(), csrPEM)
	} else if err := n.callHub(ctx, methodRenew, renewRequest{CSR: csrPEM}, &resp); err != nil {
		return err
	}
	if resp.Error != "" {
		return fmt.Errorf("hub refused: %s", resp.Error)
	}
	block, _ := pem.Decode(resp.Cert)
	if block == nil {
		return fmt.Errorf("hub sent no certificate")
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return err
	}
	cert := &tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}
	n.id.mu.RLock()
	caPEM := n.id.caPEM
	n.id.mu.RUnlock()
	if err := n.id.setCerts(cert, caPEM); err != nil {
		return err
	}
	// The hub accepts a name's two latest certificates: move new streams
	// to connections made with this one before the old one is refused.
	n.ep.RetireConns()
	return n.id.save()
}

// callHub makes one request/response call to any reachable hub member.
func (n *Node) callHub(ctx context.Context, method string, req, resp any) error {
	var last error
	addrs := n.hubAddrList()
	if n.id.Role == RoleHub {
		addrs = n.hubAddrs()
	}
	for _, addr := range addrs {
		cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		err := n.call(cctx, addr, method, req, resp)
		cancel()
		if err == nil {
			return nil
		}
		last = err
	}
	if last == nil {
		last = fmt.Errorf("no hub address known")
	}
	return last
}

// serveRenew certifies a new key for the calling node's own identity.
func (n *Node) serveRenew(ctx context.Context, s *transport.Stream) {
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(15 * time.Second))
	var req renewRequest
	if err := readMessage(s, &req, 64<<10); err != nil {
		return
	}
	_ = writeMessage(s, n.certify(ctx, s.Peer(), req.CSR))
}

// self is this node as a peer.
func (n *Node) self() transport.Peer {
	return transport.Peer{Name: n.id.Name, Site: n.id.Site, Role: n.id.Role}
}

// certify signs a renewal for peer's own identity and records its serial;
// only the hub's leader may.
func (n *Node) certify(ctx context.Context, peer transport.Peer, csrPEM []byte) renewResponse {
	if !n.group.IsLeader() {
		return renewResponse{Error: "not the hub leader; ask another hub member"}
	}
	block, _ := pem.Decode(csrPEM)
	if block == nil {
		return renewResponse{Error: "certificate request is not PEM"}
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil || csr.CheckSignature() != nil {
		return renewResponse{Error: "certificate request is invalid"}
	}
	var ips []net.IP
	if peer.Addr != nil {
		if ip := net.ParseIP(hostOf(peer.Addr.String())); ip != nil {
			ips = append(ips, ip)
		}
	} else {
		ips = advertiseIPs(n.cfg)
	}
	leaf, err := n.ca.Sign(csr.PublicKey, n.nodeCertRequest(peer.Name, peer.Site, peer.Role, ips))
	if err != nil {
		return renewResponse{Error: err.Error()}
	}
	serial := leaf.SerialNumber.Text(16)
	if err := n.recordSerial(ctx, peer.Name, serial); err != nil {
		return renewResponse{Error: err.Error()}
	}
	user := "site/" + peer.Site
	if peer.Role == RoleHub {
		user = "hub/" + peer.Name
	}
	n.access.audit.record(ctx, AuditEventSpec{
		User: user, Verb: "renew", Group: CoreGroup, Resource: "members", Name: peer.Name, Code: 200,
		Message: fmt.Sprintf("certificate %s, valid until %s", serial, leaf.NotAfter.UTC().Format(time.RFC3339)),
	})
	return renewResponse{Cert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Raw})}
}

// recordSerial adds a renewed certificate's serial to the member record,
// keeping the previous one valid until it expires.
func (n *Node) recordSerial(ctx context.Context, name, serial string) error {
	store := n.group.Store()
	obj, err := store.Get(ctx, &MemberKind, "", name, consensus.ReadOptions{})
	if err != nil {
		return err
	}
	var spec MemberSpec
	_ = obj.DecodeSpec(&spec)
	if !slices.Contains(spec.Serials, serial) {
		spec.Serials = append(spec.Serials, serial)
	}
	if len(spec.Serials) > 2 {
		spec.Serials = spec.Serials[len(spec.Serials)-2:]
	}
	if err := obj.SetSpec(spec); err != nil {
		return err
	}
	_, err = store.Update(ctx, &MemberKind, obj)
	return err
}
