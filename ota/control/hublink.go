package control

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/outpost-mesh/outpost/consensus"
	"github.com/outpost-mesh/outpost/ota"
)

// Assignments returns what site must be told: every task with devices
// there whose version the site does not hold, with the spec only when the
// site has none of the task yet.
func (h *Hub) Assignments(site string, have SiteState) []Assignment {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := time.Now()
	h.seen[site] = now
	var out []Assignment
	for _, t := range h.tasks {
		devices := t.sites[site]
		if len(devices) == 0 || have[t.uid] == t.version {
			continue
		}
		if t.win == nil {
			t.win = h.windowsLocked(t, now)
		}
		a := Assignment{
			Task: t.name, UID: t.uid, Attempt: t.attempt, Version: t.version,
			Window: t.win[site], Halted: t.halted, Canceled: t.cancel,
		}
		if have[t.uid] == 0 {
			// A site that lacks the task gets the devices still to run:
			// those the tally holds unfinished, and the retry's (a site
			// deletes a task some time after its devices ended, Site.collect,
			// and must not run them again); all of them for a task this
			// leader just started and has not counted yet.
			todo, counted := h.tally.unfinished(t.name, types.UID(t.uid), site, devices)
			switch {
			case counted:
				if devices = mergeNames(todo, t.retry[site]); len(devices) == 0 {
					continue
				}
			case !t.fresh:
				continue // a new leader's first pass has not counted it yet
			}
			spec := t.spec
			spec.FailurePolicy = policyOf(t.spec.FailurePolicy, t.total)
			a.Spec = &spec
			a.Devices = append([]string(nil), devices...)
		}
		a.Retry = append([]string(nil), t.retry[site]...)
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Task < out[j].Task })
	return out
}

// policyOf returns p with its percentages resolved to numbers of the
// task's total devices, for a site, which knows only its own devices, to
// hold its queue by (Site.overPolicy).
func policyOf(p ota.FailurePolicy, total int) ota.FailurePolicy {
	resolve := func(l *intstr.IntOrString) *intstr.IntOrString {
		if l == nil || l.Type == intstr.Int {
			return l
		}
		n := intstr.FromInt(ota.ResolveCount(l, total, total))
		return &n
	}
	return ota.FailurePolicy{MaxFailures: resolve(p.MaxFailures), MaxUnreachable: resolve(p.MaxUnreachable)}
}

// mergeNames returns the sorted union of a and b.
func mergeNames(a, b []string) []string {
	out := append(slices.Clone(a), b...)
	slices.Sort(out)
	return slices.Compact(out)
}

// siteWindows shares the task's concurrency among the sites with devices
// still to run (devices: site → its devices): each its share by its
// devices, rounded down, capped by perSite and by what it has; what the
// rounding left goes one at a time to the largest remainders. So no more
// devices run at once than the task allows, in all sites together: when
// that is fewer than the sites, some sites get none until others finish
// (Hub.rebalance), and a site cut off from the hub with none waits for the
// link.
func siteWindows(spec *ota.TaskSpec, devices map[string]int, total int) map[string]int {
	active := 0
	for _, n := range devices {
		active += n
	}
	if active == 0 {
		return nil
	}
	global := min(ota.ResolveCount(spec.Concurrency, total, ota.DefaultConcurrency), active)
	type share struct {
		site     string
		cap, rem int
	}
	w := make(map[string]int, len(devices))
	shares := make([]share, 0, len(devices))
	left := global
	for site, n := range devices {
		limit := n
		if spec.PerSite != nil {
			limit = min(limit, max(ota.ResolveCount(spec.PerSite, n, n), 1))
		}
		w[site] = min(global*n/active, limit)
		left -= w[site]
		shares = append(shares, share{site: site, cap: limit, rem: global * n % active})
	}
	slices.SortFunc(shares, func(a, b share) int {
		if a.rem != b.rem {
			return b.rem - a.rem
		}
		return strings.Compare(a.site, b.site)
	})
	for left > 0 {
		gave := false
		for _, sh := range shares {
			if left > 0 && w[sh.site] < sh.cap {
				w[sh.site]++
				left--
				gave = true
			}
		}
		if !gave {
			break // every site is at its cap
		}
	}
	return w
}

