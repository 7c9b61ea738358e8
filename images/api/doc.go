// Package api holds the resources of images.outpost.dev/v1alpha1: Registry
// and ClusterRegistry (an upstream registry and its write-only
// credentials), Repository and ClusterRepository (a repository of one,
// with figures aggregated from every node), ImageSync (place an image at
// sites before it is pulled) and ImageStats (one node's cache figures).
// It declares their Go types, their consensus.Kinds and the validation
// that turns a bad spec into field errors with exact paths; node wires the
// controllers. See DESIGN.md.
package api
