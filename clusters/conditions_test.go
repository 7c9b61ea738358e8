package clusters

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/outpost-mesh/outpost/consensus"
	"github.com/outpost-mesh/outpost/internal/kubetest"
)

// Modes of a frontProxy.
const (
	frontHealthy   int32 = iota // everything passes to the real API server
	frontUnhealthy              // /readyz answers 500 as an API server whose etcd is gone
	frontDown                   // every connection is closed without an answer
)

// frontProxy is a TLS reverse proxy in front of the shared real API
// server, which the test can make unhealthy or silent.
type frontProxy struct {
	url  string
	ca   []byte
	mode atomic.Int32
}

func newFrontProxy(t *testing.T) *frontProxy {
	t.Helper()
	kube := sharedKube(t)
	target, err := url.Parse(kube.URL)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(kube.CAPEM)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: kubetest.ServerName}}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = tr
	f := &frontProxy{}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch f.mode.Load() {
		case frontDown:
			if c, _, err := http.NewResponseController(w).Hijack(); err == nil {
				c.Close()
			}
		case frontUnhealthy:
			if r.URL.Path == "/readyz" {
				http.Error(w, "[+]ping ok\n[-]etcd failed: reason withheld\nreadyz check failed", http.StatusInternalServerError)
				return
			}
			rp.ServeHTTP(w, r)
		default:
			rp.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(func() { srv.Close(); tr.CloseIdleConnections() })
	f.url = srv.URL
	f.ca = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	return f
}

// waitProbedSince waits for a probe of Cluster name that started after
// since (lastProbeTime has whole seconds) and returns its status.
func waitProbedSince(t *testing.T, store *consensus.Store, name string, since time.Time) ClusterStatus {
	t.Helper()
	var st ClusterStatus
	eventually(t, 30*time.Second, func() bool {
		st, _ = status(t, store, name)
		return st.LastProbeTime != nil && st.LastProbeTime.Unix() > since.Unix()
	}, "cluster "+name+" not probed again")
	return st
}

// TestUnhealthyAndGrace: a direct cluster that stops answering keeps its
// conditions within the grace period (here an hour); one that answers
// but whose /readyz fails is Ready False Unhealthy with AgentAvailable
// True; healthy again, it is Ready.
func TestUnhealthyAndGrace(t *testing.T) {
	front := newFrontProxy(t)
	store := newStore(t)
	cfg := testConfig(store)
	cfg.GracePeriod = time.Hour
	runController(t, cfg)
	createCluster(t, store, "flaky", direct(kubeconfigFor(t, front.url, front.ca, kubetest.AdminToken)))
	waitCondition(t, store, "flaky", ConditionReady, metav1.ConditionTrue, ReasonHealthy)

	front.mode.Store(frontDown)
	down := time.Now()
	st := waitProbedSince(t, store, "flaky", down)
	if st.LastHeardTime == nil || st.LastHeardTime.Unix() > down.Unix() {
		t.Fatalf("lastHeardTime %v after the cluster went silent at %v: the probe did not see it down", st.LastHeardTime, down)
	}
	for _, typ := range []string{ConditionAgentAvailable, ConditionReady} {
		if !meta.IsStatusConditionTrue(st.Conditions, typ) {
			t.Errorf("%s changed within the grace period: %+v", typ, meta.FindStatusCondition(st.Conditions, typ))
		}
	}

	front.mode.Store(frontUnhealthy)
	st = waitCondition(t, store, "flaky", ConditionReady, metav1.ConditionFalse, ReasonUnhealthy)
	if c := meta.FindStatusCondition(st.Conditions, ConditionReady); !strings.Contains(c.Message, "[-]etcd failed") {
		t.Errorf("Ready message %q does not say which check failed", c.Message)
	}
	if !meta.IsStatusConditionTrue(st.Conditions, ConditionAgentAvailable) {
		t.Errorf("AgentAvailable of a cluster that answers: %+v", meta.FindStatusCondition(st.Conditions, ConditionAgentAvailable))
	}

	front.mode.Store(frontHealthy)
	waitCondition(t, store, "flaky", ConditionReady, metav1.ConditionTrue, ReasonHealthy)
}

// TestDirectUnknownAfterGrace: a Ready direct cluster that stops
// answering goes Unknown (Unreachable) once nothing has been heard for
// the grace period, and Ready again when it answers.
func TestDirectUnknownAfterGrace(t *testing.T) {
	front := newFrontProxy(t)
	store := newStore(t)
	runController(t, testConfig(store)) // grace: 3 s
	createCluster(t, store, "cut", direct(kubeconfigFor(t, front.url, front.ca, kubetest.AdminToken)))
	waitCondition(t, store, "cut", ConditionReady, metav1.ConditionTrue, ReasonHealthy)

	front.mode.Store(frontDown)
	st := waitCondition(t, store, "cut", ConditionReady, metav1.ConditionUnknown, ReasonUnreachable)
	for _, typ := range []string{ConditionAgentAvailable, ConditionSchedulable} {
		if c := meta.FindStatusCondition(st.Conditions, typ); c == nil || c.Status != metav1.ConditionUnknown || c.Reason != ReasonUnreachable {
			t.Errorf("%s = %+v, want Unknown %s", typ, c, ReasonUnreachable)
		}
	}
	front.mode.Store(frontHealthy)
	waitCondition(t, store, "cut", ConditionReady, metav1.ConditionTrue, ReasonHealthy)
}

// TestEndpointReplacesServer: spec.connection.kubernetesAPIEndpoint
// replaces the kubeconfig's server (written for another vantage point).
func TestEndpointReplacesServer(t *testing.T) {
	kube := sharedKube(t)
	store := newStore(t)
	runController(t, testConfig(store))
	spec := direct(kubeconfigFor(t, "https://"+closedPort(t), kube.CAPEM, kubetest.AdminToken))
	spec.Connection.KubernetesAPIEndpoint = kube.URL
	createCluster(t, store, "elsewhere", spec)
	if st := waitCondition(t, store, "elsewhere", ConditionReady, metav1.ConditionTrue, ReasonHealthy); st.UID == "" {
		t.Errorf("Ready without a UID: %+v", st)
	}
}

// TestSchedulable: a node counts for Schedulable only when it is Ready,
// not cordoned, and has CPU and memory to allocate.
func TestSchedulable(t *testing.T) {
	t.Parallel()
	base := testNode("n", "z", true)
	cases := []struct {
		name string
		edit func(n *corev1.Node)
		want bool
	}{
		{"ready with resources", func(*corev1.Node) {}, true},
		{"not ready", func(n *corev1.Node) { n.Status.Conditions[0].Status = corev1.ConditionFalse }, false},
		{"ready unknown", func(n *corev1.Node) { n.Status.Conditions[0].Status = corev1.ConditionUnknown }, false},
		{"no Ready condition", func(n *corev1.Node) { n.Status.Conditions = nil }, false},
		{"cordoned", func(n *corev1.Node) { n.Spec.Unschedulable = true }, false},
		{"no allocatable cpu", func(n *corev1.Node) { delete(n.Status.Allocatable, corev1.ResourceCPU) }, false},
		{"zero allocatable memory", func(n *corev1.Node) { n.Status.Allocatable[corev1.ResourceMemory] = resource.MustParse("0") }, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			n := base.DeepCopy()
			tc.edit(n)
			if got := schedulable(n); got != tc.want {
				t.Errorf("schedulable = %v, want %v", got, tc.want)
			}
		})
	}
}
