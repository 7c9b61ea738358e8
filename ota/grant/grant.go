package grant

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/outpost-mesh/outpost/ota"
)

// Reason is the DeviceResult reason of a run an agent refused for its grant.
const Reason = "GrantRefused"

// Errors of Verify, each wrapped with the detail.
var (
	// ErrMissing is a run request without a grant.
	ErrMissing = errors.New("the task carries no grant signed by the hub")
	// ErrSignature is a grant whose signature is not the hub's, or a
	// request whose contents differ from what the grant signed.
	ErrSignature = errors.New("the task's grant is not signed by the hub")
	// ErrMismatch is a grant for another task, attempt, node or site, or
	// for other steps.
	ErrMismatch = errors.New("the task does not match its grant")
	// ErrExpired is a grant past its expiry.
	ErrExpired = errors.New("the task's grant has expired")
	// ErrReplay is a grant seen before whose run left no trace here.
	ErrReplay = errors.New("the task's grant was used before")
)

// Grant is the hub's signed permission to run one attempt of a task's steps
// on one node. The hub signs the grants of an assignment together: Sig is
// an ASN.1 ECDSA signature by the mesh CA's key over the fields they share
// and the Merkle tree head (RFC 6962) of their nodes' names (Payload), and
// Index, Size and Proof show that Node is the Index'th of the Size nodes
// signed. One signature for a site's devices instead of one each: signing
// was an eighth of the hub's CPU in a 10,000-node read. ID is unique per
// assignment, and so per node.
type Grant struct {
	ID      string    `json:"id"`
	Task    string    `json:"task"`
	UID     string    `json:"uid"`
	Attempt int       `json:"attempt"`
	Node    string    `json:"node"`
	Site    string    `json:"site"`
	Steps   string    `json:"steps"` // StepsDigest of the steps
	Timeout int64     `json:"timeoutMillis"`
	Expires time.Time `json:"expires"`
	Index   uint64    `json:"index"`
	Size    uint64    `json:"size"`
	Proof   [][]byte  `json:"proof,omitempty"`
	Sig     []byte    `json:"sig"`
}

// Request is what a grant must match: the run an agent is asked for.
type Request struct {
	Task, UID, Node, Site string
	Attempt               int
	Steps                 []ota.Step
	TimeoutMillis         int64
}

// StepsDigest is the hex SHA-256 of the steps' JSON.
func StepsDigest(steps []ota.Step) string {
	b, _ := json.Marshal(steps)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Payload is the digest the signature covers: every field the grants of
// an assignment share and root, the tree head of their nodes, each
// length-prefixed, so no two assignments share one.
func (g *Grant) Payload(root []byte) []byte {
	h := sha256.New()
	put := func(s string) {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	put("outpost grant v2")
	for _, s := range []string{g.ID, g.Task, g.UID, g.Site, g.Steps, string(root)} {
		put(s)
	}
	var n [32]byte
	binary.BigEndian.PutUint64(n[:8], uint64(g.Attempt))
	binary.BigEndian.PutUint64(n[8:16], uint64(g.Timeout))
	binary.BigEndian.PutUint64(n[16:24], uint64(g.Expires.UnixNano()))
	binary.BigEndian.PutUint64(n[24:], g.Size)
	h.Write(n[:])
	return h.Sum(nil)
}

// root is the tree head that g's proof leads to from its node.
func (g *Grant) root() ([]byte, error) {
	return proof.RootFromInclusionProof(rfc6962.DefaultHasher, g.Index, g.Size, rfc6962.DefaultHasher.HashLeaf([]byte(g.Node)), g.Proof)
}

// New returns the grants for req on each of nodes (req.Node is not
// used; the names must differ), in nodes' order, signed together and
// expiring at expires.
func New(signer crypto.Signer, req Request, nodes []string, expires time.Time) ([]Grant, error) {
	if len(nodes) == 0 {
		return nil, errors.New("sign grants: no nodes")
	}
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return nil, err
	}
	head := Grant{
		ID: hex.EncodeToString(id), Task: req.Task, UID: req.UID, Attempt: req.Attempt,
		Site: req.Site, Steps: StepsDigest(req.Steps), Timeout: req.TimeoutMillis,
		Expires: expires.UTC().Truncate(time.Millisecond), Size: uint64(len(nodes)),
	}
	tree, root, err := buildTree(nodes)
	if err != nil {
		return nil, fmt.Errorf("sign grants: %w", err)
	}
	sig, err := signer.Sign(rand.Reader, head.Payload(root), crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("sign grants: %w", err)
	}
	out := make([]Grant, len(nodes))
	for i, n := range nodes {
		g := head
		g.Node, g.Index, g.Sig = n, uint64(i), sig
		if g.Proof, err = tree.inclusion(g.Index, g.Size); err != nil {
			return nil, fmt.Errorf("sign grants: %w", err)
		}
		out[i] = g
	}
	return out, nil
}

// tree holds the hashes of a Merkle tree's perfect subtrees, by node ID.
type tree map[compact.NodeID][]byte

// buildTree hashes nodes' names as the leaves of an RFC 6962 tree and
// returns its subtrees and head.
func buildTree(nodes []string) (tree, []byte, error) {
	t := tree{}
	rf := compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}
	r := rf.NewEmptyRange(0)
	for _, n := range nodes {
		if err := r.Append(rfc6962.DefaultHasher.HashLeaf([]byte(n)), func(id compact.NodeID, h []byte) { t[id] = h }); err != nil {
			return nil, nil, err
		}
	}
	root, err := r.GetRootHash(nil)
	return t, root, err
}

// inclusion is the proof that leaf index is in the tree of size leaves.
func (t tree) inclusion(index, size uint64) ([][]byte, error) {
	nodes, err := proof.Inclusion(index, size)
	if err != nil {
		return nil, err
	}
	hashes := make([][]byte, len(nodes.IDs))
	for i, id := range nodes.IDs {
		h, ok := t[id]
		if !ok {
			return nil, fmt.Errorf("no subtree %+v in a tree of %d", id, size)
		}
		hashes[i] = h
	}
	return nodes.Rehash(hashes, rfc6962.DefaultHasher.HashChildren)
}

// Verify checks that g is signed by pub, unexpired at now, and grants
// exactly req.
func Verify(pub *ecdsa.PublicKey, g *Grant, req Request, now time.Time) error {
	if g == nil {
		return ErrMissing
	}
	if root, err := g.root(); err != nil || pub == nil || !ecdsa.VerifyASN1(pub, g.Payload(root), g.Sig) {
		return fmt.Errorf("%w (grant %s)", ErrSignature, g.ID)
	}
	switch {
	case g.Task != req.Task || g.UID != req.UID:
		return fmt.Errorf("%w: grant is for task %s (uid %s), not %s (uid %s)", ErrMismatch, g.Task, g.UID, req.Task, req.UID)
	case g.Attempt != req.Attempt:
		return fmt.Errorf("%w: grant is for attempt %d, not %d", ErrMismatch, g.Attempt, req.Attempt)
	case g.Node != req.Node || g.Site != req.Site:
		return fmt.Errorf("%w: grant is for node %s of site %s, not %s of %s", ErrMismatch, g.Node, g.Site, req.Node, req.Site)
	case g.Steps != StepsDigest(req.Steps) || g.Timeout != req.TimeoutMillis:
		return fmt.Errorf("%w: the steps or the device timeout differ from what the hub signed", ErrMismatch)
	case !now.Before(g.Expires):
		return fmt.Errorf("%w at %s; retry the task (`outpost task retry`) for a new one", ErrExpired, g.Expires.Format(time.RFC3339))
	}
	return nil
}
