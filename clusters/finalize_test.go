package clusters

import (
	"context"
	"net"
	"net/url"
	"sync"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/outpost-mesh/outpost/consensus"
)

// cleanupProbe is an Installer whose Uninstall records what it finds: the
// cluster reachable through the Target's connection, the agent's token
// still valid, the tunnel not yet released.
type cleanupProbe struct {
	store *consensus.Store
	tun   *forwardTunnels
	token string

	mu                               sync.Mutex
	calls                            int
	reached, tokenValid, notReleased bool
}

func (p *cleanupProbe) Install(context.Context, *Target) ([]metav1.Condition, error) {
	return nil, nil
}

func (p *cleanupProbe) Uninstall(ctx context.Context, t *Target) error {
	reached := false
	if t.Config != nil {
		if cs, err := kubernetes.NewForConfig(t.Config); err == nil {
			_, err = cs.CoreV1().Namespaces().Get(ctx, "kube-system", metav1.GetOptions{})
			reached = err == nil
		}
	}
	valid := VerifyToken(ctx, p.store, t.Name, p.token) == nil
	p.tun.mu.Lock()
	notReleased := len(p.tun.released) == 0
	p.tun.mu.Unlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls++
	p.reached, p.tokenValid, p.notReleased = reached, valid, notReleased
	return nil
}

// TestDeletionOrder: deleting a proxy Cluster runs the installers' cleanup
// while the cluster is still reachable through its tunnel and its agent's
// token still valid; then the token is revoked, then the tunnel's ports
// are released (the token refused by then), then the object goes.
func TestDeletionOrder(t *testing.T) {
	kube := sharedKube(t)
	u, _ := url.Parse(kube.URL)
	tun := &forwardTunnels{target: u.Host, ca: kube.CAPEM, lns: map[string]net.Listener{}, connected: true}
	t.Cleanup(func() { tun.close(); tun.wg.Wait() })
	store := newStore(t)
	token, hash, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	probe := &cleanupProbe{store: store, tun: tun, token: token}
	var releaseSawToken error
	released := make(chan struct{})
	tun.onRelease = func(string) {
		releaseSawToken = VerifyToken(context.Background(), store, "edge", token)
		close(released)
	}
	cfg := testConfig(store)
	cfg.Tunnels, cfg.TunnelPorts, cfg.Installer = tun, twoFreePorts(t), probe
	runController(t, cfg)

	createCluster(t, store, "edge", ClusterSpec{Connection: Connection{Type: ConnectionProxy, TokenHash: hash}})
	waitCondition(t, store, "edge", ConditionReady, metav1.ConditionTrue, ReasonHealthy)
	if _, err := store.Delete(t.Context(), &ClusterKind, "", "edge", 0, ""); err != nil {
		t.Fatal(err)
	}
	waitGone(t, store, "edge", "proxy cluster not deleted")
	<-released

	probe.mu.Lock()
	defer probe.mu.Unlock()
	if probe.calls != 1 || !probe.reached || !probe.tokenValid || !probe.notReleased {
		t.Errorf("the installers' cleanup ran %d times; it reached the cluster through the tunnel: %v, the token was valid: %v, the ports not yet released: %v; want 1, true, true, true",
			probe.calls, probe.reached, probe.tokenValid, probe.notReleased)
	}
	if releaseSawToken == nil {
		t.Error("the ports were released while the cluster token was still valid: revoke it first")
	}
}
