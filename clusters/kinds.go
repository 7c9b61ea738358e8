package clusters

import (
	"github.com/outpost-mesh/outpost/consensus"
)

// ClusterKind is an edge Kubernetes cluster the hub manages. It is
// cluster-scoped; its kubeconfig and token hash are write-only.
var ClusterKind = consensus.Kind{
	Group: Group, Version: Version, Kind: "Cluster", Plural: "clusters", ShortNames: []string{"cl"},
	NewSpec:   func() any { return &ClusterSpec{} },
	NewStatus: func() any { return &ClusterStatus{} },
	Validate:  validateCluster,
	Secrets:   []string{"connection.kubeconfig", "connection.tokenHash"},
	Columns: []consensus.Column{
		{Name: "Connection", Type: "string", JSONPath: ".spec.connection.type"},
		{Name: "Ready", Type: "string", JSONPath: `.status.conditions[?(@.type=="Ready")].status`},
		{Name: "Schedulable", Type: "string", JSONPath: `.status.conditions[?(@.type=="Schedulable")].status`},
		{Name: "Version", Type: "string", JSONPath: ".status.kubernetesVersion"},
		{Name: "Nodes", Type: "integer", JSONPath: ".status.nodeCount"},
		{Name: "Reason", Type: "string", JSONPath: `.status.conditions[?(@.type=="Ready")].reason`, Priority: 1},
		{Name: "Provider", Type: "string", JSONPath: ".spec.provider", Priority: 1},
		{Name: "Region", Type: "string", JSONPath: ".status.region", Priority: 1},
		{Name: "API-Port", Type: "integer", JSONPath: ".status.connection.kubernetesAPIServerPort", Priority: 1},
		{Name: "UID", Type: "string", JSONPath: ".status.uid", Priority: 1},
		{Name: "Last-Probe", Type: "date", JSONPath: ".status.lastProbeTime", Priority: 1},
	},
}

// Register adds the clusters kinds to r.
func Register(r *consensus.Registry) error {
	return r.Register(ClusterKind)
}
