package node

import (
	"errors"
	"fmt"
	"net"

	"github.com/outpost-mesh/outpost/images/store"
)

// Image cache defaults.
const (
	// DefaultRegistryAddr is where the image mirror listens unless told
	// otherwise: loopback, for the host's own container runtime.
	DefaultRegistryAddr = "127.0.0.1:5000"
	// DefaultCacheSize is the default bound of the image cache, 20 GiB.
	DefaultCacheSize int64 = 20 << 30
)

// validateImages checks the image cache's settings, naming their flags.
func (c Config) validateImages() []error {
	var errs []error
	if c.RegistryAddr != "" {
		if _, port, err := net.SplitHostPort(c.RegistryAddr); err != nil || port == "" {
			errs = append(errs, fmt.Errorf("--registry-addr %q must be host:port (e.g. %s), or \"\" to turn the mirror off", c.RegistryAddr, DefaultRegistryAddr))
		}
	}
	if c.CacheSize < 0 {
		errs = append(errs, fmt.Errorf("--cache-size %d must be 0 (no bound) or a positive size such as 20GiB", c.CacheSize))
	}
	if err := store.ValidateNamespace(c.RegistryDefaultNS); err != nil {
		errs = append(errs, fmt.Errorf("--registry-default-ns %q must be a registry host such as docker.io, or \"\" for the hub's own registry: %w", c.RegistryDefaultNS, err))
	}
	if c.RegistryPush && c.RegistryAddr == "" {
		errs = append(errs, errors.New("--registry-push needs the mirror: set --registry-addr (pushes arrive there)"))
	}
	return errs
}
