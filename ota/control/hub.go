package control

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	"github.com/outpost-mesh/outpost/consensus"
	"github.com/outpost-mesh/outpost/ota"
)

// Device is a node a task may target.
type Device struct {
	Name   string
	Site   string
	Labels map[string]string
}

// Inventory lists the nodes of every site, as the hub knows them.
type Inventory interface {
	Devices(ctx context.Context) ([]Device, error)
}

// HubConfig configures the hub's controller.
type HubConfig struct {
	Store     *consensus.Store
	Inventory Inventory
	// IsLeader reports whether this hub member leads; only the leader
	// acts.
	IsLeader func() bool
	// Interval is how often tasks are reconciled.
	Interval time.Duration
	Logger   *slog.Logger
}

// Hub is the hub's OTA controller.
type Hub struct {
	cfg HubConfig
	log *slog.Logger

	// kick wakes Run early when results came in, so that a finished
	// task is seen at once rather than at the next tick.
	kick chan struct{}

	// gate holds reports of sites whose assignment is being prepared.
	gate startGate

	// tally counts the running tasks' results (hubtally.go).
	tally tally

	mu    sync.Mutex
	tasks map[string]*hubTask // by task UID
	// live holds the UIDs of the tasks of the last pass; collected is
	// when results of deleted tasks were last looked for.
	live         map[string]bool
	collected    time.Time
	decodedTasks map[string]*decodedTask // by task UID
	// running is what each site's last report counted of its running
	// devices, by site and task UID (hubrunning.go).
	running map[string]map[string]int
	// seen is when each site last asked for its assignments (its link's
	// report): the tasks' windows go to the sites that are there. leading
	// is when this hub began to lead: for siteAbsentAfter from then every
	// site counts as there (their links are still coming back).
	seen    map[string]time.Time
	leading time.Time
}

// siteAbsentAfter is how long a site may go without a report before its
// share of a task's concurrency goes to the sites that report (a link
// reports every few seconds, idle or not).
const siteAbsentAfter = 30 * time.Second

// hubTask is what the controller keeps of a running task.
type hubTask struct {
	name    string
	uid     string
	attempt int
	version int
	spec    ota.TaskSpec
	sites   map[string][]string // site → devices
	retry   map[string][]string // site → devices of the current retry
	total   int
	halted  bool
	cancel  bool
	// done holds the sites whose devices have all finished, by the last
	// count: the others share the task's concurrency. win is each site's
	// window in the current version (nil: not shared yet).
	done map[string]bool
	win  map[string]int
	// fresh: this leader started the task, so every device of its sites
	// is still to run unless the tally says otherwise (hublink.go).
	fresh bool
	// statusAt is when this leader last wrote the task's status.
	statusAt time.Time
}

// windowsLocked shares t's concurrency among its sites with devices still
// to run that report to this hub (all of them while this hub has led for
// less than siteAbsentAfter); when none does (every such site cut off),
// among all with devices still to run; when every site has finished,
// among all, as at the start, so that a device run again (a retry before
// the hub counts it) has room. A site cut off from the hub keeps the
// window it was last sent. Call with h.mu held.
func (h *Hub) windowsLocked(t *hubTask, now time.Time) map[string]int {
	present := make(map[string]int, len(t.sites))
	unfinished := make(map[string]int, len(t.sites))
	all := make(map[string]int, len(t.sites))
	for site, devices := range t.sites {
		all[site] = len(devices)
		if t.done[site] {
			continue
		}
		unfinished[site] = len(devices)
		if seen, ok := h.seen[site]; ok && now.Sub(seen) < siteAbsentAfter || now.Sub(h.leading) < siteAbsentAfter {
			present[site] = len(devices)
		}
	}
	for _, share := range []map[string]int{present, unfinished, all} {
		if len(share) > 0 {
			return siteWindows(&t.spec, share, t.total)
		}
	}
	return nil
}

