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
// on one node. ID is unique per grant; Sig is an ASN.1 ECDSA signature by
// the mesh CA's key over every other field (Payload).
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

// Payload is the digest the signature covers: every field but Sig, each
// length-prefixed, so no two grants share one.
func (g *Grant) Payload() []byte {
	h := sha256.New()
	put := func(s string) {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	put("outpost grant v1")
	for _, s := range []string{g.ID, g.Task, g.UID, g.Node, g.Site, g.Steps} {
		put(s)
	}
	var n [24]byte
	binary.BigEndian.PutUint64(n[:8], uint64(g.Attempt))
	binary.BigEndian.PutUint64(n[8:16], uint64(g.Timeout))
	binary.BigEndian.PutUint64(n[16:], uint64(g.Expires.UnixNano()))
	h.Write(n[:])
	return h.Sum(nil)
}

// New returns a signed grant for req that expires at expires.
func New(signer crypto.Signer, req Request, expires time.Time) (Grant, error) {
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return Grant{}, err
	}
	g := Grant{
		ID: hex.EncodeToString(id), Task: req.Task, UID: req.UID, Attempt: req.Attempt,
		Node: req.Node, Site: req.Site, Steps: StepsDigest(req.Steps), Timeout: req.TimeoutMillis,
		Expires: expires.UTC().Truncate(time.Millisecond),
	}
	sig, err := signer.Sign(rand.Reader, g.Payload(), crypto.SHA256)
	if err != nil {
		return Grant{}, fmt.Errorf("sign grant: %w", err)
	}
	g.Sig = sig
	return g, nil
}

// Verify checks that g is signed by pub, unexpired at now, and grants
// exactly req.
func Verify(pub *ecdsa.PublicKey, g *Grant, req Request, now time.Time) error {
	if g == nil {
		return ErrMissing
	}
	if pub == nil || !ecdsa.VerifyASN1(pub, g.Payload(), g.Sig) {
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
