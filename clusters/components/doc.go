// Package components installs components into edge clusters: the
// outpost-agent and outpost-node core, edge runtimes (OpenYurt, KubeEdge,
// an etcd for edge autonomy) and virtual clusters (vcluster), each a Helm
// chart from the hub's own OCI registry, installed with the Helm v3 SDK.
//
// Installers register by name from init() (registry.go); Installer is the
// clusters.Installer (and clusters.Provisioner) the cluster controller
// calls: it runs each component of a Cluster's spec.components through
// PreInstall, Install and PostInstall, reporting a condition at each
// phase, and uninstalls them in reverse order on deletion. Adding a
// runtime is one new file that registers it and one line in Defaults.
// See DESIGN.md.
package components
