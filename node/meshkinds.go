package node

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/outpost-mesh/outpost/consensus"
)

// JoinTokenSpec is a join token as stored: the secret never reaches the
// hub, only its SHA-256 (the CLI makes the secret and prints the token).
type JoinTokenSpec struct {
	Site       string       `json:"site"`
	SecretHash string       `json:"secretHash"`
	Expires    *metav1.Time `json:"expires,omitempty"`
	// MaxUses is how many nodes may join with the token; 0 is unlimited.
	MaxUses int `json:"maxUses,omitempty"`
}

// JoinTokenStatus counts the joins a token allowed.
type JoinTokenStatus struct {
	Uses     int          `json:"uses"`
	LastUsed *metav1.Time `json:"lastUsed,omitempty"`
	LastNode string       `json:"lastNode,omitempty"`
	// LastKeyHash is the SHA-256 of the last joining node's public key: a
	// join asked again with the same key (its member was not recorded:
	// the hub lost its leadership between the two writes) is not counted
	// twice.
	LastKeyHash string `json:"lastKeyHash,omitempty"`
}

// MemberSpec records a node's mesh identity: kept by the hub from join to
// deletion, so a name is never taken twice and revocation is remembered.
type MemberSpec struct {
	Site    string   `json:"site"`
	Role    string   `json:"role"`
	Serials []string `json:"serials"`
	// GossipAddr is where the node gossips; the hub hands it to later
	// joiners of the site as a seed.
	GossipAddr string       `json:"gossipAddr,omitempty"`
	Joined     *metav1.Time `json:"joined,omitempty"`
	// KeyHash is the SHA-256 (hex) of the public key the node joined
	// with: a join retried with that key (its answer was lost) is answered
	// again rather than refused as a taken name.
	KeyHash string `json:"keyHash,omitempty"`
}

// SecretSpec holds key material replicated in the hub group: the mesh CA
// (name "mesh-ca") and each site's gossip key (name "site-<site>").
type SecretSpec struct {
	Data map[string][]byte `json:"data"`
}

// Kinds of the mesh.
var (
	JoinTokenKind = consensus.Kind{
		Group: CoreGroup, Version: "v1alpha1", Kind: "JoinToken", Plural: "jointokens", ShortNames: []string{"jt"},
		NewSpec: func() any { return &JoinTokenSpec{} }, NewStatus: func() any { return &JoinTokenStatus{} },
		Validate: validateJoinToken,
		Columns: []consensus.Column{
			{Name: "Site", Type: "string", JSONPath: ".spec.site"},
			{Name: "Uses", Type: "integer", JSONPath: ".status.uses"},
			{Name: "Max-Uses", Type: "integer", JSONPath: ".spec.maxUses"},
			{Name: "Expires", Type: "date", JSONPath: ".spec.expires"},
		},
	}
	MemberKind = consensus.Kind{
		Group: CoreGroup, Version: "v1alpha1", Kind: "Member", Plural: "members", Hidden: true,
		NewSpec: func() any { return &MemberSpec{} },
	}
	SecretKind = consensus.Kind{
		Group: CoreGroup, Version: "v1alpha1", Kind: "Secret", Plural: "secrets", Hidden: true,
		NewSpec: func() any { return &SecretSpec{} },
	}
)

func validateJoinToken(obj *consensus.Object) field.ErrorList {
	var spec JoinTokenSpec
	if err := obj.DecodeSpec(&spec); err != nil {
		return field.ErrorList{field.Invalid(field.NewPath("spec"), "", err.Error())}
	}
	var errs field.ErrorList
	for _, msg := range validation.IsDNS1123Label(spec.Site) {
		errs = append(errs, field.Invalid(field.NewPath("spec", "site"), spec.Site, msg))
	}
	if len(spec.SecretHash) != 64 {
		errs = append(errs, field.Invalid(field.NewPath("spec", "secretHash"), "", "must be the hex SHA-256 of the secret"))
	}
	if spec.MaxUses < 0 {
		errs = append(errs, field.Invalid(field.NewPath("spec", "maxUses"), spec.MaxUses, "must not be negative"))
	}
	return errs
}
