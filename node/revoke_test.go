package node_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"
)

// TestRevokedNodeDisconnected: deleting a node closes the connection the
// hub holds from it at once, not only its next handshake and streams.
func TestRevokedNodeDisconnected(t *testing.T) {
	t.Parallel()
	hub := startNode(t)
	token := hub.createToken(t, "rv", 0, time.Time{})
	startEdge(t, hub.hubQUIC(t), token, "rv-1")
	eventually(t, 60*time.Second, func() error {
		if code, b := hub.do(t, call{method: http.MethodGet, path: nodesPath + "/rv-1"}); code != http.StatusOK {
			return fmt.Errorf("%d %s", code, b)
		}
		return nil
	})
	if got := hubMetric(t, hub, "outpost_transport_connections"); got < 1 {
		t.Fatalf("the hub holds %v connections with rv-1 reporting to it", got)
	}
	if got := hubMetric(t, hub, "outpost_transport_revoked_connections_closed_total"); got != 0 {
		t.Fatalf("%v connections closed for a revocation before any", got)
	}
	if code, b := hub.do(t, call{method: http.MethodDelete, path: nodesPath + "/rv-1"}); code != http.StatusOK {
		t.Fatalf("delete node rv-1: %d %s", code, b)
	}
	eventually(t, 30*time.Second, func() error {
		if got := hubMetric(t, hub, "outpost_transport_revoked_connections_closed_total"); got < 1 {
			return fmt.Errorf("no connection closed for rv-1's revocation")
		}
		return nil
	})
}
