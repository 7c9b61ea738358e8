// Package agent is the node side of OTA: it runs a task's steps on this
// host — exec, read, write, playbook — under the node's policy, and records
// each step's result before moving on so that a re-dispatch never runs a step
// twice. It knows nothing of the mesh: the caller hands it steps and a
// Journal and carries the results away.
//
// See ../DESIGN.md for the step semantics.
package agent
