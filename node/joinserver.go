package node

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"hash/fnv"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/outpost-mesh/outpost/consensus"
	"github.com/outpost-mesh/outpost/gossip"
	"github.com/outpost-mesh/outpost/transport"
)

// serveJoin answers one join request on a KindJoin stream.
func (n *Node) serveJoin(ctx context.Context, s *transport.Stream) {
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(30 * time.Second))
	var req joinRequest
	if err := readMessage(s, &req, 64<<10); err != nil {
		_ = writeMessage(s, joinResponse{Error: "malformed join request: " + err.Error()})
		return
	}
	resp := n.admit(ctx, &req)
	if resp.Error != "" {
		n.log.Warn("join refused", "peer", req.Name, "peer_site", req.Site, "remote", s.RemoteAddr().String(), "reason", resp.Error)
	} else if resp.Redirect == "" {
		n.log.Info("node joined", "peer", req.Name, "peer_site", resp.Site, "remote", s.RemoteAddr().String())
	}
	if resp.Redirect == "" { // the leader that answers audits it
		n.recordAudit(ctx, joinEvent(&req, resp, s.RemoteAddr())) // images_audit.go
	}
	_ = writeMessage(s, resp)
}

// joinEvent is the audit event of a join: the token is the user, the
// node the object.
func joinEvent(req *joinRequest, resp joinResponse, from net.Addr) AuditEventSpec {
	ev := AuditEventSpec{
		User: req.TokenID, Verb: "join", Group: CoreGroup, Resource: "nodes", Name: req.Name,
		Source: hostOf(from.String()), Code: 201, Message: "joined site " + resp.Site,
	}
	if resp.Error != "" {
		ev.Code, ev.Message = 403, resp.Error
	}
	return ev
}

// joinLocks serialize the joins that use one token on the hub leader, so
// that many nodes booting with one token do not lose races for its use
// count (striped by token ID).
var joinLocks [64]sync.Mutex

