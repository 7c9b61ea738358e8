package clusters

import (
	"context"
	"crypto/tls"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/outpost-mesh/outpost/internal/kubetest"
	"github.com/outpost-mesh/outpost/internal/pki"
)

// TestDirectClusterReady connects a direct Cluster to a real API server:
// Ready with no nodes (and not Schedulable), then Schedulable once a Ready
// node with allocatable resources exists (the test creates the Node
// objects: no kubelet runs), with version, UID, node count, region and
// zones filled in and the kubeconfig sealed at rest.
func TestDirectClusterReady(t *testing.T) {
	kube := sharedKube(t)
	store := newStore(t)
	runController(t, testConfig(store))
	createCluster(t, store, "edge-a", direct(kubeconfig(t, kubetest.AdminToken)))

	st := waitCondition(t, store, "edge-a", ConditionReady, metav1.ConditionTrue, ReasonHealthy)
	for _, typ := range []string{ConditionInitialized, ConditionAgentAvailable} {
		if !meta.IsStatusConditionTrue(st.Conditions, typ) {
			t.Errorf("%s not True: %+v", typ, st.Conditions)
		}
	}
	if meta.FindStatusCondition(st.Conditions, ConditionCoreReady) != nil {
		t.Errorf("CoreReady set with no installer: %+v", st.Conditions)
	}
	if c := meta.FindStatusCondition(st.Conditions, ConditionSchedulable); c == nil || c.Status != metav1.ConditionFalse {
		t.Errorf("Schedulable with no nodes = %+v, want False", c)
	}
	ctx := t.Context()
	ns, err := kube.Client.CoreV1().Namespaces().Get(ctx, "kube-system", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if st.UID != string(ns.UID) || st.KubernetesVersion != kubetest.KubeVersion {
		t.Errorf("uid %q version %q, want %q %q", st.UID, st.KubernetesVersion, ns.UID, kubetest.KubeVersion)
	}

	for _, n := range []*corev1.Node{testNode("kt-node-a", "zone-1", true), testNode("kt-node-b", "zone-2", false)} {
		created, err := kube.Client.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		created.Status = n.Status
		if _, err := kube.Client.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = kube.Client.CoreV1().Nodes().Delete(context.Background(), n.Name, metav1.DeleteOptions{}) })
	}
	st = waitCondition(t, store, "edge-a", ConditionSchedulable, metav1.ConditionTrue, ReasonSchedulableNodes)
	if st.NodeCount != 2 || st.Region != "eu-test" || strings.Join(st.Zones, ",") != "zone-1,zone-2" {
		t.Errorf("nodes %d region %q zones %v, want 2 eu-test [zone-1 zone-2]", st.NodeCount, st.Region, st.Zones)
	}
	if st.LastProbeTime == nil || st.LastHeardTime == nil {
		t.Errorf("probe times not set: %+v", st)
	}

	_, obj := status(t, store, "edge-a")
	if strings.Contains(string(obj.Spec), kubetest.AdminToken) || strings.Contains(string(obj.Spec), "YXBpVmVyc2lvbj") {
		t.Errorf("kubeconfig stored in the clear: %s", obj.Spec)
	}
	if !slices.Contains(obj.Finalizers, Finalizer) {
		t.Errorf("finalizers %v, want %s", obj.Finalizers, Finalizer)
	}
}

// TestDirectClusterBadConnection: what the hub is told by a cluster it
// cannot use, in AgentAvailable: refused credentials, a certificate from
// another CA, and no answer at all.
func TestDirectClusterBadConnection(t *testing.T) {
	kube := sharedKube(t)
	store := newStore(t)
	runController(t, testConfig(store))

	otherCA, err := pki.LoadOrCreate(t.TempDir(), "another CA")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name       string
		kubeconfig []byte
		status     metav1.ConditionStatus
		reason     string
	}{
		{"bad-token", kubeconfig(t, "not-a-token"), metav1.ConditionFalse, ReasonUnauthorized},
		{"wrong-ca", kubeconfigFor(t, kube.URL, otherCA.CertPEM, kubetest.AdminToken), metav1.ConditionFalse, ReasonCertificate},
		{"nothing-listens", kubeconfigFor(t, "https://"+closedPort(t), kube.CAPEM, kubetest.AdminToken), metav1.ConditionUnknown, ReasonUnreachable},
	}
	for _, tc := range cases {
		createCluster(t, store, tc.name, direct(tc.kubeconfig))
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := waitCondition(t, store, tc.name, ConditionAgentAvailable, tc.status, tc.reason)
			if c := meta.FindStatusCondition(st.Conditions, ConditionReady); c == nil || c.Status == metav1.ConditionTrue {
				t.Errorf("Ready = %+v, want not True", c)
			}
			if !meta.IsStatusConditionTrue(st.Conditions, ConditionInitialized) {
				t.Errorf("Initialized not True: %+v", st.Conditions)
			}
		})
	}
}

