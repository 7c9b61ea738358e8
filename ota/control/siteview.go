package control

import (
	"context"
	"errors"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/outpost-mesh/outpost/consensus"
	"github.com/outpost-mesh/outpost/ota"
)

// siteView is the site leader's decoded copy of its SiteTasks and
// DeviceRuns, kept by a watch on the site's store and by the leader's own
// writes. The dispatcher's passes and the hub link's reports read it
// instead of listing and decoding every run each time: a pass costs what
// changed, not what the site holds, which is what lets a hundred site
// leaders share a machine with their nodes during a task.
type siteView struct {
	// kick is signalled (without blocking) on every change, to wake the
	// dispatcher: an idle site makes no passes but its slow clock's.
	kick chan struct{}

	mu    sync.Mutex
	ready bool
	// changed is closed and replaced whenever ready becomes true.
	changed chan struct{}
	tasks   map[string]*viewTask           // by UID
	runs    map[string]map[string]*viewRun // task UID → DeviceRun name → run
	// open counts, by task UID, the runs with a phase the hub does not
	// hold (open): the only ones a report (unreported) or its count of
	// running devices (running) looks at. A site keeps ended tasks for
	// Retention, a hundred runs each at a site of a hundred nodes; the
	// hub link asks several times a second during a task, and once every
	// linkInterval when idle, which listed every run of every task kept.
	open map[string]int
}

// viewTask is a SiteTask, decoded.
type viewTask struct {
	obj  *consensus.Object
	spec SiteTaskSpec
}

// viewRun is a DeviceRun, decoded. A device that started with its
// assignment (SiteTaskSpec.Started) has no DeviceRun until its result:
// its viewRun comes from the SiteTask, with a nil obj.
type viewRun struct {
	name string // runName(UID, node)
	obj  *consensus.Object
	spec DeviceRunSpec
	st   DeviceRunStatus
}

// open reports whether the hub does not hold r's phase: r has one to
// report, or is Running and counted until it is reported.
func (r *viewRun) open() bool {
	return r.st.Result.Phase != "" && r.st.Result.Phase != r.st.Reported
}

// rev is the stored revision of the run, 0 when it has no DeviceRun yet.
func (r *viewRun) rev() uint64 {
	if r.obj == nil {
		return 0
	}
	return r.obj.Revision()
}

func newSiteView() *siteView {
	return &siteView{changed: make(chan struct{}), kick: make(chan struct{}, 1)}
}

// notify wakes the dispatcher; a wake-up already pending covers this one.
func (v *siteView) notify() {
	select {
	case v.kick <- struct{}{}:
	default:
	}
}

// errViewNotReady is returned while the view is being (re)built.
var errViewNotReady = errors.New("the site's task view is not ready (the node just became leader)")

// reset fills the view from lists of both kinds and makes it ready.
func (v *siteView) reset(tasks, runs []*consensus.Object) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.tasks, v.runs, v.open = map[string]*viewTask{}, map[string]map[string]*viewRun{}, map[string]int{}
	for _, o := range tasks {
		v.putLocked(&SiteTaskKind, o)
	}
	for _, o := range runs {
		v.putLocked(&DeviceRunKind, o)
	}
	v.ready = true
	close(v.changed)
	v.changed = make(chan struct{})
	v.notify()
}

// drop empties the view; it is not ready until the next reset.
func (v *siteView) drop() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.ready, v.tasks, v.runs, v.open = false, nil, nil, nil
}

// wait returns once the view is ready, or errViewNotReady after timeout.
func (v *siteView) wait(ctx context.Context, timeout time.Duration) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		v.mu.Lock()
		ready, changed := v.ready, v.changed
		v.mu.Unlock()
		if ready {
			return nil
		}
		select {
		case <-changed:
		case <-deadline.C:
			return errViewNotReady
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// put records an object of kind k as written or watched; an older version
// than the one held is ignored.
func (v *siteView) put(k *consensus.Kind, o *consensus.Object) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.ready && v.putLocked(k, o) {
		v.notify()
	}
}

