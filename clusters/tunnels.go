package clusters

import (
	"context"
	"errors"
	"time"
)

// Tunnels errors. Implementations wrap them so the controller can tell the
// operator which one it was in a condition.
var (
	// ErrPortInUse: the operating system refused to bind a port the
	// controller asked for (another process holds it).
	ErrPortInUse = errors.New("tunnel port in use")
	// ErrPortsExhausted: --tunnel-ports has no free pair of ports left.
	ErrPortsExhausted = errors.New("no free ports left in --tunnel-ports")
)

// Ports are the hub-side ports of a proxy cluster's tunnel, as recorded in
// its status (status.connection) so that a new hub leader binds the same
// ones.
type Ports struct {
	// KubernetesAPI carries connections to the edge cluster's API server.
	KubernetesAPI int `json:"kubernetesAPIServerPort,omitempty"`
	// PlatformAPI carries connections to the agent's platform API.
	PlatformAPI int `json:"platformAPIServerPort,omitempty"`
}

// IsZero reports whether no port is set.
func (p Ports) IsZero() bool { return p.KubernetesAPI == 0 && p.PlatformAPI == 0 }

// Binding is what the controller asks a tunnel to serve for one cluster.
type Binding struct {
	// Ports are always set: the controller allocates them from
	// --tunnel-ports and records them in the Cluster's status before it
	// calls Ensure, so Ensure binds exactly these (after a hub failover,
	// the same ones again).
	Ports Ports
	// External binds the ports on the hub's public address instead of
	// loopback (spec.externalKubeAPIEnabled).
	External bool
}

// TunnelState is what a tunnel knows of one cluster's agent.
type TunnelState struct {
	// Ports are the ports bound (equal to the Binding's).
	Ports Ports
	// Connected says an agent is connected and authenticated now.
	Connected bool
	// LastSeen is when the agent was last heard from (zero: never).
	LastSeen time.Time
	// ServerCA is the PEM bundle of the edge API server's CA, as the agent
	// reported it: TLS runs end to end through the tunnel.
	ServerCA []byte
	// ServerName is the name to verify the edge API server's certificate
	// against (the kubeconfig's tls-server-name), e.g.
	// "kubernetes.default.svc".
	ServerName string
	// BearerToken, or ClientCert and ClientKey (PEM), are the credentials
	// the agent reported for the hub to use against the edge API server.
	BearerToken string
	ClientCert  []byte
	ClientKey   []byte
}

// Tunnels carries proxy clusters' connections over the reverse tunnels
// their agents dial. The hub leader's controller is its only caller; calls
// for different clusters may run concurrently, never two for one cluster.
type Tunnels interface {
	// Ensure binds (or keeps bound, or re-binds after a hub failover) the
	// cluster's API and platform ports and reports its agent's state. An
	// error wraps ErrPortInUse when a port cannot be bound.
	Ensure(ctx context.Context, cluster string, want Binding) (TunnelState, error)
	// Release unbinds the cluster's ports and drops its agent's
	// connection. Releasing an unknown cluster is not an error.
	Release(ctx context.Context, cluster string) error
}
