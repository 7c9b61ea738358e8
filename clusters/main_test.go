package clusters

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/outpost-mesh/outpost/consensus"
	"github.com/outpost-mesh/outpost/consensus/consensustest"
	"github.com/outpost-mesh/outpost/internal/kubetest"
)

// kube is the API server the package's tests share (started on first
// use: one start costs a few seconds and 300 MB).
var (
	kubeOnce sync.Once
	kube     *kubetest.Server
	kubeErr  error
)

// TestMain stops the shared API server after the tests and fails the
// package when a test leaves a goroutine behind.
func TestMain(m *testing.M) {
	code := m.Run()
	if kube != nil {
		if err := kube.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stop kube-apiserver:", err)
		}
	}
	if code == 0 {
		if err := goleak.Find(goleak.IgnoreCurrent()); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines left behind:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// sharedKube returns the shared API server, starting it on first use.
func sharedKube(tb testing.TB) *kubetest.Server {
	tb.Helper()
	kubeOnce.Do(func() { kube, kubeErr = kubetest.Start(context.Background()) })
	if kubeErr != nil {
		tb.Fatalf("real kube-apiserver: %v", kubeErr)
	}
	return kube
}

// kubeconfig returns a kubeconfig for the shared server with token.
func kubeconfig(tb testing.TB, token string) []byte {
	tb.Helper()
	b, err := sharedKube(tb).Kubeconfig(token)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// kubeconfigFor returns a kubeconfig for server with ca (none: skip
// verification) and token.
func kubeconfigFor(tb testing.TB, server string, ca []byte, token string) []byte {
	tb.Helper()
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["c"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca, InsecureSkipTLSVerify: ca == nil}
	cfg.AuthInfos["u"] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["c"] = &clientcmdapi.Context{Cluster: "c", AuthInfo: "u"}
	cfg.CurrentContext = "c"
	b, err := clientcmd.Write(*cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// newStore runs a one-member Raft group with the clusters kinds and a
// sealer, as the hub has.
func newStore(tb testing.TB) *consensus.Store {
	return consensustest.NewStore(tb, Register)
}

// testConfig is the controller's configuration with tight test timings.
func testConfig(store *consensus.Store) Config {
	cfg := DefaultConfig()
	cfg.Store, cfg.IsLeader = store, func() bool { return true }
	cfg.Resync, cfg.ProbeTimeout, cfg.GracePeriod = time.Second, 5*time.Second, 3*time.Second
	return cfg
}

// runController starts a controller with cfg until the test ends.
func runController(tb testing.TB, cfg Config, setup ...func(*Controller)) *Controller {
	tb.Helper()
	c, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	for _, f := range setup {
		f(c)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("controller: %v", err)
		}
	})
	return c
}

// createCluster stores a Cluster with spec.
func createCluster(tb testing.TB, store *consensus.Store, name string, spec ClusterSpec) *consensus.Object {
	tb.Helper()
	obj := &consensus.Object{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := obj.SetSpec(spec); err != nil {
		tb.Fatal(err)
	}
	out, err := store.Create(context.Background(), &ClusterKind, obj)
	if err != nil {
		tb.Fatalf("create cluster %s: %v", name, err)
	}
	return out
}

// direct is a direct connection with kubeconfig.
func direct(kubeconfig []byte) ClusterSpec {
	return ClusterSpec{Connection: Connection{Type: ConnectionDirect, Kubeconfig: kubeconfig}}
}

// status reads a Cluster's status.
func status(tb testing.TB, store *consensus.Store, name string) (ClusterStatus, *consensus.Object) {
	tb.Helper()
	obj, err := store.Get(context.Background(), &ClusterKind, "", name, consensus.ReadOptions{Stale: true})
	if err != nil {
		tb.Fatalf("get cluster %s: %v", name, err)
	}
	var st ClusterStatus
	if err := obj.DecodeStatus(&st); err != nil {
		tb.Fatal(err)
	}
	return st, obj
}

// waitCondition waits until the Cluster's condition typ has status and,
// when given, reason; it returns the status then.
func waitCondition(tb testing.TB, store *consensus.Store, name, typ string, want metav1.ConditionStatus, reason string) ClusterStatus {
	tb.Helper()
	var st ClusterStatus
	var last string
	ok := poll(60*time.Second, func() bool {
		st, _ = status(tb, store, name)
		c := meta.FindStatusCondition(st.Conditions, typ)
		if c == nil {
			last = "absent"
			return false
		}
		last = fmt.Sprintf("%s %s: %s", c.Status, c.Reason, c.Message)
		return c.Status == want && (reason == "" || c.Reason == reason)
	})
	if !ok {
		tb.Fatalf("cluster %s: condition %s never became %s %s; last: %s (all: %+v)", name, typ, want, reason, last, st.Conditions)
	}
	return st
}

// waitGone waits until the Cluster name no longer exists.
func waitGone(tb testing.TB, store *consensus.Store, name, msg string) {
	tb.Helper()
	eventually(tb, 30*time.Second, func() bool {
		_, err := store.Get(tb.Context(), &ClusterKind, "", name, consensus.ReadOptions{Stale: true})
		return apierrors.IsNotFound(err)
	}, msg)
}

// eventually fails tb unless cond holds within d.
func eventually(tb testing.TB, d time.Duration, cond func() bool, msg string) {
	tb.Helper()
	if !poll(d, cond) {
		tb.Fatal(msg)
	}
}

func poll(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// testNode is a Node object as a kubelet would report it: Ready, with
// allocatable CPU and memory, in zone.
func testNode(name, zone string, ready bool) *corev1.Node {
	st := corev1.ConditionTrue
	if !ready {
		st = corev1.ConditionFalse
	}
	res := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("4"), corev1.ResourceMemory: resource.MustParse("8Gi"), corev1.ResourcePods: resource.MustParse("110")}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{labelZone: zone, labelRegion: "eu-test"}},
		Status: corev1.NodeStatus{
			Capacity: res, Allocatable: res,
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: st, Reason: "KubeletReady", LastHeartbeatTime: metav1.Now()}},
		},
	}
}