// NewHub validates cfg.
func NewHub(cfg HubConfig) (*Hub, error) {
	if cfg.Store == nil || cfg.Inventory == nil || cfg.IsLeader == nil {
		return nil, errors.New("ota hub: Store, Inventory and IsLeader are required")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 500 * time.Millisecond
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	h := &Hub{cfg: cfg, log: logger.With("component", "ota-hub"), kick: make(chan struct{}, 1), tasks: map[string]*hubTask{}, seen: map[string]time.Time{}, leading: time.Now()}
	h.tally.changed = h.wake
	return h, nil
}

// wake asks for a pass soon.
func (h *Hub) wake() {
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

// Run reconciles tasks while this member leads, until ctx is done.
func (h *Hub) Run(ctx context.Context) error {
	t := time.NewTicker(h.cfg.Interval)
	defer t.Stop()
	wasLeader := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-h.kick:
			// Let the other sites' reports of the moment in too.
			time.Sleep(kickDelay)
		}
		leader := h.cfg.IsLeader()
		if leader != wasLeader {
			// A new leader rebuilds its view from the store.
			h.mu.Lock()
			h.tasks, h.live, h.collected, h.running = map[string]*hubTask{}, nil, time.Time{}, nil
			h.seen, h.leading = map[string]time.Time{}, time.Now()
			h.mu.Unlock()
			h.tally.reset()
			wasLeader = leader
		}
		if !leader {
			continue
		}
		if err := h.reconcile(ctx); err != nil && ctx.Err() == nil {
			h.log.Warn("reconcile tasks", "err", err)
		}
	}
}

func (h *Hub) reconcile(ctx context.Context) error {
	list, err := h.cfg.Store.List(ctx, &ota.TaskKind, "", nil, consensus.ReadOptions{Stale: true})
	if err != nil {
		return err
	}
	h.tally.start(ctx, h.cfg.Store, list.ResourceVersion, func(err error) {
		h.log.Debug("result tally stopped; it starts again and recounts", "err", err)
		h.wake()
	})
	live, counting := map[string]bool{}, map[string]bool{}
	for _, obj := range list.Items {
		live[string(obj.UID)] = true
		spec, st, ok := h.decoded(obj)
		if !ok {
			continue
		}
		var err error
		if obj.DeletionTimestamp != nil {
			var stopping bool
			stopping, err = h.deleting(ctx, obj, spec, st)
			counting[obj.Name] = stopping
			if err != nil && ctx.Err() == nil {
				h.log.Warn("deleted task not stopped", "task", obj.Name, "err", err)
			}
			continue
		}
		switch st.Phase {
		case "", ota.TaskPending:
			err = h.start(ctx, obj, spec)
		case ota.TaskRunning, ota.TaskHalted:
			counting[obj.Name] = true
			err = h.track(ctx, obj, spec, st)
		case ota.TaskFailed, ota.TaskSucceeded:
			if spec.Retry > st.Retries && st.Attempt > 0 {
				counting[obj.Name] = true
				err = h.track(ctx, obj, spec, st)
			}
		}
		if err != nil && ctx.Err() == nil {
			h.log.Warn("task not reconciled", "task", obj.Name, "err", err)
		}
	}
	h.tally.keep(counting) // ended or deleted tasks are counted no more
	h.mu.Lock()
	gone := h.live == nil // a new leader looks once
	for uid := range h.live {
		if !live[uid] {
			gone = true
		}
	}
	for uid := range h.tasks {
		if !live[uid] {
			delete(h.tasks, uid)
		}
	}
	for uid := range h.decodedTasks {
		if !live[uid] {
			delete(h.decodedTasks, uid)
		}
	}
	h.live = live
	collect := gone || time.Since(h.collected) > collectEvery
	if collect {
		h.collected = time.Now()
	}
	h.mu.Unlock()
	if collect {
		return h.collectOrphans(ctx, live)
	}
	return nil
}

// decodedTask is a Task's spec and status as decoded at one
// resourceVersion: a finished task of ten thousand targets is decoded
// once, not on every pass.
type decodedTask struct {
	rv   string
	spec ota.TaskSpec
	st   ota.TaskStatus
}

// decoded returns obj's spec and status, from the last pass when obj has
// not changed since; ok is false when they do not decode.
func (h *Hub) decoded(obj *consensus.Object) (*ota.TaskSpec, *ota.TaskStatus, bool) {
	uid := string(obj.UID)
	h.mu.Lock()
	d, ok := h.decodedTasks[uid]
	h.mu.Unlock()
	if !ok || d.rv != obj.ResourceVersion {
		d = &decodedTask{rv: obj.ResourceVersion}
		if obj.DecodeSpec(&d.spec) != nil || obj.DecodeStatus(&d.st) != nil {
			return nil, nil, false
		}
		h.mu.Lock()
		if h.decodedTasks == nil {
			h.decodedTasks = map[string]*decodedTask{}
		}
		h.decodedTasks[uid] = d
		h.mu.Unlock()
	}
	// Copies: the passes change what they are given.
	spec, st := d.spec, d.st
	return &spec, &st, true
}