// ingestConcurrency bounds the writes of one site's report: a hundred
// sites report at once, and more writers than Raft batches only queue on
// the store's locks.
const ingestConcurrency = 32

// Ingest records device results a site sent: each DeviceResult gets its
// status and phase label. A report of an older attempt, or about a device
// of another site, is dropped. Reports are written concurrently, so their
// Raft proposals share batches.
func (h *Hub) Ingest(ctx context.Context, site string, reports []DeviceReport) error {
	names := make([]string, len(reports))
	for i, r := range reports {
		names[i] = ota.ResultName(r.Task, r.Node)
	}
	// One read for the whole report; a result not found was deleted with
	// its task.
	objs, err := h.cfg.Store.GetMany(ctx, &ota.DeviceResultKind, "", names, consensus.ReadOptions{Stale: true})
	if err != nil {
		return err
	}
	eg, ctx := errgroup.WithContext(ctx)
	eg.SetLimit(ingestConcurrency)
	for i, r := range reports {
		if obj := objs[names[i]]; obj != nil {
			eg.Go(func() error { return h.ingestFresh(ctx, site, r, obj) })
		}
	}
	return eg.Wait() // the tally sees the writes and wakes the controller
}

// ingestTries bounds how often one report is written again over a
// DeviceResult that changed under it.
const ingestTries = 3

// ingestFresh is ingest, read again and retried when the DeviceResult
// changed since obj was read (a report of the same device that a site sent
// again over a new link while the first was still being written): a
// conflict on one device must not refuse the whole report, which would
// drop the site's link and hold back all its results.
func (h *Hub) ingestFresh(ctx context.Context, site string, r DeviceReport, obj *consensus.Object) error {
	for try := 1; ; try++ {
		err := h.ingest(ctx, site, r, obj)
		if !apierrors.IsConflict(err) || try == ingestTries {
			return err
		}
		if obj, err = h.cfg.Store.Get(ctx, &ota.DeviceResultKind, "", obj.Name, consensus.ReadOptions{}); err != nil {
			if apierrors.IsNotFound(err) {
				return nil // deleted with its task
			}
			return err
		}
	}
}

// phaseRank orders a device's phases within one attempt.
func phaseRank(p ota.DevicePhase) int {
	switch {
	case p.Finished():
		return 2
	case p == ota.DeviceRunning:
		return 1
	}
	return 0
}

// ingest records one report on obj, the device's DeviceResult as just read.
func (h *Hub) ingest(ctx context.Context, site string, r DeviceReport, obj *consensus.Object) error {
	var spec ota.DeviceResultSpec
	var cur ota.DeviceResultStatus
	_ = obj.DecodeSpec(&spec)
	_ = obj.DecodeStatus(&cur)
	if spec.Site != site || r.Attempt < cur.Attempt {
		return nil
	}
	if r.Attempt == cur.Attempt && phaseRank(r.Status.Phase) <= phaseRank(cur.Phase) {
		// Held already, or overtaken: the Queued the hub wrote itself, a
		// report sent again (a new site leader reports the Running it was
		// not told the hub has; a lost acknowledgement), or a Running
		// that arrives after the result (a site whose link timed out
		// sends the result on a new link while the hub is still writing
		// the old link's Running). Within an attempt a device's phase only
		// moves forward: Queued, Running, a result. Written over the
		// result, that Running was acknowledged with the newer report and
		// never sent again, and the device stayed Running at the hub.
		return nil
	}
	st := r.Status
	st.Attempt = r.Attempt
	if st.QueuedTime == nil {
		st.QueuedTime = cur.QueuedTime
	}
	// The phase label and the status change in one write.
	next := obj.DeepCopy()
	next.Labels[ota.LabelPhase] = string(r.Status.Phase)
	if err := next.SetStatus(st); err != nil {
		return err
	}
	if _, err := h.cfg.Store.UpdateWithStatusFrom(ctx, &ota.DeviceResultKind, next, obj); err != nil {
		if apierrors.IsConflict(err) {
			return err // ingestFresh reads it again
		}
		return fmt.Errorf("record %s: %w", next.Name, err)
	}
	return nil
}
