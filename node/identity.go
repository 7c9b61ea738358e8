package node

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"sigs.k8s.io/yaml"

	"github.com/outpost-mesh/outpost/internal/atomicfile"
)

// identity is what a node keeps after joining: who it is, its certificate,
// the mesh CA, its site's gossip key and where the hub is. It lives in
// <data-dir>/identity/ and makes later starts need no token.
type identity struct {
	Name string `json:"name"`
	Site string `json:"site"`
	Role string `json:"role"`
	// BootstrapSite is true for the first node of its site, which forms
	// the site's Raft group alone; the others are added by its leader.
	BootstrapSite bool     `json:"bootstrapSite"`
	GossipKey     []byte   `json:"gossipKey"`
	GossipSeeds   []string `json:"gossipSeeds,omitempty"`
	HubAddrs      []string `json:"hubAddrs,omitempty"`

	dir   string
	mu    sync.RWMutex
	cert  *tls.Certificate
	ca    *x509.Certificate
	caPEM []byte
}

const identityFile = "identity.yaml"

func identityDir(dataDir string) string { return filepath.Join(dataDir, "identity") }

// loadIdentity reads the identity in dataDir; nil, nil when the node has
// never joined.
func loadIdentity(dataDir string) (*identity, error) {
	dir := identityDir(dataDir)
	b, err := os.ReadFile(filepath.Join(dir, identityFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read identity: %w", err)
	}
	id := &identity{dir: dir}
	if err := yaml.UnmarshalStrict(b, id); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, identityFile), err)
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "node.crt"), filepath.Join(dir, "node.key"))
	if err != nil {
		return nil, fmt.Errorf("load node certificate from %s: %w", dir, err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		return nil, fmt.Errorf("read mesh CA: %w", err)
	}
	if err := id.setCerts(&cert, caPEM); err != nil {
		return nil, err
	}
	return id, nil
}

// setCerts installs a certificate and the CA it chains to.
func (id *identity) setCerts(cert *tls.Certificate, caPEM []byte) error {
	if cert.Leaf == nil {
		leaf, err := x509.ParseCertificate(cert.Certificate[0])
		if err != nil {
			return fmt.Errorf("parse node certificate: %w", err)
		}
		cert.Leaf = leaf
	}
	block, _ := pem.Decode(caPEM)
	if block == nil {
		return errors.New("mesh CA is not PEM")
	}
	ca, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return fmt.Errorf("parse mesh CA: %w", err)
	}
	if len(cert.Certificate) == 1 {
		// Serve the chain: a joining node pins the hub by its CA, which it
		// can only check when the CA comes with the leaf.
		cert.Certificate = append(cert.Certificate, ca.Raw)
	}
	id.mu.Lock()
	id.cert, id.ca, id.caPEM = cert, ca, caPEM
	id.mu.Unlock()
	return nil
}

// certificate returns the current node certificate; renewal swaps it.
func (id *identity) certificate() (*tls.Certificate, error) {
	id.mu.RLock()
	defer id.mu.RUnlock()
	return id.cert, nil
}

func (id *identity) caPool() *x509.CertPool {
	id.mu.RLock()
	defer id.mu.RUnlock()
	p := x509.NewCertPool()
	p.AddCert(id.ca)
	return p
}

// save writes the identity: certificate and key first, identity.yaml last,
// so a crash never leaves an identity without its certificate.
func (id *identity) save() error {
	if err := os.MkdirAll(id.dir, 0o700); err != nil {
		return err
	}
	id.mu.RLock()
	cert, caPEM := id.cert, id.caPEM
	id.mu.RUnlock()
	certPEM, keyPEM, err := encodeCert(cert)
	if err != nil {
		return err
	}
	files := []struct {
		name string
		data []byte
		mode os.FileMode
	}{{"node.key", keyPEM, 0o600}, {"node.crt", certPEM, 0o644}, {"ca.crt", caPEM, 0o644}}
	for _, f := range files {
		if err := atomicfile.Write(filepath.Join(id.dir, f.name), f.data, f.mode); err != nil {
			return err
		}
	}
	// The hub link changes HubAddrs under mu while a renewal saves.
	id.mu.RLock()
	b, err := yaml.Marshal(id)
	id.mu.RUnlock()
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(id.dir, identityFile), b, 0o600)
}

func encodeCert(cert *tls.Certificate) (certPEM, keyPEM []byte, err error) {
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]})
	der, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		return nil, nil, fmt.Errorf("encode node key: %w", err)
	}
	return certPEM, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}
