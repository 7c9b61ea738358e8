// Package grant signs and checks the hub's permission for one device run.
//
// The hub's leader signs the Grants of an assignment's devices together
// with the mesh CA's key (one signature over their names' Merkle tree
// head, a proof of inclusion in each); the site dispatcher carries each
// untouched in its Raft group and in the RunRequest; the node agent checks
// its own with the CA certificate every node already holds, and remembers
// the grants it accepted (Guard), so a task forged in a site's store, sent
// straight to an agent, changed on the way or replayed later is refused.
package grant
