package node

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/outpost-mesh/outpost/internal/atomicfile"
)

// Credentials is what the CLI needs to reach an admin API: the file
// <data-dir>/admin.yaml that bootstrap writes with mode 0600.
type Credentials struct {
	// Server is the API's base URL, https://host:port.
	Server string `json:"server"`
	// CA is the PEM of the CA that signed the API's certificate.
	CA string `json:"ca"`
	// Token is the bearer token.
	Token string `json:"token"`
}

// LoadCredentials reads a credential file. Errors name the file and say
// what to do.
func LoadCredentials(path string) (*Credentials, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no credentials at %s: start a hub with `outpost node` (it writes <data-dir>/admin.yaml) or pass --config", path)
	}
	if err != nil {
		return nil, fmt.Errorf("read credentials: %w", err)
	}
	var c Credentials
	if err := yaml.UnmarshalStrict(b, &c); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if c.Server == "" || c.Token == "" {
		return nil, fmt.Errorf("%s: server and token are required", path)
	}
	return &c, nil
}

// Write stores the credentials at path, mode 0600, atomically.
func (c *Credentials) Write(path string) error {
	b, err := yaml.Marshal(c)
	if err != nil {
		return err
	}
	return atomicfile.Write(path, b, 0o600)
}

// newToken returns a bearer token "<id>.<secret>" for the AccessToken named
// id, and the hash of its secret to store.
func newToken(id string) (token, hash string) {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	secret := base64.RawURLEncoding.EncodeToString(b)
	return id + "." + secret, hashSecret(secret)
}

// splitToken parses a bearer token into the AccessToken name and secret.
func splitToken(token string) (id, secret string, ok bool) {
	id, secret, ok = strings.Cut(token, ".")
	return id, secret, ok && id != "" && secret != ""
}

func hashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// secretMatches compares in constant time.
func secretMatches(secret, hash string) bool {
	return subtle.ConstantTimeCompare([]byte(hashSecret(secret)), []byte(hash)) == 1
}

// randomSuffix returns n lowercase letters and digits, for generated names.
func randomSuffix(n int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}
