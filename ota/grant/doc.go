// Package grant signs and checks the hub's permission for one device run.
//
// The hub's leader signs a Grant for every device of an assignment with the
// mesh CA's key; the site dispatcher carries it untouched in its Raft group
// and in the RunRequest; the node agent checks it with the CA certificate
// every node already holds, and remembers the grants it accepted (Guard),
// so a task forged in a site's store, sent straight to an agent, changed on
// the way or replayed later is refused.
package grant
