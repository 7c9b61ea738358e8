package components

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"go.uber.org/goleak"
	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/outpost-mesh/outpost/clusters"
	"github.com/outpost-mesh/outpost/consensus"
	"github.com/outpost-mesh/outpost/consensus/consensustest"
	"github.com/outpost-mesh/outpost/images/registry"
	"github.com/outpost-mesh/outpost/images/store"
	"github.com/outpost-mesh/outpost/internal/kubetest"
)

// The package's tests share one API server and one hub registry (the
// hub's own registry code, images/registry over images/store, on
// 127.0.0.1) holding the fixture charts of testdata/charts, which stand
// for upstream runtimes' charts, and the project's own core charts,
// pushed with PushChart and PushCoreCharts as `outpost charts push`
// does. The tests run one after the
// other: the components' namespaces are fixed.
var (
	setupOnce sync.Once
	setupErr  error
	kube      *kubetest.Server
	hubReg    *hubRegistry
)

// pushToken is the API token the hub registry accepts for pushes.
const pushToken = "charts-push-token"

// testHub is what the test hubs tell the core charts about themselves.
var testHub = Hub{Addrs: []string{"127.0.0.1:7443", "127.0.0.2:7443"}, CAFingerprint: strings.Repeat("ab", 32), Version: "v0.0.0-test"}

