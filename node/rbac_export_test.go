package node

import "context"

// RequiredRole exposes the policy to the role tests.
var RequiredRole = requiredRole

// PruneAuditNow prunes n's audit log once, as the leader's loop does.
func PruneAuditNow(n *Node) { _ = n.access.audit.prune(context.Background()) }