// putLocked stores o and reports whether the view changed.
func (v *siteView) putLocked(k *consensus.Kind, o *consensus.Object) bool {
	switch k {
	case &SiteTaskKind:
		var spec SiteTaskSpec
		if o.DecodeSpec(&spec) != nil {
			return false
		}
		uid := spec.Assignment.UID
		if cur, ok := v.tasks[uid]; ok && cur.obj.Revision() >= o.Revision() {
			return false
		}
		v.tasks[uid] = &viewTask{obj: o, spec: spec}
		v.startedLocked(&spec)
	case &DeviceRunKind:
		return v.putRunLocked(o, nil)
	}
	return true
}

// startedLocked holds the devices that started with an assignment and
// have no DeviceRun yet as Running since then.
func (v *siteView) startedLocked(spec *SiteTaskSpec) {
	started := spec.Started
	if started == nil {
		return
	}
	uid := spec.Assignment.UID
	byName := v.runsOf(uid)
	for _, node := range started.Devices {
		name := runName(uid, node)
		if _, ok := byName[name]; ok {
			continue
		}
		queued, start := started.Time, started.Time
		v.setRunLocked(uid, byName, &viewRun{
			name: name,
			spec: DeviceRunSpec{Task: spec.Assignment.Task, UID: uid, Attempt: started.Attempt, Node: node},
			st: DeviceRunStatus{
				Result:   ota.DeviceResultStatus{Phase: ota.DeviceRunning, Attempt: started.Attempt, QueuedTime: &queued, StartTime: &start},
				Reported: ota.DeviceQueued, // the hub created it Queued
			},
		})
	}
}

// setRunLocked puts r into byName, the runs of task uid, in place of the
// run of the same name, and keeps the task's open count.
func (v *siteView) setRunLocked(uid string, byName map[string]*viewRun, r *viewRun) {
	if cur, ok := byName[r.name]; ok && cur.open() {
		v.open[uid]--
	}
	byName[r.name] = r
	if r.open() {
		v.open[uid]++
	}
}

// runsOf returns the runs of a task, creating the map.
func (v *siteView) runsOf(uid string) map[string]*viewRun {
	byName := v.runs[uid]
	if byName == nil {
		byName = map[string]*viewRun{}
		v.runs[uid] = byName
	}
	return byName
}

// putRunLocked stores a DeviceRun and reports whether the view changed;
// st, when not nil, is its status (the leader's own write), which then
// is not decoded again.
func (v *siteView) putRunLocked(o *consensus.Object, st *DeviceRunStatus) bool {
	// The leader's own writes come back by the watch: a version held
	// already is known by its name (runName) before anything is decoded.
	if uid, _, ok := strings.Cut(o.Name, "."); ok {
		if cur, ok := v.runs[uid][o.Name]; ok && cur.rev() >= o.Revision() {
			return false
		}
	}
	r := viewRun{name: o.Name, obj: o}
	if o.DecodeSpec(&r.spec) != nil {
		return false
	}
	if st != nil {
		r.st = *st
	} else if o.DecodeStatus(&r.st) != nil {
		return false
	}
	byName := v.runsOf(r.spec.UID)
	if cur, ok := byName[o.Name]; ok && cur.rev() >= o.Revision() {
		return false
	}
	v.setRunLocked(r.spec.UID, byName, &r)
	return true
}

// putRun records a DeviceRun this leader wrote with status st: only its
// spec is decoded (decoding the results the leader had just encoded was
// about 3% of a site leader's CPU in a 10,000-node read).
func (v *siteView) putRun(o *consensus.Object, st DeviceRunStatus) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.ready && v.putRunLocked(o, &st) {
		v.notify()
	}
}

