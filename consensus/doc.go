// Package consensus keeps Outpost's state: a Raft group (hashicorp/raft) whose
// log and stable store live in Badger, an FSM that applies typed, versioned
// commands to a Badger state store, and on top of it a replicated object store
// with the semantics of the Kubernetes API: objects with metadata, spec and
// status, resourceVersion equal to the Raft index, optimistic concurrency,
// finalizers, label selectors and watch from a resourceVersion.
//
// See DESIGN.md for the invariants.
package consensus
