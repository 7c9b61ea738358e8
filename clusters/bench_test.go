package clusters

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/outpost-mesh/outpost/consensus"
	"github.com/outpost-mesh/outpost/internal/kubetest"
)

// benchClusters is how many Clusters BenchmarkThousandClustersReady
// registers (OUTPOST_BENCH_CLUSTERS overrides, for a quick run).
func benchClusters() int {
	if n, err := strconv.Atoi(os.Getenv("OUTPOST_BENCH_CLUSTERS")); err == nil && n > 0 {
		return n
	}
	return 1000
}

// BenchmarkThousandClustersReady registers 1,000 direct Clusters for one
// real API server, starts the controller with 3 workers and measures the
// time until every Cluster is Ready. One API server is one physical
// cluster, so the benchmark turns the duplicate rule off
// (Config.SharedAPIServer); each Cluster goes through the hub's work
// (connect, TLS handshake, the four probe calls, the Raft writes). The CPU
// time of the controller's process and of kube-apiserver is printed beside
// it.
//
//	go test -run '^$' -bench ThousandClusters -benchtime 1x ./clusters/
func BenchmarkThousandClustersReady(b *testing.B) {
	n := benchClusters()
	kube := sharedKube(b)
	kc := kubeconfig(b, kubetest.AdminToken)
	for i := 0; i < b.N; i++ {
		store := newStore(b)
		for j := range n {
			createCluster(b, store, fmt.Sprintf("bench-%04d", j), direct(kc))
		}
		cfg := testConfig(store)
		cfg.Workers, cfg.Resync, cfg.ProbeTimeout = 3, 10*time.Minute, 10*time.Second
		cfg.SharedAPIServer = true
		selfCPU, kubeCPU := cpuSeconds(os.Getpid()), cpuSeconds(kube.APIServerPID())
		b.ResetTimer()
		start := time.Now()
		runController(b, cfg)
		ready, dup := 0, 0
		for {
			ready, dup = verdicts(b, store)
			if ready == n {
				break
			}
			if time.Since(start) > 10*time.Minute {
				b.Fatalf("after 10 minutes: %d Ready (%d duplicates) of %d", ready, dup, n)
			}
			time.Sleep(250 * time.Millisecond)
		}
		elapsed := time.Since(start)
		b.StopTimer()
		selfCPU, kubeCPU = cpuSeconds(os.Getpid())-selfCPU, cpuSeconds(kube.APIServerPID())-kubeCPU
		b.ReportMetric(elapsed.Seconds(), "s/all-ready")
		b.ReportMetric(float64(n)/elapsed.Seconds(), "clusters/s")
		fmt.Printf("\n%d direct Clusters, 3 workers: all Ready in %.1f s (%.0f/s; %d Ready, %d DuplicateCluster)\n"+
			"  CPU: controller process %.1f s, kube-apiserver %.1f s (kube-apiserver %s, etcd, this machine's %d cores)\n",
			n, elapsed.Seconds(), float64(n)/elapsed.Seconds(), ready, dup, selfCPU, kubeCPU, kubetest.KubeVersion, runtime.NumCPU())
	}
}

// verdicts counts Clusters whose Ready is True, and those refused as
// duplicates.
func verdicts(tb testing.TB, store *consensus.Store) (ready, dup int) {
	list, err := store.List(tb.Context(), &ClusterKind, "", nil, consensus.ReadOptions{Stale: true})
	if err != nil {
		tb.Fatal(err)
	}
	for _, o := range list.Items {
		var st ClusterStatus
		_ = o.DecodeStatus(&st)
		c := meta.FindStatusCondition(st.Conditions, ConditionReady)
		switch {
		case c == nil:
		case c.Status == metav1.ConditionTrue:
			ready++
		case c.Reason == ReasonDuplicateCluster:
			dup++
		}
	}
	return ready, dup
}

// cpuSeconds is a process's user and system CPU time, from /proc.
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100 // USER_HZ
}