// TestDuplicateClusterRefused: the same physical cluster (kube-system UID)
// under a second name is refused in Ready while the first stays Ready;
// when the first goes, the second takes over.
func TestDuplicateClusterRefused(t *testing.T) {
	store := newStore(t)
	runController(t, testConfig(store))
	kc := kubeconfig(t, kubetest.AdminToken)
	createCluster(t, store, "first", direct(kc))
	first := waitCondition(t, store, "first", ConditionReady, metav1.ConditionTrue, "")
	createCluster(t, store, "second", direct(kc))
	st := waitCondition(t, store, "second", ConditionReady, metav1.ConditionFalse, ReasonDuplicateCluster)
	if c := meta.FindStatusCondition(st.Conditions, ConditionReady); !strings.Contains(c.Message, "first") || !strings.Contains(c.Message, first.UID) {
		t.Errorf("message %q does not name the Cluster and UID", c.Message)
	}
	if now, _ := status(t, store, "first"); !meta.IsStatusConditionTrue(now.Conditions, ConditionReady) {
		t.Errorf("first lost Ready: %+v", now.Conditions)
	}
	if _, err := store.Delete(t.Context(), &ClusterKind, "", "first", 0, ""); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, store, "second", ConditionReady, metav1.ConditionTrue, ReasonHealthy)
}

// TestWorkersBoundConcurrency: 20 Clusters, 3 workers. The reconciles are
// counted as they run: never more than 3 at once, never two for one
// Cluster; one Cluster whose endpoint accepts connections and never
// answers holds a worker for the whole test while the 19 others reach
// Ready.
func TestWorkersBoundConcurrency(t *testing.T) {
	store := newStore(t)
	cfg := testConfig(store)
	cfg.Workers = 3
	cfg.ProbeTimeout = 2 * time.Minute // the stuck cluster's probe outlasts the test
	stuck := silentListener(t)

	var mu sync.Mutex
	active := map[string]int{}
	total, maxTotal, overlapped := 0, 0, ""
	trace := func(name string) func() {
		mu.Lock()
		defer mu.Unlock()
		active[name]++
		total++
		maxTotal = max(maxTotal, total)
		if active[name] > 1 {
			overlapped = name
		}
		return func() {
			mu.Lock()
			defer mu.Unlock()
			active[name]--
			total--
		}
	}
	kc := kubeconfig(t, kubetest.AdminToken)
	createCluster(t, store, "stuck", direct(kubeconfigFor(t, "https://"+stuck, nil, kubetest.AdminToken)))
	var names []string
	for i := range 19 {
		name := "many-" + string(rune('a'+i))
		names = append(names, name)
		// The same API server under 19 names: all but the first are
		// duplicates, which is a final verdict as good as Ready here.
		createCluster(t, store, name, direct(kc))
	}
	runController(t, cfg, func(c *Controller) { c.trace = trace })
	for _, name := range names {
		eventually(t, 60*time.Second, func() bool {
			st, _ := status(t, store, name)
			c := meta.FindStatusCondition(st.Conditions, ConditionReady)
			return c != nil && (c.Status == metav1.ConditionTrue || c.Reason == ReasonDuplicateCluster)
		}, name+" never got its verdict while one cluster was stuck")
	}
	mu.Lock()
	defer mu.Unlock()
	if active["stuck"] != 1 {
		t.Errorf("the stuck cluster is not being reconciled (%d): the test proves nothing", active["stuck"])
	}
	if maxTotal > cfg.Workers || maxTotal < 1 {
		t.Errorf("at most %d reconciles at once, want 1..%d", maxTotal, cfg.Workers)
	}
	if overlapped != "" {
		t.Errorf("two reconciles of %s at once", overlapped)
	}
}

// recordingInstaller records Uninstall calls and fails the first failN.
type recordingInstaller struct {
	mu         sync.Mutex
	uninstalls []string
	failN      int
}

func (r *recordingInstaller) Install(context.Context, *Target) ([]metav1.Condition, error) {
	return nil, nil
}

func (r *recordingInstaller) Uninstall(_ context.Context, t *Target) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.uninstalls = append(r.uninstalls, t.Name)
	if r.failN > 0 {
		r.failN--
		return errorString("chart release stuck")
	}
	return nil
}

type errorString string

func (e errorString) Error() string { return string(e) }

// TestDeletionRunsFinalizer: deleting a Cluster keeps it until the
// installers' cleanup succeeds (a failure is shown in Ready and retried),
// then the finalizer goes and the object with it.
func TestDeletionRunsFinalizer(t *testing.T) {
	store := newStore(t)
	cfg := testConfig(store)
	inst := &recordingInstaller{failN: 1}
	cfg.Installer = inst
	runController(t, cfg)
	createCluster(t, store, "doomed", direct(kubeconfig(t, kubetest.AdminToken)))
	waitCondition(t, store, "doomed", ConditionReady, metav1.ConditionTrue, "")
	if _, err := store.Delete(t.Context(), &ClusterKind, "", "doomed", 0, ""); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, store, "doomed", ConditionReady, metav1.ConditionFalse, ReasonCleanupFailed)
	waitGone(t, store, "doomed", "cluster not deleted after its cleanup succeeded")
	inst.mu.Lock()
	defer inst.mu.Unlock()
	if len(inst.uninstalls) != 2 || inst.uninstalls[0] != "doomed" {
		t.Errorf("uninstalls %v, want doomed twice (a failure, then success)", inst.uninstalls)
	}
}

// silentListener accepts TCP connections, completes the TLS handshake
// (with a certificate no one trusts: kubeconfigFor with no CA skips
// verification) and never answers; it returns its address.
func silentListener(t *testing.T) string {
	t.Helper()
	ca, err := pki.LoadOrCreate(t.TempDir(), "silent CA")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Issue(pki.Request{CommonName: "silent", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true, Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	var mu sync.Mutex
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.(*tls.Conn).HandshakeContext(t.Context())
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