// kickDelay is how long a pass woken by new results waits for more.
const kickDelay = 50 * time.Millisecond

// collectEvery is how often results of deleted tasks are looked for when
// no task was seen to go: they are looked for at once when one goes, and
// when a member starts leading.
const collectEvery = 10 * time.Minute

// collectOrphans deletes DeviceResults whose task is gone. It reads every
// task's results once, uncached: a hub keeping a few dozen 10,000-device
// tasks would otherwise fill the store's cache with them, pushing out the
// running task's results and holding their decoded copies in its heap.
func (h *Hub) collectOrphans(ctx context.Context, live map[string]bool) error {
	type orphan struct{ name, uid string }
	var orphans []orphan
	err := h.cfg.Store.Scan(ctx, &ota.DeviceResultKind, "", nil, consensus.ReadOptions{Stale: true, Uncached: true}, func(o *consensus.Object) error {
		if len(o.OwnerReferences) > 0 && !live[string(o.OwnerReferences[0].UID)] {
			orphans = append(orphans, orphan{o.Name, string(o.UID)})
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, o := range orphans {
		if _, err := h.cfg.Store.Delete(ctx, &ota.DeviceResultKind, "", o.name, 0, o.uid); err != nil && !apierrors.IsNotFound(err) {
			return err
		}
	}
	return nil
}

// ownedBy reports whether obj belongs to the task with uid.
func ownedBy(obj *consensus.Object, uid types.UID) bool {
	for _, ref := range obj.OwnerReferences {
		if ref.UID == uid {
			return true
		}
	}
	return false
}

// start resolves a new task's targets, creates its DeviceResults and marks
// it Running; a task that matches nothing fails with a reason.
func (h *Hub) start(ctx context.Context, obj *consensus.Object, spec *ota.TaskSpec) error {
	devices, err := h.cfg.Inventory.Devices(ctx)
	if err != nil {
		return err
	}
	targets, missing, err := resolve(spec.Targets, devices)
	if err != nil {
		return h.fail(ctx, obj, "InvalidTargets", err.Error())
	}
	if len(targets) == 0 {
		return h.fail(ctx, obj, "NoTargets", "no node matches spec.targets; check the node names, sites and selector against `outpost get nodes --show-labels`")
	}
	now := metav1.Now()
	st := ota.TaskStatus{Phase: ota.TaskRunning, Attempt: 1, StepCount: len(spec.Steps), StartTime: &now, Sites: map[string]ota.Counts{}, NotFound: missing}
	bySite := map[string][]string{}
	for _, d := range targets {
		st.Targets = append(st.Targets, d.Name)
		st.Counts.Add(ota.DeviceQueued, 1)
		c := st.Sites[d.Site]
		c.Add(ota.DeviceQueued, 1)
		st.Sites[d.Site] = c
		bySite[d.Site] = append(bySite[d.Site], d.Name)
	}
	// What track would learn by listing the results it is about to
	// create. The sites' assignments are handed out once every result
	// exists; a site that reports meanwhile waits for its assignment
	// (startGate) rather than learning of it at its next report. (Handing
	// out each site's as soon as its own results exist was tried: the
	// first sites' work then slows the writing of the last sites' results,
	// on a hub that shares its machine, and the task ends later.)
	t := &hubTask{name: obj.Name, uid: string(obj.UID), attempt: 1, version: 1, spec: *spec,
		sites: map[string][]string{}, retry: map[string][]string{}, total: len(targets), halted: spec.Halted, cancel: spec.Canceled, fresh: true}
	h.mu.Lock()
	h.tasks[t.uid] = t
	h.mu.Unlock()
	h.gate.add(slices.Collect(maps.Keys(bySite)))
	defer func() { // ready or not (a start that fails), the reports go on
		for site := range bySite {
			h.gate.done(site)
		}
	}()
	if err := createResults(ctx, h.cfg.Store, obj, targets, 1); err != nil {
		// Still Pending: the next pass starts it again (what exists is
		// kept), and a new leader rebuilds its view.
		return err
	}
	h.mu.Lock()
	t.sites = bySite
	h.mu.Unlock()
	meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: "Dispatched", Status: metav1.ConditionTrue, Reason: "TargetsResolved",
		Message: fmt.Sprintf("%d devices in %d sites", len(targets), len(st.Sites))})
	if missing != nil {
		// The rest run; the names that matched nothing stay in sight.
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: "TargetsFound", Status: metav1.ConditionFalse, Reason: "NotFound",
			Message: "spec.targets names what no node matches: " + missing.String() + "; check them against `outpost get nodes` and `outpost get sites`"})
	}
	// The finalizer comes with the status (writeStatus): from here a
	// delete stops the devices first (deleting).
	if err := writeStatus(ctx, h.cfg.Store, obj, st); err != nil {
		return err
	}
	h.log.Info("task started", "task", obj.Name, "devices", len(targets), "sites", len(st.Sites))
	return nil
}

