package clusters

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/outpost-mesh/outpost/consensus"
)

// ErrBadToken is what VerifyToken returns for any token that does not
// open the cluster: the caller learns no more than that.
var ErrBadToken = errors.New("invalid cluster token")

// NewToken returns a fresh cluster token and the hash that goes in
// spec.connection.tokenHash. Only the hash reaches the hub.
func NewToken() (token, hash string, err error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", "", fmt.Errorf("cluster token: %w", err)
	}
	token = "oct_" + base64.RawURLEncoding.EncodeToString(b)
	return token, HashToken(token), nil
}

// HashToken returns the hex SHA-256 of a cluster token.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// VerifyToken checks an agent's token for cluster against the local
// replica of store: the Cluster must exist, be a proxy cluster and hold
// the token's hash. A Cluster being deleted keeps its token until the
// finalizer has run the installers' cleanup (which reaches the cluster
// through the agent) and erased the hash: that is the revocation. Every
// refusal is ErrBadToken; a store failure is returned as it is.
func VerifyToken(ctx context.Context, store *consensus.Store, cluster, token string) error {
	obj, err := store.Get(ctx, &ClusterKind, "", cluster, consensus.ReadOptions{Stale: true})
	if apierrors.IsNotFound(err) {
		return ErrBadToken
	}
	if err != nil {
		return fmt.Errorf("verify token of cluster %s: %w", cluster, err)
	}
	open, err := store.Unseal(&ClusterKind, obj)
	if err != nil {
		return fmt.Errorf("verify token of cluster %s: %w", cluster, err)
	}
	var spec ClusterSpec
	if err := open.DecodeSpec(&spec); err != nil {
		return fmt.Errorf("verify token of cluster %s: %w", cluster, err)
	}
	if spec.Connection.Type != ConnectionProxy || len(spec.Connection.TokenHash) != 64 {
		return ErrBadToken
	}
	if subtle.ConstantTimeCompare([]byte(HashToken(token)), []byte(spec.Connection.TokenHash)) != 1 {
		return ErrBadToken
	}
	return nil
}

// FormatAgentToken joins a cluster token and the mesh CA's fingerprint
// (hex SHA-256) into what an agent is given, TOKEN.FINGERPRINT: the agent
// pins the hub's CA with the second part and presents the first.
func FormatAgentToken(token, caFingerprint string) string {
	return token + "." + caFingerprint
}

// ParseAgentToken splits what FormatAgentToken made.
func ParseAgentToken(s string) (token, caFingerprint string, err error) {
	i := strings.LastIndexByte(s, '.')
	if i <= 0 || i == len(s)-1 {
		return "", "", errors.New("malformed cluster token: want TOKEN.FINGERPRINT, as `outpost cluster create --proxy` prints it")
	}
	token, caFingerprint = s[:i], s[i+1:]
	if b, err := hex.DecodeString(caFingerprint); err != nil || len(b) != sha256.Size {
		return "", "", errors.New("malformed cluster token: its last part must be the mesh CA's SHA-256 fingerprint")
	}
	return token, caFingerprint, nil
}
