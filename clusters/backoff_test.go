package clusters

import (
	"context"
	"sync/atomic"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/outpost-mesh/outpost/internal/kubetest"
)

// failingInstaller fails Install while fail is set.
type failingInstaller struct{ fail atomic.Bool }

func (f *failingInstaller) Install(context.Context, *Target) ([]metav1.Condition, error) {
	if f.fail.Load() {
		return nil, errorString("chart registry unreachable")
	}
	return nil, nil
}

func (f *failingInstaller) Uninstall(context.Context, *Target) error { return nil }

// TestFailedReconcileBacksOff drives the controller's queue by hand: a
// failed reconcile is re-queued with backoff (the queue counts each
// failure, and the limiter's delay grows with the count), and a
// successful one forgets the failures.
func TestFailedReconcileBacksOff(t *testing.T) {
	store := newStore(t)
	cfg := testConfig(store)
	inst := &failingInstaller{}
	inst.fail.Store(true)
	cfg.Installer = inst
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.closeClients)
	createCluster(t, store, "shaky", direct(kubeconfig(t, kubetest.AdminToken)))
	q := c.newQueue()
	t.Cleanup(q.ShutDown)
	q.Add("shaky")
	for want := 1; want <= 2; want++ {
		// next takes the item when the queue hands it out: at once the
		// first time, after the backoff the second.
		if !c.next(t.Context(), q) {
			t.Fatal("queue shut down")
		}
		if got := q.NumRequeues("shaky"); got != want {
			t.Fatalf("after failure %d: %d requeues counted, want %d", want, got, want)
		}
	}
	inst.fail.Store(false)
	if !c.next(t.Context(), q) {
		t.Fatal("queue shut down")
	}
	if got := q.NumRequeues("shaky"); got != 0 {
		t.Errorf("after a success: %d requeues counted, want 0 (forgotten)", got)
	}
	st, _ := status(t, store, "shaky")
	if st.UID == "" {
		t.Errorf("the reconciles did not probe the cluster: %+v", st)
	}
}