// admit checks a join request against its token and, when it passes,
// consumes one use of the token and certifies the node.
func (n *Node) admit(ctx context.Context, req *joinRequest) joinResponse {
	mu := &joinLocks[fnv32(req.TokenID)%uint32(len(joinLocks))]
	mu.Lock()
	defer mu.Unlock()
	refuse := func(format string, a ...any) joinResponse { return joinResponse{Error: fmt.Sprintf(format, a...)} }
	if !n.group.IsLeader() {
		if r := n.group.Raft(); r != nil {
			if addr, _ := r.LeaderWithID(); addr != "" {
				return joinResponse{Redirect: string(addr)}
			}
		}
		return retryLater("the hub has no leader right now")
	}
	if msgs := validation.IsDNS1123Subdomain(req.Name); len(msgs) > 0 {
		return refuse("--name %q is not a valid node name: %s", req.Name, msgs[0])
	}
	store := n.group.Store()
	tok, err := store.Get(ctx, &JoinTokenKind, "", req.TokenID, consensus.ReadOptions{})
	if apierrors.IsNotFound(err) {
		return refuse("the join token is not known to the hub (wrong, or deleted); create one with `outpost token create`")
	}
	if err != nil {
		return retryLater("read join token: %v", err)
	}
	var spec JoinTokenSpec
	var status JoinTokenStatus
	_ = tok.DecodeSpec(&spec)
	_ = tok.DecodeStatus(&status)
	switch {
	case !secretMatches(req.Secret, spec.SecretHash):
		return refuse("the join token is wrong (its secret does not match)")
	case spec.Expires != nil && time.Now().After(spec.Expires.Time):
		return refuse("the join token expired at %s; create a new one with `outpost token create --site %s`", spec.Expires.UTC().Format(time.RFC3339), spec.Site)
	case req.Site != "" && req.Site != spec.Site:
		return refuse("the join token is for site %s, not --site %s", spec.Site, req.Site)
	}
	site := spec.Site
	role := roleOf(site)
	block, _ := pem.Decode(req.CSR)
	if block == nil {
		return refuse("the certificate request is not PEM")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil || csr.CheckSignature() != nil {
		return refuse("the certificate request is invalid")
	}
	keyHash, err := publicKeyHash(csr.PublicKey)
	if err != nil {
		return refuse("the certificate request's key: %v", err)
	}
	if m, err := store.Get(ctx, &MemberKind, "", req.Name, consensus.ReadOptions{}); err == nil {
		var ms MemberSpec
		_ = m.DecodeSpec(&ms)
		if ms.KeyHash == keyHash && ms.Site == site {
			return n.admitMember(ctx, req, csr, m, ms) // a retry of a join whose answer was lost
		}
		return refuse("the name %s is taken by a node of site %s; choose another --name, or delete the old node with `outpost delete node %s`", req.Name, ms.Site, req.Name)
	} else if !apierrors.IsNotFound(err) {
		return retryLater("check name: %v", err)
	}
	if _, err := store.Get(ctx, &NodeKind, "", req.Name, consensus.ReadOptions{}); err == nil {
		return refuse("the name %s is taken by a registered node; choose another --name, or delete it with `outpost delete node %s`", req.Name, req.Name)
	}
	now := metav1.Now()
	// The token's use is counted before the member is recorded; a join
	// asked again with the same key after the second write failed was
	// counted already.
	if status.LastNode != req.Name || status.LastKeyHash != keyHash {
		if spec.MaxUses > 0 && status.Uses >= spec.MaxUses {
			return refuse("the join token is used up (%d of %d joins); create a new one with `outpost token create --site %s`", status.Uses, spec.MaxUses, spec.Site)
		}
		status.Uses++
		status.LastUsed, status.LastNode, status.LastKeyHash = &now, req.Name, keyHash
		if err := tok.SetStatus(status); err != nil {
			return refuse("%v", err)
		}
		if _, err := store.UpdateStatus(ctx, &JoinTokenKind, tok); err != nil {
			if apierrors.IsConflict(err) {
				return retryLater("the join token was used concurrently")
			}
			return retryLater("record token use: %v", err)
		}
	}
	member := &consensus.Object{ObjectMeta: metav1.ObjectMeta{Name: req.Name}}
	_ = member.SetSpec(MemberSpec{Site: site, Role: role, GossipAddr: req.GossipAddr, Joined: &now, KeyHash: keyHash})
	return n.admitMember(ctx, req, csr, member, MemberSpec{})
}

// admitMember signs the node's certificate, records it in the node's Member
// (created when new, else updated with the new serial) and answers the
// join.
func (n *Node) admitMember(ctx context.Context, req *joinRequest, csr *x509.CertificateRequest, member *consensus.Object, ms MemberSpec) joinResponse {
	refuse := func(format string, a ...any) joinResponse { return joinResponse{Error: fmt.Sprintf(format, a...)} }
	store := n.group.Store()
	exists := member.ResourceVersion != ""
	if !exists {
		_ = member.DecodeSpec(&ms)
	}
	site, role := ms.Site, ms.Role
	var ips []net.IP
	if ip := net.ParseIP(hostOf(req.QUICAddr)); ip != nil {
		ips = append(ips, ip)
	}
	leaf, err := n.ca.Sign(csr.PublicKey, n.nodeCertRequest(req.Name, site, role, ips))
	if err != nil {
		return refuse("sign certificate: %v", err)
	}
	ms.Serials = append(ms.Serials, leaf.SerialNumber.Text(16))
	next := member.DeepCopy()
	if err := next.SetSpec(ms); err != nil {
		return refuse("%v", err)
	}
	if exists {
		_, err = store.Update(ctx, &MemberKind, next)
	} else {
		_, err = store.Create(ctx, &MemberKind, next)
	}
	if err != nil {
		return retryLater("record member: %v", err)
	}
	if _, err := store.Delete(ctx, &RevocationKind, "", req.Name, 0, ""); err != nil && !apierrors.IsNotFound(err) {
		return retryLater("clear old revocation: %v", err)
	}
	n.seeds.joined(site, req.GossipAddr)
	key, first, err := n.siteKeyCreated(ctx, site, nil)
	if err != nil {
		return retryLater("site key: %v", err)
	}
	resp := joinResponse{
		Site: site, Cert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Raw}),
		CA: n.ca.CertPEM, GossipKey: key, BootstrapSite: first && site != HubSite,
		HubAddrs: n.hubAddrs(), GossipSeeds: n.gossipSeeds(ctx, site),
	}
	if role == RoleHub {
		if resp.CAKey, err = n.ca.KeyPEM(); err != nil {
			return refuse("%v", err)
		}
	}
	return resp
}

