package api

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Group and Version of the image resources.
const (
	Group   = "images.outpost.dev"
	Version = "v1alpha1"
)

// RegistryFinalizer is set on every Registry and ClusterRegistry: the
// hub's controller removes their Repositories, and waits for the pending
// ImageSyncs of their domain to end, before it lets them go.
const RegistryFinalizer = "images.outpost.dev/repositories"

// RegistrySpec is an upstream registry: where it is and how the hub
// reaches it. It is the spec of Registry and ClusterRegistry.
type RegistrySpec struct {
	// Domain is the registry's host, with an optional port, as image
	// references and containerd's ns name it: "docker.io",
	// "registry.example.com:5000".
	Domain string `json:"domain"`
	// Provider says what kind of registry it is (informational): generic,
	// dockerhub, harbor, quay, ghcr, gitlab, ecr, gcr, acr.
	Provider string `json:"provider,omitempty"`
	// Insecure reaches the registry over plain HTTP.
	Insecure bool `json:"insecure,omitempty"`
	// Enabled, when false, keeps the object but does not apply it: the
	// registry is reached anonymously over HTTPS. Default true.
	Enabled *bool `json:"enabled,omitempty"`
	// Credentials are used by the hub's members to pull from the
	// registry. The password is write-only: sealed at rest, never
	// returned by the API.
	Credentials *Credentials `json:"credentials,omitempty"`
}

// IsEnabled reports whether the registry's settings apply.
func (s RegistrySpec) IsEnabled() bool { return s.Enabled == nil || *s.Enabled }

// Credentials are a user name and password (or access token) for a
// registry's token or Basic authentication.
type Credentials struct {
	Username string `json:"username,omitempty"`
	// Password is write-only (Kind.Secrets): an update that leaves it out
	// keeps the stored one; "" clears it.
	Password string `json:"password,omitempty"`
}

// RegistryStatus is what the hub's controller says of a registry.
type RegistryStatus struct {
	// Repositories counts the Repositories (ClusterRepositories) that
	// name this registry.
	Repositories int `json:"repositories"`
	// Message explains a deletion held back (an ImageSync in progress).
	Message string `json:"message,omitempty"`
}

// RepositorySpec names a repository of a registry. It is the spec of
// Repository (whose registryName is a Registry of its namespace) and of
// ClusterRepository (a ClusterRegistry).
type RepositorySpec struct {
	RegistryName   string `json:"registryName"`
	RepositoryName string `json:"repositoryName"`
}

// RepositoryStatus aggregates what every node's cache holds of the
// repository, from the nodes' ImageStats.
type RepositoryStatus struct {
	// ArtifactCount is the most manifests one node holds of it.
	ArtifactCount int `json:"artifactCount"`
	// PullCount is the sum of the pulls every node's mirror served.
	PullCount uint64 `json:"pullCount"`
	// SizeBytes is the size of the largest copy a node holds.
	SizeBytes int64 `json:"sizeBytes"`
	// LastPulled is the latest pull at any node.
	LastPulled *metav1.Time `json:"lastPulled,omitempty"`
	// Nodes is how many nodes hold some of it.
	Nodes int `json:"nodes"`
	// Message says why there are no figures (registry not found).
	Message string `json:"message,omitempty"`
}

// ImageSyncSpec places an image at sites before it is pulled.
type ImageSyncSpec struct {
	// Image is the reference: registry/repository:tag or @digest
	// ("nginx:1.27" is docker.io/library/nginx:1.27).
	Image string `json:"image"`
	// Sites are the sites that must hold the image.
	Sites []string `json:"sites"`
	// Platforms ("linux/arm64", "linux/arm/v7") choose the images of an
	// index; empty takes the platforms the site's nodes run.
	Platforms []string `json:"platforms,omitempty"`
	// Pin keeps the image from eviction on every node of the sites while
	// the ImageSync exists.
	Pin bool `json:"pin,omitempty"`
}

// Phases of an ImageSync and of each of its sites.
const (
	PhasePending   = "Pending"
	PhaseRunning   = "Running"
	PhaseSucceeded = "Succeeded"
	PhaseFailed    = "Failed"
)

// Terminal reports whether phase is final.
func Terminal(phase string) bool { return phase == PhaseSucceeded || phase == PhaseFailed }

// ImageSyncStatus is the sync's progress.
type ImageSyncStatus struct {
	Phase          string       `json:"phase,omitempty"`
	Message        string       `json:"message,omitempty"`
	StartTime      *metav1.Time `json:"startTime,omitempty"`
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`
	// BytesSent is the blob bytes that crossed the WAN to the sites;
	// BytesSaved those a site already held (not sent).
	BytesSent  int64          `json:"bytesSent"`
	BytesSaved int64          `json:"bytesSaved"`
	Sites      []SiteProgress `json:"sites,omitempty"`
}

// SiteProgress is one site's share of an ImageSync.
type SiteProgress struct {
	Site  string `json:"site"`
	Phase string `json:"phase"`
	// Node is the node that placed the image (the site's leader).
	Node string `json:"node,omitempty"`
	// Digest is what the reference resolved to.
	Digest    string `json:"digest,omitempty"`
	Manifests int    `json:"manifests"`
	// Blobs and BytesTotal are the image's blobs for the site's
	// platforms; BlobsDone those present or fetched so far.
	Blobs      int   `json:"blobs"`
	BlobsDone  int   `json:"blobsDone"`
	BytesTotal int64 `json:"bytesTotal"`
	// BytesSent crossed the WAN; BytesPresent were at the site already.
	BytesSent    int64        `json:"bytesSent"`
	BytesPresent int64        `json:"bytesPresent"`
	Errors       []string     `json:"errors,omitempty"`
	Updated      *metav1.Time `json:"updated,omitempty"`
}

// ImageStatsStatus is one node's cache figures, reported through its site
// leader to the hub. The object is named after the node.
type ImageStatsStatus struct {
	Site    string       `json:"site"`
	Updated *metav1.Time `json:"updated,omitempty"`
	// BlobHits and BlobMisses count the blob requests the node's chain
	// answered from its store, or had to fetch; HitRatio is
	// hits/(hits+misses).
	BlobHits   uint64  `json:"blobHits"`
	BlobMisses uint64  `json:"blobMisses"`
	HitRatio   float64 `json:"hitRatio"`
	// Bytes the node fetched, by where from. BytesSaved is what came
	// from site peers instead of the WAN.
	BytesFromPeers  uint64 `json:"bytesFromPeers"`
	BytesFromHub    uint64 `json:"bytesFromHub"`
	BytesFromOrigin uint64 `json:"bytesFromOrigin"`
	BytesSaved      uint64 `json:"bytesSaved"`
	// StoreBytes is the node's cache size.
	StoreBytes int64 `json:"storeBytes"`
	// Repositories are the repositories the node holds, most pulled
	// first, at most MaxStatsRepositories; Truncated says some were left
	// out.
	Repositories []RepositoryUsage `json:"repositories,omitempty"`
	Truncated    bool              `json:"truncated,omitempty"`
}

// MaxStatsRepositories bounds the repositories one node reports.
const MaxStatsRepositories = 128

// RepositoryUsage is one repository in a node's cache.
type RepositoryUsage struct {
	// Registry is the registry's domain ("" for the hub's own).
	Registry   string       `json:"registry"`
	Repository string       `json:"repository"`
	Artifacts  int          `json:"artifacts"`
	Pulls      uint64       `json:"pulls"`
	SizeBytes  int64        `json:"sizeBytes"`
	LastPulled *metav1.Time `json:"lastPulled,omitempty"`
}