// remove forgets a deleted object.
func (v *siteView) remove(k *consensus.Kind, o *consensus.Object) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.ready {
		return
	}
	switch k {
	case &SiteTaskKind:
		for uid, t := range v.tasks {
			if t.obj.Name == o.Name {
				delete(v.tasks, uid)
			}
		}
	case &DeviceRunKind:
		uid, _, _ := strings.Cut(o.Name, ".") // runName
		if cur, ok := v.runs[uid][o.Name]; ok && cur.open() {
			v.open[uid]--
		}
		delete(v.runs[uid], o.Name)
		if len(v.runs[uid]) == 0 {
			delete(v.runs, uid)
			delete(v.open, uid)
		}
	}
	v.notify()
}

// taskList returns the assignments the view holds, sorted by UID.
func (v *siteView) taskList() ([]*viewTask, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.ready {
		return nil, errViewNotReady
	}
	out := make([]*viewTask, 0, len(v.tasks))
	for _, t := range v.tasks {
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].spec.Assignment.UID < out[j].spec.Assignment.UID })
	return out, nil
}

// activeRuns returns copies of a task's queued and running runs, sorted
// by name: a pass over a task costs its unfinished devices.
func (v *siteView) activeRuns(uid string) ([]viewRun, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.ready {
		return nil, errViewNotReady
	}
	return copyRuns(func(r *viewRun) bool {
		switch r.st.Result.Phase {
		case ota.DeviceQueued, ota.DeviceRunning, "":
			return true
		}
		return false
	}, v.runs[uid]), nil
}

// failures counts a task's runs that failed (TimedOut included) and those
// that were unreachable.
func (v *siteView) failures(uid string) (failed, unreachable int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, r := range v.runs[uid] {
		switch r.st.Result.Phase {
		case ota.DeviceFailed, ota.DeviceTimedOut:
			failed++
		case ota.DeviceUnreachable:
			unreachable++
		}
	}
	return failed, unreachable
}

// settled returns copies of a task's runs when every one has ended and
// the hub has acknowledged its phase; ok is false otherwise.
func (v *siteView) settled(uid string) (runs []viewRun, ok bool, err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.ready {
		return nil, false, errViewNotReady
	}
	for _, r := range v.runs[uid] {
		if !r.st.Result.Phase.Finished() || r.st.Reported != r.st.Result.Phase {
			return nil, false, nil
		}
	}
	return copyRuns(func(*viewRun) bool { return true }, v.runs[uid]), true, nil
}