// retryLater is a refusal the joining node asks again after (a read or
// write of the hub's state failed, or its leadership moved).
func retryLater(format string, a ...any) joinResponse {
	return joinResponse{Error: fmt.Sprintf(format, a...) + "; retry in a moment", Retry: true}
}

// publicKeyHash is the SHA-256, hex, of a public key's PKIX encoding.
func publicKeyHash(pub any) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:]), nil
}

// hubAddrs lists the QUIC addresses of the hub group's servers, the
// leader's first.
func (n *Node) hubAddrs() []string {
	r := n.group.Raft()
	if r == nil {
		return nil
	}
	f := r.GetConfiguration()
	if f.Error() != nil {
		return nil
	}
	leader, _ := r.LeaderWithID()
	out := []string{}
	if leader != "" {
		out = append(out, string(leader))
	}
	for _, s := range f.Configuration().Servers {
		if s.Address != leader {
			out = append(out, string(s.Address))
		}
	}
	return out
}

// gossipSeeds lists gossip addresses of a site's members for a joining
// node: the live members this hub sees when the site is its own, else a few
// from the seed cache.
func (n *Node) gossipSeeds(ctx context.Context, site string) []string {
	if site == n.id.Site {
		var out []string
		for _, m := range n.gossip.Members() {
			if m.State == gossip.Alive && !slices.Contains(out, m.Addr) {
				out = append(out, m.Addr)
			}
		}
		return out
	}
	return n.seeds.get(ctx, n.group.Store(), site)
}

// maxSeeds bounds the gossip seeds a joining node is given.
const maxSeeds = 8

// seedCache keeps a few gossip addresses per site for joining nodes. It is
// rebuilt from the roster (live nodes first) and the member records at most
// every seedCacheTTL, and the nodes admitted since are added as they join,
// so the second node of a new site finds the first: thousands of joins do
// not each read every node of the mesh.
type seedCache struct {
	mu     sync.Mutex
	built  time.Time
	bySite map[string][]string
	recent map[string][]string // admitted since built, newest last
}

const seedCacheTTL = 10 * time.Second

func (c *seedCache) get(ctx context.Context, store *consensus.Store, site string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.built) > seedCacheTTL || c.bySite == nil {
		c.rebuild(ctx, store)
	}
	var out []string
	add := func(addrs []string) {
		for _, a := range addrs {
			if a != "" && len(out) < maxSeeds && !slices.Contains(out, a) {
				out = append(out, a)
			}
		}
	}
	add(c.bySite[site])
	recent := slices.Clone(c.recent[site])
	slices.Reverse(recent)
	add(recent)
	return out
}

// rebuild reads the seeds from the store; on error it keeps what it had.
func (c *seedCache) rebuild(ctx context.Context, store *consensus.Store) {
	by := map[string][]string{}
	add := func(site, addr string) {
		if addr != "" && len(by[site]) < maxSeeds && !slices.Contains(by[site], addr) {
			by[site] = append(by[site], addr)
		}
	}
	nodes, err := store.List(ctx, &NodeKind, "", nil, consensus.ReadOptions{Stale: true})
	if err != nil {
		return
	}
	for _, o := range nodes.Items {
		var st NodeStatus
		if o.DecodeStatus(&st) == nil && st.State == string(gossip.Alive) {
			add(st.Site, st.GossipAddr)
		}
	}
	members, err := store.List(ctx, &MemberKind, "", nil, consensus.ReadOptions{Stale: true})
	if err != nil {
		return
	}
	for _, o := range members.Items {
		var ms MemberSpec
		if o.DecodeSpec(&ms) == nil {
			add(ms.Site, ms.GossipAddr)
		}
	}
	c.bySite, c.recent, c.built = by, map[string][]string{}, time.Now()
}

// joined records a node admitted to site, for the joins that follow.
func (c *seedCache) joined(site, addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.recent == nil {
		c.recent = map[string][]string{}
	}
	r := append(c.recent[site], addr)
	if len(r) > maxSeeds {
		r = r[len(r)-maxSeeds:]
	}
	c.recent[site] = r
}

func fnv32(s string) uint32 {
	h := fnv.New32a()
	_, _ = h.Write([]byte(s))
	return h.Sum32()
}

func raftID(name string) raft.ServerID { return raft.ServerID(name) }