// deleteGrace is how long a deleted task that still runs devices is kept
// while its sites cancel them; past it the task goes, and a site that was
// cut off meanwhile runs its devices to their end (deviceTimeout).
const deleteGrace = 2 * time.Minute

// deleting handles a task marked for deletion that holds TaskFinalizer: a
// running or halted task is canceled (queued devices canceled, running
// ones killed) and tracked until it ends, whose status write removes the
// finalizer, for at most deleteGrace; then, or at once for a task that is
// not running, the finalizer goes here and the store deletes the task.
// stopping reports that the task is still tracked.
func (h *Hub) deleting(ctx context.Context, obj *consensus.Object, spec *ota.TaskSpec, st *ota.TaskStatus) (stopping bool, err error) {
	if !slices.Contains(obj.Finalizers, ota.TaskFinalizer) {
		return false, nil
	}
	running := st.Phase == ota.TaskRunning || st.Phase == ota.TaskHalted
	if running && time.Since(obj.DeletionTimestamp.Time) < deleteGrace {
		spec.Canceled, spec.Retry = true, st.Retries
		return true, h.track(ctx, obj, spec, st)
	}
	next := obj.DeepCopy()
	next.Finalizers = slices.DeleteFunc(next.Finalizers, func(f string) bool { return f == ota.TaskFinalizer })
	if _, err := h.cfg.Store.Update(ctx, &ota.TaskKind, next); err != nil && !apierrors.IsNotFound(err) {
		return false, fmt.Errorf("remove finalizer: %w", err)
	}
	if running {
		h.log.Warn("deleted task removed while devices may still run (a site did not answer)", "task", obj.Name, "after", deleteGrace)
	}
	return false, nil
}

