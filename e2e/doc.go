// Package e2e runs the real outpost binary as a mesh of separate processes,
// one per host of a netlab lab (network namespaces), and checks what an
// operator would: that hubs and sites form from join tokens, survive the
// loss of leaders, links and restarts, and refuse bad tokens.
//
// The tests carry the build tag e2e and need root; see README.md. This file
// has no tag so that the package is never empty to the go command.
package e2e