// TestMain stops the shared servers after the tests and fails the
// package when a test leaves a goroutine behind.
func TestMain(m *testing.M) {
	code := m.Run()
	if hubReg != nil {
		hubReg.close()
	}
	if kube != nil {
		if err := kube.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stop kube-apiserver:", err)
		}
	}
	if code == 0 {
		if err := goleak.Find(goleak.IgnoreCurrent(),
			// Idle keep-alive connections of client-go's and Helm's
			// transports end on their own.
			goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
			goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"),
			goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"),
		); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines left behind:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// setup starts the shared API server and hub registry on first use.
func setup(tb testing.TB) {
	tb.Helper()
	setupOnce.Do(func() {
		if kube, setupErr = kubetest.Start(context.Background()); setupErr != nil {
			return
		}
		if hubReg, setupErr = startHubRegistry(); setupErr != nil {
			return
		}
		entries, err := os.ReadDir(filepath.Join("testdata", "charts"))
		if err != nil {
			setupErr = err
			return
		}
		for _, e := range entries {
			if _, err := PushChart(hubReg.pushConfig(), ChartsRepository, filepath.Join("testdata", "charts", e.Name())); err != nil {
				setupErr = fmt.Errorf("push fixture chart %s: %w", e.Name(), err)
				return
			}
		}
		if _, err := PushCoreCharts(hubReg.pushConfig(), ChartsRepository); err != nil {
			setupErr = fmt.Errorf("push the core charts: %w", err)
		}
	})
	if setupErr != nil {
		tb.Fatalf("test setup: %v", setupErr)
	}
}

// hubRegistry is the hub's registry code on 127.0.0.1.
type hubRegistry struct {
	addr string
	srv  *http.Server
	h    *registry.Handler
	st   *store.Store
	db   *badger.DB
	dir  string
	done chan struct{}
}

func startHubRegistry() (*hubRegistry, error) {
	dir, err := os.MkdirTemp("", "components-registry-")
	if err != nil {
		return nil, err
	}
	db, err := badger.Open(badger.DefaultOptions(filepath.Join(dir, "meta")).WithLogger(nil).
		WithMemTableSize(8 << 20).WithValueLogFileSize(32 << 20).WithBlockCacheSize(1 << 20).WithIndexCacheSize(1 << 20))
	if err != nil {
		return nil, err
	}
	scfg := store.DefaultConfig()
	scfg.Dir, scfg.RetainOwnRegistry = filepath.Join(dir, "blobs"), true
	st, err := store.New(scfg, db)
	if err != nil {
		return nil, errors.Join(err, db.Close())
	}
	rcfg := registry.DefaultConfig()
	rcfg.Push, rcfg.Store = true, st
	rcfg.Authorize = func(r *http.Request) error {
		if tok, ok := registry.Token(r); !ok || tok != pushToken {
			return registry.ErrUnauthorized
		}
		return nil
	}
	h, err := registry.New(rcfg, registry.NewStoreSource(st))
	if err != nil {
		return nil, errors.Join(err, st.Close(), db.Close())
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, errors.Join(err, h.Close(), st.Close(), db.Close())
	}
	r := &hubRegistry{addr: ln.Addr().String(), h: h, st: st, db: db, dir: dir, done: make(chan struct{})}
	r.srv = &http.Server{Handler: r.h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(r.done)
		_ = r.srv.Serve(ln)
	}()
	return r, nil
}

func (r *hubRegistry) close() {
	_ = r.srv.Close()
	<-r.done
	_ = r.h.Close()
	_ = r.st.Close()
	_ = r.db.Close()
	_ = os.RemoveAll(r.dir)
}

func (r *hubRegistry) pushConfig() OCIChartsConfig {
	return OCIChartsConfig{Host: r.addr, PlainHTTP: true, Username: "outpost", Password: pushToken}
}

// newStore runs a one-member Raft group with the clusters kinds and a
// sealer, as the hub has.
func newStore(tb testing.TB) *consensus.Store {
	return consensustest.NewStore(tb, clusters.Register)
}

// hub is a store with a cluster controller that installs through an
// Installer over the shared hub registry.
type hub struct {
	store *consensus.Store
	ctl   *clusters.Controller
	inst  *Installer
}

// startHub runs a controller and an Installer (which serves virtual
// clusters' forwards); mod adjusts the installer's config.
func startHub(tb testing.TB, mod func(*InstallerConfig)) *hub {
	tb.Helper()
	return startHubWith(tb, mod, nil)
}

// startHubWith is startHub; ctl, when set, adjusts the controller's
// config (after the hub's store is made).
func startHubWith(tb testing.TB, mod func(*InstallerConfig), ctl func(*hub, *clusters.Config)) *hub {
	tb.Helper()
	setup(tb)
	h := &hub{store: newStore(tb)}
	charts, err := NewOCICharts(OCIChartsConfig{Host: hubReg.addr, PlainHTTP: true})
	if err != nil {
		tb.Fatal(err)
	}
	icfg := DefaultInstallerConfig()
	icfg.Charts, icfg.RolloutTimeout = charts, time.Minute
	icfg.Hub = func() Hub { return testHub }
	icfg.HostConfig = func(ctx context.Context, name string) (*rest.Config, error) { return h.ctl.RESTConfig(ctx, name) }
	if mod != nil {
		mod(&icfg)
	}
	if h.inst, err = NewInstaller(icfg); err != nil {
		tb.Fatal(err)
	}
	cfg := clusters.DefaultConfig()
	cfg.Store, cfg.IsLeader, cfg.Installer = h.store, func() bool { return true }, h.inst
	cfg.Resync, cfg.ProbeTimeout, cfg.GracePeriod = time.Second, 5*time.Second, 3*time.Second
	if ctl != nil {
		ctl(h, &cfg)
	}
	if h.ctl, err = clusters.New(cfg); err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	go func() { done <- h.ctl.Run(ctx) }()
	go func() { done <- h.inst.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		for range 2 {
			if err := <-done; err != nil {
				tb.Errorf("controller or installer: %v", err)
			}
		}
	})
	return h
}