// resolve returns the devices that the targets name, sorted by name, and
// the names in targets.nodes and targets.sites that match no device.
func resolve(t ota.Targets, devices []Device) ([]Device, *ota.NotFound, error) {
	var sel labels.Selector
	if t.Selector != nil {
		var err error
		if sel, err = metav1.LabelSelectorAsSelector(t.Selector); err != nil {
			return nil, nil, fmt.Errorf("spec.targets.selector: %w", err)
		}
	}
	// Each named node and site, and whether a device matched it.
	nodes, sites := matched(t.Nodes), matched(t.Sites)
	var out []Device
	for _, d := range devices {
		_, byNode := nodes[d.Name]
		_, bySite := sites[d.Site]
		if byNode {
			nodes[d.Name] = true
		}
		if bySite {
			sites[d.Site] = true
		}
		if byNode || bySite || (sel != nil && sel.Matches(labels.Set(d.Labels))) {
			out = append(out, d)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	missing := &ota.NotFound{Nodes: unmatched(nodes), Sites: unmatched(sites)}
	if len(missing.Nodes) == 0 && len(missing.Sites) == 0 {
		missing = nil
	}
	return out, missing, nil
}

// matched maps each name to false: not matched yet.
func matched(names []string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = false
	}
	return m
}

// unmatched are the names of m still false, sorted.
func unmatched(m map[string]bool) []string {
	var out []string
	for n, ok := range m {
		if !ok {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// writeConcurrency is how many writes of one batch (a task's results) are
// proposed at once: enough to fill Raft's batches.
const writeConcurrency = 256

// taskResults lists a task's DeviceResults (read by their names' prefix:
// DeviceResultKind.NamePrefix).
func taskResults(ctx context.Context, store *consensus.Store, task string) (*consensus.List, error) {
	return store.List(ctx, &ota.DeviceResultKind, "", taskSelector(task), consensus.ReadOptions{Stale: true})
}

// taskSelector selects a task's DeviceResults.
func taskSelector(task string) labels.Selector {
	return labels.SelectorFromSet(labels.Set{ota.LabelTask: task})
}

// createResults creates the Queued DeviceResults of a task, each with its
// status in one write, many at once: concurrent proposals share Raft
// batches (and their fsyncs).
func createResults(ctx context.Context, store *consensus.Store, task *consensus.Object, targets []Device, attempt int) error {
	eg, ctx := errgroup.WithContext(ctx)
	eg.SetLimit(writeConcurrency)
	now := metav1.Now()
	for _, d := range targets {
		eg.Go(func() error { return createResult(ctx, store, task, d, attempt, now) })
	}
	return eg.Wait()
}

// createResult creates one device's Queued DeviceResult; one a leader that
// died half-way left is kept, one left by a deleted task of the same name
// replaced.
func createResult(ctx context.Context, store *consensus.Store, task *consensus.Object, d Device, attempt int, now metav1.Time) error {
	obj := &consensus.Object{ObjectMeta: metav1.ObjectMeta{
		Name: ota.ResultName(task.Name, d.Name),
		Labels: map[string]string{
			ota.LabelTask: task.Name, ota.LabelSite: d.Site, ota.LabelNode: d.Name, ota.LabelPhase: string(ota.DeviceQueued),
		},
		OwnerReferences: []metav1.OwnerReference{{APIVersion: ota.TaskKind.APIVersion(), Kind: "Task", Name: task.Name, UID: task.UID}},
	}}
	if err := obj.SetSpec(ota.DeviceResultSpec{Task: task.Name, Node: d.Name, Site: d.Site}); err != nil {
		return err
	}
	if err := obj.SetStatus(ota.DeviceResultStatus{Phase: ota.DeviceQueued, Attempt: attempt, QueuedTime: &now}); err != nil {
		return err
	}
	_, err := store.CreateWithStatus(ctx, &ota.DeviceResultKind, obj)
	if apierrors.IsAlreadyExists(err) {
		old, gerr := store.Get(ctx, &ota.DeviceResultKind, "", obj.Name, consensus.ReadOptions{})
		if gerr != nil {
			return gerr
		}
		if ownedBy(old, task.UID) {
			return nil // a leader that died half-way left it
		}
		// Left by a deleted task of the same name.
		if _, err := store.Delete(ctx, &ota.DeviceResultKind, "", obj.Name, 0, string(old.UID)); err != nil && !apierrors.IsNotFound(err) {
			return err
		}
		_, err = store.CreateWithStatus(ctx, &ota.DeviceResultKind, obj)
	}
	if err != nil {
		return fmt.Errorf("create result for %s: %w", d.Name, err)
	}
	return nil
}

// fail ends a task that cannot start.
func (h *Hub) fail(ctx context.Context, obj *consensus.Object, reason, msg string) error {
	now := metav1.Now()
	st := ota.TaskStatus{Phase: ota.TaskFailed, CompletionTime: &now}
	meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: "Dispatched", Status: metav1.ConditionFalse, Reason: reason, Message: msg})
	h.log.Info("task failed to start", "task", obj.Name, "reason", reason)
	return writeStatus(ctx, h.cfg.Store, obj, st)
}

// writeStatus writes a task's status. A running or halted task holds
// TaskFinalizer and an ended one does not: when the phase crosses, the
// finalizer is added or removed in the same write (so a delete waits for
// a running task's devices, and an ended task goes at once).
func writeStatus(ctx context.Context, store *consensus.Store, obj *consensus.Object, st ota.TaskStatus) error {
	next := obj.DeepCopy()
	if err := next.SetStatus(st); err != nil {
		return err
	}
	running := st.Phase == ota.TaskRunning || st.Phase == ota.TaskHalted
	if running == slices.Contains(obj.Finalizers, ota.TaskFinalizer) {
		_, err := store.UpdateStatus(ctx, &ota.TaskKind, next)
		return err
	}
	next.Finalizers = slices.DeleteFunc(next.Finalizers, func(f string) bool { return f == ota.TaskFinalizer })
	if running {
		next.Finalizers = append(next.Finalizers, ota.TaskFinalizer)
	}
	_, err := store.UpdateWithStatus(ctx, &ota.TaskKind, next)
	return err
}
