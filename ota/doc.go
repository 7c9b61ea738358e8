// Package ota holds Outpost's batch operations (OTA): the API types of
// ota.outpost.dev/v1alpha1 — Task, what an operator asks of a set of nodes,
// and DeviceResult, what one node did — their Kinds for the object store,
// and the validation that turns a bad spec into field errors with exact
// paths. The node-side executor lives in ota/agent.
//
// See DESIGN.md for the step semantics.
package ota
