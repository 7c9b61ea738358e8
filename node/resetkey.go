package node

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/outpost-mesh/outpost/internal/atomicfile"
)

// resetKeyFile holds the node's QUIC stateless reset key, in the identity
// directory: secret, and the same across restarts, so that a restarted
// node can tell its peers at once that it lost their connections (they
// would otherwise keep sending on a dead connection until the idle
// timeout, a minute).
const resetKeyFile = "reset.key"

// loadResetKey returns the node's stateless reset key, made on first use.
func loadResetKey(dataDir string) (*[32]byte, error) {
	path := filepath.Join(identityDir(dataDir), resetKeyFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		b = make([]byte, 32)
		if _, err := rand.Read(b); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, err
		}
		if err := atomicfile.Write(path, b, 0o600); err != nil {
			return nil, fmt.Errorf("write %s: %w", path, err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(b) != 32 {
		return nil, fmt.Errorf("%s holds %d bytes, want 32: delete it and restart the node, which makes a new one", path, len(b))
	}
	return (*[32]byte)(b), nil
}
