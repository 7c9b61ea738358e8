package node

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/outpost-mesh/outpost/clusters"
	"github.com/outpost-mesh/outpost/consensus"
	"github.com/outpost-mesh/outpost/ota"
	"github.com/outpost-mesh/outpost/ota/control"
)

// CoreGroup is the API group of Outpost's own resources.
const CoreGroup = "core.outpost.dev"

// NodeSpec is what an operator sets on a node.
type NodeSpec struct {
	// Labels beyond metadata.labels are not kept here: label nodes through
	// metadata. Unschedulable keeps new tasks off the node.
	Unschedulable bool `json:"unschedulable,omitempty"`
}

// NodeStatus is what a node reports about itself.
type NodeStatus struct {
	Role          string         `json:"role,omitempty"`
	Site          string         `json:"site,omitempty"`
	State         string         `json:"state,omitempty"`
	Version       string         `json:"version,omitempty"`
	OS            string         `json:"os,omitempty"`
	Arch          string         `json:"arch,omitempty"`
	Addresses     []NodeAddress  `json:"addresses,omitempty"`
	QUICAddr      string         `json:"quicAddr,omitempty"`
	GossipAddr    string         `json:"gossipAddr,omitempty"`
	APIEndpoint   string         `json:"apiEndpoint,omitempty"`
	StartTime     *metav1.Time   `json:"startTime,omitempty"`
	HeartbeatTime *metav1.Time   `json:"heartbeatTime,omitempty"`
	LastSeen      *metav1.Time   `json:"lastSeen,omitempty"`
	Raft          *NodeRaftState `json:"raft,omitempty"`
}

// NodeAddress is one address of a node.
type NodeAddress struct {
	Type    string `json:"type"`
	Address string `json:"address"`
}

// NodeRaftState is the node's place in its site's Raft group.
type NodeRaftState struct {
	State string `json:"state"`
	Term  uint64 `json:"term"`
}

// SiteSpec describes a site.
type SiteSpec struct {
	Description string `json:"description,omitempty"`
	Location    string `json:"location,omitempty"`
}

// SiteStatus is the hub's view of a site.
type SiteStatus struct {
	Connected bool         `json:"connected"`
	Leader    string       `json:"leader,omitempty"`
	NodeCount int          `json:"nodeCount"`
	LastSeen  *metav1.Time `json:"lastSeen,omitempty"`
	Versions  []string     `json:"versions,omitempty"`
}

// AccessTokenSpec is an API credential. The secret is never stored, only
// its SHA-256, and the hash is never returned by the API.
type AccessTokenSpec struct {
	Role       string       `json:"role"`
	SecretHash string       `json:"secretHash,omitempty"`
	Expires    *metav1.Time `json:"expires,omitempty"`
}

// Roles an AccessToken may have.
const (
	RoleAdmin    = "admin"
	RoleOperator = "operator"
	RoleViewer   = "viewer"
)

// Kinds of the core group.
var (
	NodeKind = consensus.Kind{
		Group: CoreGroup, Version: "v1alpha1", Kind: "Node", Plural: "nodes", ShortNames: []string{"no"},
		NewSpec: func() any { return &NodeSpec{} }, NewStatus: func() any { return &NodeStatus{} },
		Columns: []consensus.Column{
			{Name: "Site", Type: "string", JSONPath: ".status.site"},
			{Name: "Role", Type: "string", JSONPath: ".status.role"},
			{Name: "State", Type: "string", JSONPath: ".status.state"},
			{Name: "Version", Type: "string", JSONPath: ".status.version"},
			{Name: "Raft", Type: "string", JSONPath: ".status.raft.state", Priority: 1},
			{Name: "OS", Type: "string", JSONPath: ".status.os", Priority: 1},
			{Name: "Arch", Type: "string", JSONPath: ".status.arch", Priority: 1},
			{Name: "Address", Type: "string", JSONPath: ".status.addresses[0].address", Priority: 1},
			{Name: "Last-Seen", Type: "date", JSONPath: ".status.lastSeen", Priority: 1},
		},
	}
	SiteKind = consensus.Kind{
		Group: CoreGroup, Version: "v1alpha1", Kind: "Site", Plural: "sites",
		NewSpec: func() any { return &SiteSpec{} }, NewStatus: func() any { return &SiteStatus{} },
		Columns: []consensus.Column{
			{Name: "Connected", Type: "boolean", JSONPath: ".status.connected"},
			{Name: "Nodes", Type: "integer", JSONPath: ".status.nodeCount"},
			{Name: "Leader", Type: "string", JSONPath: ".status.leader"},
			{Name: "Last-Seen", Type: "date", JSONPath: ".status.lastSeen", Priority: 1},
			{Name: "Location", Type: "string", JSONPath: ".spec.location", Priority: 1},
		},
	}
	AccessTokenKind = consensus.Kind{
		Group: CoreGroup, Version: "v1alpha1", Kind: "AccessToken", Plural: "accesstokens",
		NewSpec:  func() any { return &AccessTokenSpec{} },
		Secrets:  []string{"secretHash"}, // served to admins only (rbac.go), never with its hash
		Validate: validateAccessToken,
		Columns: []consensus.Column{
			{Name: "Role", Type: "string", JSONPath: ".spec.role"},
			{Name: "Expires", Type: "date", JSONPath: ".spec.expires"},
		},
	}
)

func validateAccessToken(obj *consensus.Object) field.ErrorList {
	var spec AccessTokenSpec
	if err := obj.DecodeSpec(&spec); err != nil {
		return field.ErrorList{field.Invalid(field.NewPath("spec"), string(obj.Spec), err.Error())}
	}
	switch spec.Role {
	case RoleAdmin, RoleOperator, RoleViewer:
	default:
		return field.ErrorList{field.NotSupported(field.NewPath("spec", "role"), spec.Role, []string{RoleAdmin, RoleOperator, RoleViewer})}
	}
	return nil
}

// CoreKinds returns a registry with the core kinds.
func CoreKinds() *consensus.Registry {
	r := consensus.NewRegistry()
	r.MustRegister(NodeKind, SiteKind, AccessTokenKind, AuditEventKind, JoinTokenKind, MemberKind, SecretKind, RevocationKind,
		ota.TaskKind, ota.DeviceResultKind, control.SiteTaskKind, control.DeviceRunKind, GrantRefusalKind,
		clusters.ClusterKind)
	return r
}
