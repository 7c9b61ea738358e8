// Package clusters holds Outpost's edge Kubernetes clusters: the Cluster
// resource of clusters.outpost.dev/v1alpha1 with its validation, the hub's
// controller that connects to each cluster (directly with a kubeconfig, or
// through the reverse tunnel an edge agent dials), probes it and keeps its
// conditions, the cluster tokens agents authenticate with, and the hooks
// that component installers plug into.
//
// The tunnel's data path lives in clusters/tunnel, behind the Tunnels
// interface; node wires the two. See DESIGN.md for what each condition
// means and when it changes.
package clusters
