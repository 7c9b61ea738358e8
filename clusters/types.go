package clusters

import (
	"encoding/json"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// API group and version of the clusters resources.
const (
	Group   = "clusters.outpost.dev"
	Version = "v1alpha1"
)

// Connection types.
const (
	// ConnectionDirect: the hub reaches the cluster's API server with the
	// kubeconfig in the spec.
	ConnectionDirect = "direct"
	// ConnectionProxy: an agent in the cluster dials the hub and the hub
	// reaches the API server through that reverse tunnel.
	ConnectionProxy = "proxy"
)

// Finalizer guards a Cluster's deletion until the controller has cleaned
// up after it.
const Finalizer = "clusters.outpost.dev/cleanup"

// ClusterSpec is what an operator asks for an edge Kubernetes cluster.
type ClusterSpec struct {
	// Provider says where the cluster comes from (k3s, eks, kubeadm, ...);
	// informational.
	Provider string `json:"provider,omitempty"`
	// Enable, when false, keeps the controller from connecting: the
	// cluster is left as it is and reported not Ready. Default true.
	Enable *bool `json:"enable,omitempty"`
	// Connection says how the hub reaches the cluster's API server.
	Connection Connection `json:"connection"`
	// ExternalKubeAPIEnabled binds a proxy cluster's tunnel ports on the
	// hub's public address instead of loopback.
	ExternalKubeAPIEnabled bool `json:"externalKubeAPIEnabled,omitempty"`
	// Components are the components to install in the cluster (the
	// installers' business; see Installer). Empty: the installers'
	// defaults.
	Components []Component `json:"components,omitempty"`
	// VCluster, when enabled, makes this Cluster a virtual cluster that
	// the hub runs inside another Cluster (its host) and connects to
	// itself: connection.type is direct and the hub fills the kubeconfig.
	VCluster *VCluster `json:"vcluster,omitempty"`
}

// Provisioned reports whether the hub makes this cluster and its
// connection itself (a virtual cluster) rather than being given them.
func (s *ClusterSpec) Provisioned() bool { return s.VCluster != nil && s.VCluster.Enabled }

// Virtual cluster distributions (spec.vcluster.distro): the vcluster
// chart's controlPlane.distro.
const (
	DistroK8s = "k8s"
	DistroK3s = "k3s"
	DistroK0s = "k0s"
)

// HostNamespace is the host namespace the virtual cluster of Cluster
// name runs in.
func (v *VCluster) HostNamespace(name string) string {
	if v.Namespace != "" {
		return v.Namespace
	}
	return "vcluster-" + name
}

// VCluster is a virtual cluster: a control plane run by the vcluster
// chart in a namespace of a host Cluster.
type VCluster struct {
	// Enabled turns the virtual cluster on.
	Enabled bool `json:"enabled,omitempty"`
	// Distro is the control plane's distribution: k8s (default), k3s or
	// k0s.
	Distro string `json:"distro,omitempty"`
	// HostCluster names the Cluster the virtual cluster runs in.
	HostCluster string `json:"hostCluster"`
	// Namespace is the host namespace it runs in; default
	// vcluster-<name> (see HostNamespace).
	Namespace string `json:"namespace,omitempty"`
	// Endpoint is an https:// URL at which the hub reaches the virtual
	// API server (a NodePort, a LoadBalancer); default: a loopback port
	// of the hub forwarded to the vcluster pod through the host's API
	// server (direct or tunnelled), with tls-server-name kept.
	Endpoint string `json:"endpoint,omitempty"`
	// Values are extra chart values, a JSON object, merged over the ones
	// the hub sets.
	Values json.RawMessage `json:"values,omitempty"`
	// Chart and Version override the vcluster chart in the hub's
	// registry.
	Chart   string `json:"chart,omitempty"`
	Version string `json:"version,omitempty"`
}

// Enabled reports spec.enable, true when unset.
func (s *ClusterSpec) Enabled() bool { return s.Enable == nil || *s.Enable }

// Connection is how the hub reaches a cluster.
type Connection struct {
	// Type is direct or proxy.
	Type string `json:"type"`
	// Kubeconfig (direct) is the kubeconfig file's bytes; base64 in JSON
	// and YAML, as Kubernetes encodes []byte. Write-only: sealed at rest
	// and never returned by the API.
	Kubeconfig []byte `json:"kubeconfig,omitempty"`
	// KubernetesAPIEndpoint (direct, optional) replaces the kubeconfig's
	// server URL, for a kubeconfig written for another vantage point.
	KubernetesAPIEndpoint string `json:"kubernetesAPIEndpoint,omitempty"`
	// TokenHash (proxy) is the hex SHA-256 of the cluster token its agent
	// authenticates with; `outpost cluster create --proxy` and `outpost
	// cluster token` set it. Write-only.
	TokenHash string `json:"tokenHash,omitempty"`
}

// Component is one component installed in a cluster by a registered
// installer (outpost-agent, openyurt, kubeedge, vcluster, ...).
type Component struct {
	// Name is the installer's registered name.
	Name string `json:"name"`
	// Enabled, when false, leaves the component out (or uninstalls it).
	// Default true.
	Enabled *bool `json:"enabled,omitempty"`
	// Values are the component's chart values, a JSON object.
	Values json.RawMessage `json:"values,omitempty"`
	// Chart overrides the component's default chart: an OCI reference in
	// the hub's registry, with Version its tag.
	Chart   string `json:"chart,omitempty"`
	Version string `json:"version,omitempty"`
}

// ClusterStatus is what the controller observes of a cluster.
type ClusterStatus struct {
	// Conditions are tri-state; see DESIGN.md for each type.
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// ObservedGeneration is the spec generation the conditions are for.
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// KubernetesVersion is the API server's gitVersion (/version).
	KubernetesVersion string `json:"kubernetesVersion,omitempty"`
	// NodeCount is how many Node objects the cluster has.
	NodeCount int `json:"nodeCount"`
	// UID is the kube-system namespace's UID: the physical cluster's
	// identity, which no two Clusters may share.
	UID string `json:"uid,omitempty"`
	// Region and Zones come from the nodes' topology.kubernetes.io labels.
	Region string   `json:"region,omitempty"`
	Zones  []string `json:"zones,omitempty"`
	// Connection holds a proxy cluster's tunnel ports on the hub.
	Connection *Ports `json:"connection,omitempty"`
	// LastProbeTime is when the controller last probed the cluster.
	LastProbeTime *metav1.Time `json:"lastProbeTime,omitempty"`
	// LastHeardTime is when the cluster's API server last answered a
	// probe (directly or through the tunnel); the grace period counts
	// from it.
	LastHeardTime *metav1.Time `json:"lastHeardTime,omitempty"`
}

// Condition types of a Cluster.
const (
	// ConditionInitialized: the hub has accepted the Cluster and set up
	// its side (finalizer, token, tunnel ports).
	ConditionInitialized = "Initialized"
	// ConditionAgentAvailable: the hub can talk to the cluster's API server
	// with the credentials it has (directly, or through a connected agent).
	ConditionAgentAvailable = "AgentAvailable"
	// ConditionCoreReady: the core components are installed and ready; set
	// by the installers, absent when no core components are requested.
	ConditionCoreReady = "CoreReady"
	// ConditionReady: initialized, reachable, healthy, and core-ready when
	// core components are requested.
	ConditionReady = "Ready"
	// ConditionSchedulable: at least one node is Ready, schedulable and
	// has allocatable CPU and memory.
	ConditionSchedulable = "Schedulable"
)

// Condition reasons the controller sets.
const (
	ReasonInitialized       = "Initialized"
	ReasonDisabled          = "Disabled"
	ReasonInvalidSpec       = "InvalidSpec"
	ReasonNoToken           = "NoToken"
	ReasonNoTunnel          = "TunnelsUnavailable"
	ReasonPortsExhausted    = "PortsExhausted"
	ReasonPortInUse         = "PortInUse"
	ReasonTunnelFailed      = "TunnelFailed"
	ReasonAgentConnected    = "AgentConnected"
	ReasonAgentNotConnected = "AgentNotConnected"
	ReasonConnected         = "Connected"
	ReasonUnauthorized      = "Unauthorized"
	ReasonCertificate       = "CertificateInvalid"
	ReasonUnreachable       = "Unreachable"
	ReasonProbeFailed       = "ProbeFailed"
	ReasonHealthy           = "Healthy"
	ReasonUnhealthy         = "Unhealthy"
	ReasonNotReachable      = "NotReachable"
	ReasonDuplicateCluster  = "DuplicateCluster"
	ReasonCoreNotReady      = "CoreNotReady"
	ReasonNotInitialized    = "NotInitialized"
	ReasonSchedulableNodes  = "SchedulableNodes"
	ReasonNoSchedulable     = "NoSchedulableNodes"
	ReasonInstallFailed     = "InstallFailed"
	ReasonCleanupFailed     = "CleanupFailed"
	ReasonDeleting          = "Deleting"
	ReasonProvisioning      = "Provisioning"
)
