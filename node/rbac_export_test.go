package node

import (
	"context"
	"time"

	"github.com/outpost-mesh/outpost/ota"
	"github.com/outpost-mesh/outpost/ota/control"
)

// RequiredRole exposes the policy to the role tests.
var RequiredRole = requiredRole

// PruneAuditNow prunes n's audit log once, as the leader's loop does.
func PruneAuditNow(n *Node) error { return PruneAuditAt(n, time.Now()) }

// PruneAuditAt prunes n's audit log once as the leader's loop would at
// now, for the retention by age.
func PruneAuditAt(n *Node, now time.Time) error {
	return n.access.audit.prune(context.Background(), now)
}

// SendRun sends a run request straight to the agent of node target, a
// member of n's site, as any holder of a site certificate could: not
// through n's site store and dispatcher.
func SendRun(ctx context.Context, n *Node, target string, req control.RunRequest) (ota.DeviceResultStatus, error) {
	return otaRunner{n}.Run(ctx, target, req)
}