// create stores a Cluster.
func (h *hub) create(tb testing.TB, name string, spec clusters.ClusterSpec) {
	tb.Helper()
	obj := &consensus.Object{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := obj.SetSpec(spec); err != nil {
		tb.Fatal(err)
	}
	if _, err := h.store.Create(context.Background(), &clusters.ClusterKind, obj); err != nil {
		tb.Fatalf("create cluster %s: %v", name, err)
	}
}

// remove deletes a Cluster.
func (h *hub) remove(tb testing.TB, name string) {
	tb.Helper()
	if _, err := h.store.Delete(context.Background(), &clusters.ClusterKind, "", name, 0, ""); err != nil {
		tb.Fatalf("delete cluster %s: %v", name, err)
	}
}

// patch merge-patches a Cluster.
func (h *hub) patch(tb testing.TB, name, patch string) {
	tb.Helper()
	if _, err := h.store.Patch(context.Background(), &clusters.ClusterKind, "", name, []byte(patch), false); err != nil {
		tb.Fatalf("patch cluster %s: %v", name, err)
	}
}

// gone reports whether the Cluster object is gone.
func (h *hub) gone(name string) bool {
	_, err := h.store.Get(context.Background(), &clusters.ClusterKind, "", name, consensus.ReadOptions{Stale: true})
	return apierrors.IsNotFound(err)
}

// status reads a Cluster's status.
func (h *hub) status(tb testing.TB, name string) clusters.ClusterStatus {
	tb.Helper()
	obj, err := h.store.Get(context.Background(), &clusters.ClusterKind, "", name, consensus.ReadOptions{Stale: true})
	if err != nil {
		tb.Fatalf("get cluster %s: %v", name, err)
	}
	var st clusters.ClusterStatus
	if err := obj.DecodeStatus(&st); err != nil {
		tb.Fatal(err)
	}
	return st
}

// wait waits until the Cluster's condition typ has status and, when
// given, reason; while waiting it calls each of also (playing the
// cluster's controllers).
func (h *hub) wait(tb testing.TB, name, typ string, want metav1.ConditionStatus, reason string, also ...func()) metav1.Condition {
	tb.Helper()
	var last metav1.Condition
	ok := poll(60*time.Second, func() bool {
		for _, f := range also {
			f()
		}
		c := meta.FindStatusCondition(h.status(tb, name).Conditions, typ)
		if c == nil {
			return false
		}
		last = *c
		return c.Status == want && (reason == "" || c.Reason == reason)
	})
	if !ok {
		tb.Fatalf("cluster %s: %s never became %s %s; last: %s %s: %s (all: %+v)", name, typ, want, reason, last.Status, last.Reason, last.Message, h.status(tb, name).Conditions)
	}
	return last
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

// direct is a direct connection to the shared API server.
func direct(tb testing.TB, comps ...clusters.Component) clusters.ClusterSpec {
	tb.Helper()
	kc, err := kube.Kubeconfig(kubetest.AdminToken)
	if err != nil {
		tb.Fatal(err)
	}
	return clusters.ClusterSpec{Connection: clusters.Connection{Type: clusters.ConnectionDirect, Kubeconfig: kc}, Components: comps}
}

// markRolledOut plays the controllers and kubelets that do not run
// here: it marks every Deployment, DaemonSet and StatefulSet in ns as
// rolled out, as their controllers would report it.
func markRolledOut(tb testing.TB, cs kubernetes.Interface, ns string) {
	tb.Helper()
	ctx := context.Background()
	apps := cs.AppsV1()
	deps, err := apps.Deployments(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	for _, d := range deps.Items {
		n := replicas(d.Spec.Replicas)
		d.Status = appsv1.DeploymentStatus{ObservedGeneration: d.Generation, Replicas: n, UpdatedReplicas: n, ReadyReplicas: n, AvailableReplicas: n}
		if _, err := apps.Deployments(ns).UpdateStatus(ctx, &d, metav1.UpdateOptions{}); err != nil && !apierrors.IsConflict(err) {
			tb.Fatal(err)
		}
	}
	dss, err := apps.DaemonSets(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	for _, d := range dss.Items {
		d.Status = appsv1.DaemonSetStatus{ObservedGeneration: d.Generation, DesiredNumberScheduled: 1, CurrentNumberScheduled: 1, UpdatedNumberScheduled: 1, NumberReady: 1, NumberAvailable: 1}
		if _, err := apps.DaemonSets(ns).UpdateStatus(ctx, &d, metav1.UpdateOptions{}); err != nil && !apierrors.IsConflict(err) {
			tb.Fatal(err)
		}
	}
	sts, err := apps.StatefulSets(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	for _, s := range sts.Items {
		n := replicas(s.Spec.Replicas)
		s.Status = appsv1.StatefulSetStatus{ObservedGeneration: s.Generation, Replicas: n, ReadyReplicas: n, CurrentReplicas: n, UpdatedReplicas: n, AvailableReplicas: n, CurrentRevision: "r1", UpdateRevision: "r1"}
		if _, err := apps.StatefulSets(ns).UpdateStatus(ctx, &s, metav1.UpdateOptions{}); err != nil && !apierrors.IsConflict(err) {
			tb.Fatal(err)
		}
	}
}

func replicas(p *int32) int32 {
	if p == nil {
		return 1
	}
	return *p
}
