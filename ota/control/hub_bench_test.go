package control

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/outpost-mesh/outpost/consensus"
	"github.com/outpost-mesh/outpost/consensus/consensustest"
	"github.com/outpost-mesh/outpost/ota"
)

// fakeInventory is a fixed roster.
type fakeInventory []Device

func (f fakeInventory) Devices(context.Context) ([]Device, error) { return f, nil }

// BenchmarkHubFanout measures the hub's side of a task on 10,000 devices
// in 100 sites: resolving targets and creating the DeviceResults, taking in
// one result per device from the sites, and counting them to completion.
// The sites and nodes are not simulated here: this is the hub's own cost.
func BenchmarkHubFanout(b *testing.B) {
	const sites, perSite = 100, 100
	var inv fakeInventory
	for s := range sites {
		for n := range perSite {
			inv = append(inv, Device{Name: fmt.Sprintf("s%03d-n%03d", s, n), Site: fmt.Sprintf("s%03d", s), Labels: map[string]string{"role": "edge"}})
		}
	}
	for i := 0; i < b.N; i++ {
		store := consensustest.NewStore(b, ota.Register)
		hub, err := NewHub(HubConfig{Store: store, Inventory: inv, IsLeader: func() bool { return true }})
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		task := &consensus.Object{ObjectMeta: metav1.ObjectMeta{Name: "bench"}}
		_ = task.SetSpec(ota.TaskSpec{Targets: ota.Targets{Sites: []string{}}, Steps: []ota.Step{{Name: "r", Type: ota.StepRead, Path: "/etc/hostname"}}})
		var spec ota.TaskSpec
		_ = task.DecodeSpec(&spec)
		for s := range sites {
			spec.Targets.Sites = append(spec.Targets.Sites, fmt.Sprintf("s%03d", s))
		}
		_ = task.SetSpec(spec)
		if _, err := store.Create(ctx, &ota.TaskKind, task); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		if err := hub.reconcile(ctx); err != nil { // resolve and create
			b.Fatal(err)
		}
		if err := hub.reconcile(ctx); err != nil { // cache and first count
			b.Fatal(err)
		}
		created := time.Since(start)
		start = time.Now()
		now := metav1.Now()
		for s := range sites {
			site := fmt.Sprintf("s%03d", s)
			as := hub.Assignments(site, SiteState{})
			if len(as) != 1 || len(as[0].Devices) != perSite {
				b.Fatalf("site %s got %d assignments", site, len(as))
			}
			var reports []DeviceReport
			for _, d := range as[0].Devices {
				reports = append(reports, DeviceReport{Task: "bench", UID: as[0].UID, Attempt: 1, Node: d,
					Status: ota.DeviceResultStatus{Phase: ota.DeviceSucceeded, Attempt: 1, CompletionTime: &now}})
			}
			if err := hub.Ingest(ctx, site, reports); err != nil {
				b.Fatal(err)
			}
		}
		ingested := time.Since(start)
		// The tally counts from a watch, which may still be delivering the
		// last writes: passes until the task ends, a bounded number.
		var st ota.TaskStatus
		for pass := 0; st.Phase != ota.TaskSucceeded && pass < 500; pass++ {
			if pass > 0 {
				time.Sleep(10 * time.Millisecond)
			}
			if err := hub.reconcile(ctx); err != nil {
				b.Fatal(err)
			}
			obj, err := store.Get(ctx, &ota.TaskKind, "", "bench", consensus.ReadOptions{})
			if err != nil {
				b.Fatal(err)
			}
			_ = obj.DecodeStatus(&st)
		}
		counted := time.Since(start)
		if st.Phase != ota.TaskSucceeded || st.Counts.Succeeded != sites*perSite {
			b.Fatalf("task %s %+v, want Succeeded %d", st.Phase, st.Counts, sites*perSite)
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		b.ReportMetric(float64(sites*perSite)/created.Seconds(), "results-created/s")
		b.ReportMetric(float64(sites*perSite)/ingested.Seconds(), "results-ingested/s")
		b.ReportMetric(created.Seconds(), "create-s")
		b.ReportMetric(ingested.Seconds(), "ingest-s")
		b.ReportMetric(counted.Seconds(), "ended-s")
		b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heap-MiB")
	}
}
