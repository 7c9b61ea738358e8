package node

import (
	"fmt"

	"github.com/outpost-mesh/outpost/internal/seal"
)

// statePurpose names the key derived from the mesh CA's key that seals the
// hub state's secrets (consensus.Kind.Secrets).
const statePurpose = "outpost state sealing v1"

// stateSealer returns the Box that seals secret fields in the hub group.
func (n *Node) stateSealer() (*seal.Box, error) {
	der, err := n.ca.KeyDER()
	if err != nil {
		return nil, fmt.Errorf("state sealing key: %w", err)
	}
	k, err := seal.Derive(der, statePurpose)
	if err != nil {
		return nil, fmt.Errorf("state sealing key: %w", err)
	}
	return seal.New(k)
}
