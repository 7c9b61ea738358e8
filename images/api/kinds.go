package api

import (
	"github.com/outpost-mesh/outpost/consensus"
)

// SiteLabel is the label of an ImageStats object naming the node's site.
const SiteLabel = "outpost.dev/site"

var registryColumns = []consensus.Column{
	{Name: "Domain", Type: "string", JSONPath: ".spec.domain"},
	{Name: "Provider", Type: "string", JSONPath: ".spec.provider"},
	{Name: "Insecure", Type: "boolean", JSONPath: ".spec.insecure", Priority: 1},
	{Name: "User", Type: "string", JSONPath: ".spec.credentials.username", Priority: 1},
	{Name: "Repositories", Type: "integer", JSONPath: ".status.repositories"},
}

var repositoryColumns = []consensus.Column{
	{Name: "Registry", Type: "string", JSONPath: ".spec.registryName"},
	{Name: "Repository", Type: "string", JSONPath: ".spec.repositoryName"},
	{Name: "Artifacts", Type: "integer", JSONPath: ".status.artifactCount"},
	{Name: "Pulls", Type: "integer", JSONPath: ".status.pullCount"},
	{Name: "Size", Type: "integer", JSONPath: ".status.sizeBytes"},
	{Name: "Nodes", Type: "integer", JSONPath: ".status.nodes", Priority: 1},
	{Name: "Last-Pulled", Type: "date", JSONPath: ".status.lastPulled", Priority: 1},
}

// Kinds of the images.outpost.dev group.
var (
	// RegistryKind is an upstream registry for one namespace.
	RegistryKind = consensus.Kind{
		Group: Group, Version: Version, Kind: "Registry", Plural: "registries", ShortNames: []string{"reg"},
		Namespaced: true,
		NewSpec:    func() any { return &RegistrySpec{} }, NewStatus: func() any { return &RegistryStatus{} },
		Validate: validateRegistry, Columns: registryColumns,
		Secrets: []string{"credentials.password"},
	}
	// ClusterRegistryKind is an upstream registry for the whole mesh.
	ClusterRegistryKind = consensus.Kind{
		Group: Group, Version: Version, Kind: "ClusterRegistry", Plural: "clusterregistries", ShortNames: []string{"creg"},
		NewSpec: func() any { return &RegistrySpec{} }, NewStatus: func() any { return &RegistryStatus{} },
		Validate: validateRegistry, Columns: registryColumns,
		Secrets: []string{"credentials.password"},
	}
	// RepositoryKind is a repository of a Registry of its namespace.
	RepositoryKind = consensus.Kind{
		Group: Group, Version: Version, Kind: "Repository", Plural: "repositories", ShortNames: []string{"repo"},
		Namespaced: true,
		NewSpec:    func() any { return &RepositorySpec{} }, NewStatus: func() any { return &RepositoryStatus{} },
		Validate: validateRepository, Columns: repositoryColumns,
	}
	// ClusterRepositoryKind is a repository of a ClusterRegistry.
	ClusterRepositoryKind = consensus.Kind{
		Group: Group, Version: Version, Kind: "ClusterRepository", Plural: "clusterrepositories", ShortNames: []string{"crepo"},
		NewSpec: func() any { return &RepositorySpec{} }, NewStatus: func() any { return &RepositoryStatus{} },
		Validate: validateRepository, Columns: repositoryColumns,
	}
	// ImageSyncKind places an image at sites ahead of need.
	ImageSyncKind = consensus.Kind{
		Group: Group, Version: Version, Kind: "ImageSync", Plural: "imagesyncs", ShortNames: []string{"isync"},
		NewSpec: func() any { return &ImageSyncSpec{} }, NewStatus: func() any { return &ImageSyncStatus{} },
		Validate: validateImageSync,
		Columns: []consensus.Column{
			{Name: "Image", Type: "string", JSONPath: ".spec.image"},
			{Name: "Phase", Type: "string", JSONPath: ".status.phase"},
			{Name: "Sent", Type: "integer", JSONPath: ".status.bytesSent"},
			{Name: "Saved", Type: "integer", JSONPath: ".status.bytesSaved"},
			{Name: "Pin", Type: "boolean", JSONPath: ".spec.pin", Priority: 1},
			{Name: "Started", Type: "date", JSONPath: ".status.startTime", Priority: 1},
		},
	}
	// ImageStatsKind is one node's cache figures, named after the node;
	// the hub writes it from the sites' reports.
	ImageStatsKind = consensus.Kind{
		Group: Group, Version: Version, Kind: "ImageStats", Plural: "imagestats", Singular: "imagestats", ShortNames: []string{"istats"},
		ReadOnly:  true,
		NewStatus: func() any { return &ImageStatsStatus{} },
		Columns: []consensus.Column{
			{Name: "Site", Type: "string", JSONPath: ".status.site"},
			{Name: "Hit-Ratio", Type: "number", JSONPath: ".status.hitRatio"},
			{Name: "Saved", Type: "integer", JSONPath: ".status.bytesSaved"},
			{Name: "Stored", Type: "integer", JSONPath: ".status.storeBytes"},
			{Name: "Updated", Type: "date", JSONPath: ".status.updated", Priority: 1},
		},
	}
)

// Kinds lists the group's kinds.
func Kinds() []consensus.Kind {
	return []consensus.Kind{RegistryKind, ClusterRegistryKind, RepositoryKind, ClusterRepositoryKind, ImageSyncKind, ImageStatsKind}
}

// Register adds the group's kinds to r.
func Register(r *consensus.Registry) error {
	for _, k := range Kinds() {
		if err := r.Register(k); err != nil {
			return err
		}
	}
	return nil
}