// copyRuns returns copies of the runs that keep selects, sorted by name.
func copyRuns(keep func(*viewRun) bool, byNames ...map[string]*viewRun) []viewRun {
	var out []viewRun
	for _, byName := range byNames {
		for _, r := range byName {
			if keep(r) {
				out = append(out, *r)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// run returns a copy of one run.
func (v *siteView) run(uid, name string) (viewRun, bool, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.ready {
		return viewRun{}, false, errViewNotReady
	}
	r, ok := v.runs[uid][name]
	if !ok {
		return viewRun{}, false, nil
	}
	return *r, true, nil
}

// markReported notes in the view (the store follows, or not, by the
// caller's write) that the hub holds the report of phase for the run as
// read, at revision rev: a later version carries its own Reported.
func (v *siteView) markReported(read viewRun, phase ota.DevicePhase) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if r, ok := v.runs[read.spec.UID][read.name]; ok && r.rev() == read.rev() && r.st.Result.Phase == phase && r.open() {
		r.st.Reported = phase
		v.open[read.spec.UID]--
	}
}

// orphans returns the UIDs of runs whose SiteTask the view does not hold
// (collect deletes the SiteTask first; a leader that stopped half-way
// leaves its runs), sorted.
func (v *siteView) orphans() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.ready {
		return nil
	}
	var out []string
	for uid := range v.runs {
		if _, ok := v.tasks[uid]; !ok {
			out = append(out, uid)
		}
	}
	sort.Strings(out)
	return out
}

// runningReportAge is how long a device has been Running before its
// site reports that phase device by device, for the hub to write in its
// DeviceResult. Until then each report counts the site's running devices
// (running), which the hub shows in the task's counts: a device of a
// fast task goes from Queued to its result in one write at the hub, and
// a long one's DeviceResult shows Running half a minute after it started.
// (With every device reported Running after 2 s, a 10,000-node read on
// a loaded machine cost the hub 7,000 more writes, a quarter of its own.)
const runningReportAge = 30 * time.Second

// young reports whether r is Running and younger than runningReportAge
// at now: such a run is counted (running), not reported (unreported).
func (r *viewRun) young(now time.Time) bool {
	res := r.st.Result
	return res.Phase == ota.DeviceRunning && res.StartTime != nil && now.Sub(res.StartTime.Time) < runningReportAge
}

// running counts, by task UID, the runs that are Running, younger than
// runningReportAge at now and not reported Running to the hub: the hub
// holds them Queued, and a report carries their number instead.
func (v *siteView) running(now time.Time) map[string]int {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.ready {
		return nil
	}
	out := map[string]int{}
	for uid, n := range v.open {
		if n == 0 {
			continue
		}
		for _, r := range v.runs[uid] {
			if r.young(now) && r.st.Reported != ota.DeviceRunning {
				out[uid]++
			}
		}
	}
	return out
}

// unreported returns up to limit runs with a phase the hub has not
// acknowledged (a Running one once runningReportAge old at now), by task
// UID and name.
func (v *siteView) unreported(limit int, now time.Time) ([]viewRun, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.ready {
		return nil, errViewNotReady
	}
	out := copyRuns(func(r *viewRun) bool {
		if r.young(now) {
			return false // counted (running), not reported
		}
		return r.open()
	}, v.openRuns()...)
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// openRuns returns the runs of the tasks with open runs.
func (v *siteView) openRuns() []map[string]*viewRun {
	var out []map[string]*viewRun
	for uid, n := range v.open {
		if n > 0 {
			out = append(out, v.runs[uid])
		}
	}
	return out
}

// follow keeps the view while this node leads: a list of both kinds, then
// a watch from there; it rebuilds the view when a watch breaks and drops
// it when leadership goes.
func (s *Site) follow(ctx context.Context) error {
	for ctx.Err() == nil {
		if s.cfg.IsLeader() {
			if err := s.followOnce(ctx); err != nil && ctx.Err() == nil {
				s.log.Debug("site task view rebuilt", "err", err)
			}
		}
		s.view.drop()
		select {
		case <-ctx.Done():
		case <-time.After(s.cfg.IdleInterval):
		}
	}
	return nil
}

// errNotLeader ends followOnce when this node stops leading.
var errNotLeader = errors.New("no longer the site's leader")

func (s *Site) followOnce(ctx context.Context) error {
	store := s.cfg.Store
	tasks, err := store.List(ctx, &SiteTaskKind, "", nil, consensus.ReadOptions{Stale: true})
	if err != nil {
		return err
	}
	runs, err := store.List(ctx, &DeviceRunKind, "", nil, consensus.ReadOptions{Stale: true})
	if err != nil {
		return err
	}
	// Both lists are complete up to the first one's index; events after
	// it are applied again, which put ignores for versions it holds.
	from := min(tasks.ResourceVersion, runs.ResourceVersion)
	s.view.reset(tasks.Items, runs.Items)
	eg, ctx := errgroup.WithContext(ctx)
	for _, k := range []*consensus.Kind{&SiteTaskKind, &DeviceRunKind} {
		w, err := store.Watch(ctx, k, "", nil, from)
		if err != nil {
			return err
		}
		eg.Go(func() error {
			defer w.Stop()
			for {
				ev, err := w.Next(ctx)
				if err != nil {
					return err
				}
				if ev.Type == watch.Deleted {
					s.view.remove(k, ev.Object)
				} else {
					s.view.put(k, ev.Object)
				}
			}
		})
	}
	eg.Go(func() error {
		t := time.NewTicker(s.cfg.IdleInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-t.C:
			}
			if !s.cfg.IsLeader() {
				return errNotLeader
			}
		}
	})
	return eg.Wait()
}
