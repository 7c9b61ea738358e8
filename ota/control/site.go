package control

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/outpost-mesh/outpost/consensus"
	"github.com/outpost-mesh/outpost/ota"
)

// Runner runs one device on its node's agent and returns the result.
type Runner interface {
	Run(ctx context.Context, node string, req RunRequest) (ota.DeviceResultStatus, error)
	// Cancel kills a device's run on its node; the run then reports
	// Canceled.
	Cancel(ctx context.Context, node, uid string, attempt int) error
}

// SiteConfig configures a site's dispatcher.
type SiteConfig struct {
	Site   string
	Store  *consensus.Store
	Runner Runner
	// Alive reports whether a node of the site is reachable now.
	Alive    func(node string) bool
	IsLeader func() bool
	// Interval is the least time between two dispatch passes: the changes
	// of a burst of results wait for one pass (default 200 ms).
	Interval time.Duration
	// IdleInterval is how often the dispatcher looks with nothing changed,
	// for deadlines, nodes that came back and leadership (default 1 s).
	IdleInterval time.Duration
	// Retention is how long an assignment whose every device has ended,
	// and been acknowledged by the hub, stays in site Raft before it is
	// deleted with its runs (default 10 min). A retry after that reaches
	// the site as a new assignment of the devices to run again.
	Retention time.Duration
	Logger    *slog.Logger
}

// Site is a site's OTA dispatcher. It acts while its node leads the site's
// group; all it knows is in site Raft, so a new leader goes on where the
// old one stopped.
type Site struct {
	cfg SiteConfig
	log *slog.Logger

	// view is the leader's decoded copy of the site's assignments and
	// runs (siteview.go).
	view *siteView
	// unreported is signalled when a run's phase changes, for the hub
	// link to report without waiting for its next tick.
	unreported chan struct{}

	mu       sync.Mutex
	inflight map[string]context.CancelFunc // DeviceRun name → cancel
	canceled map[string]bool               // DeviceRuns whose kill was sent
	// done maps assignment UIDs to the version whose runs had all ended
	// when last listed, and since when: dispatch skips them until the hub
	// sends a new version, so finished tasks cost no work per pass, and
	// deletes them after Retention.
	done map[string]ended
}

// ended is an assignment's version whose runs had all ended, and when this
// leader saw it.
type ended struct {
	version int
	at      time.Time
}

// NewSite validates cfg.
func NewSite(cfg SiteConfig) (*Site, error) {
	if cfg.Store == nil || cfg.Runner == nil || cfg.Alive == nil || cfg.IsLeader == nil || cfg.Site == "" {
		return nil, errors.New("ota site: Site, Store, Runner, Alive and IsLeader are required")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 200 * time.Millisecond
	}
	if cfg.IdleInterval <= 0 {
		cfg.IdleInterval = max(time.Second, cfg.Interval)
	}
	if cfg.Retention <= 0 {
		cfg.Retention = 10 * time.Minute
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Site{cfg: cfg, log: logger.With("component", "ota-site"), view: newSiteView(), unreported: make(chan struct{}, 1), inflight: map[string]context.CancelFunc{}, canceled: map[string]bool{}}, nil
}

func runName(uid, node string) string { return uid + "." + node }

// Accept records assignments from the hub in site Raft: a new task with
// its devices queued, or a new version of a known one.
func (s *Site) Accept(ctx context.Context, as []Assignment) error {
	store := s.cfg.Store
	for _, a := range as {
		cur, err := store.Get(ctx, &SiteTaskKind, "", a.UID, consensus.ReadOptions{Stale: true})
		if err != nil && !apierrors.IsNotFound(err) {
			return err
		}
		if cur != nil {
			var spec SiteTaskSpec
			_ = cur.DecodeSpec(&spec)
			if a.Attempt > spec.Assignment.Attempt {
				if err := s.requeue(ctx, a); err != nil {
					return err
				}
				spec.Assignment.Attempt = a.Attempt
			}
			spec.Assignment.Version, spec.Assignment.Window = a.Version, a.Window
			spec.Assignment.Halted, spec.Assignment.Canceled = a.Halted, a.Canceled
			spec.Assignment.Grants = mergeGrants(spec.Assignment.Grants, a.Grants) // a retry brings new grants
			next := cur.DeepCopy()
			_ = next.SetSpec(spec)
			updated, err := store.Update(ctx, &SiteTaskKind, next)
			if err != nil {
				return err
			}
			s.view.put(&SiteTaskKind, updated)
			continue
		}
		if a.Spec == nil {
			continue // the hub will send the spec when it sees we lack it
		}
		started, err := s.createRuns(ctx, a)
		if err != nil {
			return err
		}
		spec := SiteTaskSpec{Assignment: a}
		if len(started) > 0 {
			spec.Started = &StartedRuns{Devices: started, Attempt: a.Attempt, Time: metav1.Now()}
		}
		obj := &consensus.Object{ObjectMeta: metav1.ObjectMeta{Name: a.UID, Labels: map[string]string{ota.LabelTask: a.Task}}}
		_ = obj.SetSpec(spec)
		created, err := store.Create(ctx, &SiteTaskKind, obj)
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
		if created != nil {
			s.view.put(&SiteTaskKind, created)
		}
		s.log.Info("task assigned", "task", a.Task, "devices", len(a.Devices), "window", a.Window)
	}
	return nil
}

// requeue queues a retry's devices again at the assignment's attempt.
func (s *Site) requeue(ctx context.Context, a Assignment) error {
	now := metav1.Now()
	var missing []string
	for _, node := range a.Retry {
		obj, err := s.cfg.Store.Get(ctx, &DeviceRunKind, "", runName(a.UID, node), consensus.ReadOptions{Stale: true})
		if apierrors.IsNotFound(err) {
			// Collected half-way, or started with the assignment and not
			// ended here (the hub gave up on it): run it anew.
			missing = append(missing, node)
			continue
		}
		if err != nil {
			return err
		}
		r := viewRun{name: obj.Name}
		_ = obj.DecodeSpec(&r.spec)
		if r.spec.Attempt >= a.Attempt {
			continue
		}
		r.spec.Attempt = a.Attempt
		next := obj.DeepCopy()
		_ = next.SetSpec(r.spec)
		if r.obj, err = s.cfg.Store.Update(ctx, &DeviceRunKind, next); err != nil {
			return err
		}
		// The hub queued the retry itself: nothing to report until it runs.
		if err := s.setRun(ctx, r, DeviceRunStatus{Result: ota.DeviceResultStatus{Phase: ota.DeviceQueued, Attempt: a.Attempt, QueuedTime: &now}, Reported: ota.DeviceQueued}); err != nil {
			return err
		}
	}
	if len(missing) > 0 {
		b := a
		b.Devices, b.Halted = missing, true // queued: the next pass starts them within the window
		if _, err := s.createRuns(ctx, b); err != nil {
			return err
		}
	}
	s.log.Info("task retried", "task", a.Task, "attempt", a.Attempt, "devices", len(a.Retry))
	return nil
}

// createRuns records a new assignment's runs. Those that can start at
// once (within the window, their node alive) are returned, to be recorded
// as started in the SiteTask (SiteTaskSpec.Started) rather than each in a
// write of its own; the next dispatch pass launches them, as it does any
// Running run that no goroutine drives. The rest are created Queued.
func (s *Site) createRuns(ctx context.Context, a Assignment) (started []string, err error) {
	eg, ctx := errgroup.WithContext(ctx)
	eg.SetLimit(writeConcurrency)
	now := metav1.Now()
	starts := 0
	if !a.Halted && !a.Canceled {
		starts = a.Window
	}
	for _, node := range a.Devices {
		if starts > 0 && s.cfg.Alive(node) {
			starts--
			started = append(started, node)
			continue
		}
		spec := DeviceRunSpec{Task: a.Task, UID: a.UID, Attempt: a.Attempt, Node: node}
		// The hub created the device's result Queued: that phase needs no
		// report.
		st := DeviceRunStatus{Result: ota.DeviceResultStatus{Phase: ota.DeviceQueued, Attempt: a.Attempt, QueuedTime: &now}, Reported: ota.DeviceQueued}
		eg.Go(func() error {
			created, err := s.cfg.Store.CreateWithStatus(ctx, &DeviceRunKind, newRun(spec, st))
			if apierrors.IsAlreadyExists(err) {
				return nil
			}
			if err != nil {
				return err
			}
			s.view.putRun(created, st)
			return nil
		})
	}
	return started, eg.Wait()
}

// newRun is the DeviceRun of a device, with status st.
func newRun(spec DeviceRunSpec, st DeviceRunStatus) *consensus.Object {
	obj := &consensus.Object{ObjectMeta: metav1.ObjectMeta{Name: runName(spec.UID, spec.Node), Labels: map[string]string{labelUID: spec.UID}}}
	_ = obj.SetSpec(spec)
	_ = obj.SetStatus(st)
	return obj
}

// setRun writes st on the run r (whatever its version now; creating it
// for a device that started with its assignment), puts the result in the
// view and, when the hub has not got the phase, signals Unreported.
func (s *Site) setRun(ctx context.Context, r viewRun, st DeviceRunStatus) error {
	store := s.cfg.Store
	var (
		written *consensus.Object
		err     error
	)
	if r.obj == nil {
		written, err = store.CreateWithStatus(ctx, &DeviceRunKind, newRun(r.spec, st))
		if apierrors.IsAlreadyExists(err) { // written meanwhile (a result and a timeout): the last write wins
			r.obj, err = store.Get(ctx, &DeviceRunKind, "", r.name, consensus.ReadOptions{Stale: true})
		}
	}
	if r.obj != nil && err == nil {
		next := r.obj.DeepCopy()
		if err := next.SetStatus(st); err != nil {
			return err
		}
		next.ResourceVersion = ""
		written, err = store.UpdateStatus(ctx, &DeviceRunKind, next)
	}
	if err != nil {
		return err
	}
	s.view.putRun(written, st)
	if st.Result.Phase != st.Reported {
		select {
		case s.unreported <- struct{}{}:
		default:
		}
	}
	return nil
}

// Unreported is signalled (at most one pending signal) when a run's
// phase changed and the hub has not acknowledged it.
func (s *Site) Unreported() <-chan struct{} { return s.unreported }

// Have reports the version of every assignment the site holds.
// It is called on the leader, whose view it reads (waiting a moment for
// a new leader's view).
func (s *Site) Have(ctx context.Context) (SiteState, error) {
	if err := s.view.wait(ctx, viewWait); err != nil {
		return nil, err
	}
	tasks, err := s.view.taskList()
	if err != nil {
		return nil, err
	}
	have := SiteState{}
	for _, t := range tasks {
		have[t.spec.Assignment.UID] = t.spec.Assignment.Version
	}
	return have, nil
}

// viewWait is how long Have and Pending wait for a new leader's view.
const viewWait = 5 * time.Second

// Pending returns up to limit device reports the hub has not acknowledged,
// of at most ReportBudget bytes encoded (at least one); a device's Running
// is reported once it has run for runningReportAge, and counted (Running)
// before.
func (s *Site) Pending(ctx context.Context, limit int) ([]DeviceReport, error) {
	if err := s.view.wait(ctx, viewWait); err != nil {
		return nil, err
	}
	runs, err := s.view.unreported(limit, time.Now())
	if err != nil {
		return nil, err
	}
	out := make([]DeviceReport, 0, len(runs))
	size := 0
	for _, r := range runs {
		if size += r.st.Result.SizeBound() + 512; size > ReportBudget && len(out) > 0 {
			break // the rest go in the next reports
		}
		out = append(out, DeviceReport{Task: r.spec.Task, UID: r.spec.UID, Attempt: r.spec.Attempt, Node: r.spec.Node, Status: r.st.Result})
	}
	return out, nil
}

// Running counts the site's running devices that Pending leaves out (they
// have run for less than runningReportAge), by task UID; nil while a new
// leader's view is not ready. The hub shows them in the task's counts.
func (s *Site) Running(now time.Time) map[string]int { return s.view.running(now) }

// ReportBudget bounds the encoded results of one call to Pending: a link
// report is one message of at most 4 MiB, and one result may take
// ota.ResultBudget. Counted alone, 512 results of exec steps that print
// much would not have fit, and the site would never have reported again.
const ReportBudget = 3 << 20

// Acked records that the hub holds these reports, in the leader's view
// only: the next report leaves them out, and nothing is written (a Running
// one rides the run's next write, its result). A new leader, or a view
// rebuilt after a broken watch, reports the ended runs of the tasks the
// site still holds again, which the hub, holding them, takes as they are;
// a site deletes a task Retention after it ended (collect), so that is at
// most that much of its results. Writing each result's acknowledgement
// was a third of a site leader's Raft writes per device.
func (s *Site) Acked(_ context.Context, reports []DeviceReport) error {
	for _, r := range reports {
		run, ok, err := s.view.run(r.UID, runName(r.UID, r.Node))
		if err != nil {
			return err
		}
		if ok && run.st.Result.Phase == r.Status.Phase { // else moved on since; report again
			s.view.markReported(run, r.Status.Phase)
		}
	}
	return nil
}

// Run dispatches devices while this node leads its site, until ctx is done.
func (s *Site) Run(ctx context.Context) error {
	eg, ctx := errgroup.WithContext(ctx)
	eg.Go(func() error { return s.follow(ctx) })
	eg.Go(func() error {
		idle := time.NewTimer(s.cfg.IdleInterval)
		defer idle.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-s.view.kick:
			case <-idle.C:
			}
			if !s.cfg.IsLeader() {
				s.cancelAll()
			} else if err := s.dispatch(ctx, eg); err != nil && ctx.Err() == nil {
				s.log.Warn("dispatch", "err", err)
			}
			idle.Reset(s.cfg.IdleInterval)
			// Changes within Interval of this pass wait for the next one.
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(s.cfg.Interval):
			}
		}
	})
	err := eg.Wait()
	s.cancelAll()
	return err
}

func (s *Site) cancelAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.done = nil
	for name, cancel := range s.inflight {
		cancel()
		delete(s.inflight, name)
	}
}

// dispatch starts devices within each task's window, fails those past
// their deadlines, and resumes runs a previous leader started.
func (s *Site) dispatch(ctx context.Context, eg *errgroup.Group) error {
	tasks, err := s.view.taskList()
	if errors.Is(err, errViewNotReady) {
		return nil // a new leader's view is being built
	}
	if err != nil {
		return err
	}
	live := map[string]bool{}
	for _, t := range tasks {
		spec := t.spec
		if spec.Assignment.Spec == nil {
			continue
		}
		uid := spec.Assignment.UID
		live[uid] = true
		s.mu.Lock()
		e, done := s.done[uid]
		s.mu.Unlock()
		if done && e.version == spec.Assignment.Version {
			if time.Since(e.at) > s.cfg.Retention {
				if err := s.collect(ctx, t); err != nil {
					s.log.Debug("finished task not collected; next pass tries again", "task", spec.Assignment.Task, "err", err)
				}
			}
			continue
		}
		if err := s.dispatchTask(ctx, eg, &spec.Assignment); err != nil {
			return fmt.Errorf("task %s: %w", spec.Assignment.Task, err)
		}
	}
	s.mu.Lock()
	for uid := range s.done {
		if !live[uid] {
			delete(s.done, uid)
		}
	}
	s.mu.Unlock()
	if err := s.collectOrphans(ctx); err != nil {
		s.log.Debug("runs of a collected task not deleted; next pass tries again", "err", err)
	}
	return nil
}

func (s *Site) dispatchTask(ctx context.Context, eg *errgroup.Group, a *Assignment) error {
	runs, err := s.view.activeRuns(a.UID)
	if err != nil {
		return err
	}
	now := time.Now()
	running := 0
	var queued []viewRun
	for _, r := range runs {
		switch r.st.Result.Phase {
		case ota.DeviceRunning:
			running++
			if a.Canceled {
				s.cancelRun(ctx, a, r)
			}
			if err := s.watchRunning(ctx, eg, a, r, now); err != nil {
				return err
			}
		case ota.DeviceQueued, "":
			queued = append(queued, r)
		}
	}
	if running == 0 && len(queued) == 0 {
		s.mu.Lock()
		if s.done == nil {
			s.done = map[string]ended{}
		}
		s.done[a.UID] = ended{version: a.Version, at: time.Now()}
		s.mu.Unlock()
		return nil
	}
	halted := a.Halted || len(queued) > 0 && running < a.Window && s.overPolicy(a)
	// Devices that start are marked Running concurrently, so that Raft
	// commits them together rather than one fsync after another.
	starts, sctx := errgroup.WithContext(ctx)
	starts.SetLimit(writeConcurrency)
	for _, r := range queued {
		st, spec := r.st, r.spec
		switch {
		case a.Canceled:
			st.Result = finish(st.Result, ota.DeviceCanceled, "Canceled", "the task was canceled before this device started")
			if err := s.setRun(ctx, r, st); err != nil {
				return err
			}
		case halted || running >= a.Window:
		case !s.cfg.Alive(spec.Node):
			if st.Result.QueuedTime != nil && now.Sub(st.Result.QueuedTime.Time) > a.Spec.DeliveryDeadlineOrDefault() {
				st.Result = finish(st.Result, ota.DeviceUnreachable, "Unreachable",
					fmt.Sprintf("node %s was offline for the whole delivery deadline (%s)", spec.Node, a.Spec.DeliveryDeadlineOrDefault()))
				if err := s.setRun(ctx, r, st); err != nil {
					return err
				}
			}
		default:
			start := metav1.NewTime(now)
			st.Result.Phase, st.Result.StartTime = ota.DeviceRunning, &start
			running++
			starts.Go(func() error {
				if err := s.setRun(sctx, r, st); err != nil {
					return err
				}
				s.launch(ctx, eg, a, spec)
				return nil
			})
		}
	}
	return starts.Wait()
}

// overPolicy reports whether this site's own failed or unreachable
// devices already pass a number in the task's failure policy. The hub
// halts the task when its count passes it, a report later; the site,
// which sees them first, starts no more devices meanwhile, so that
// `maxFailures: 0` stops at the first failure. The hub sends a
// percentage resolved to a number of the task's devices (policyOf).
func (s *Site) overPolicy(a *Assignment) bool {
	if a.Spec == nil {
		return false
	}
	limit := func(l *intstr.IntOrString) int {
		if l == nil || l.Type != intstr.Int {
			return -1
		}
		return l.IntValue()
	}
	maxFailed, maxUnreachable := limit(a.Spec.FailurePolicy.MaxFailures), limit(a.Spec.FailurePolicy.MaxUnreachable)
	if maxFailed < 0 && maxUnreachable < 0 {
		return false
	}
	failed, unreachable := s.view.failures(a.UID)
	return maxFailed >= 0 && failed > maxFailed || maxUnreachable >= 0 && unreachable > maxUnreachable
}

// watchRunning fails a run past its device timeout and re-launches a run
// that no goroutine of this leader drives (it was started by another).
func (s *Site) watchRunning(ctx context.Context, eg *errgroup.Group, a *Assignment, r viewRun, now time.Time) error {
	st, spec := r.st, r.spec
	// The agent kills the device's process at the timeout; the site gives
	// it a moment more to report before it decides for itself.
	deadline := a.Spec.DeviceTimeoutOrDefault() + 5*time.Second
	if st.Result.StartTime != nil && now.Sub(st.Result.StartTime.Time) > deadline {
		s.stop(r.name)
		if a.Canceled {
			st.Result = finish(st.Result, ota.DeviceCanceled, "Canceled", fmt.Sprintf("the task was canceled; node %s did not confirm the kill", spec.Node))
		} else {
			st.Result = finish(st.Result, ota.DeviceTimedOut, "DeviceTimeout",
				fmt.Sprintf("no result from node %s within spec.deviceTimeout (%s); the node may have gone offline during the run", spec.Node, a.Spec.DeviceTimeoutOrDefault()))
		}
		return s.setRun(ctx, r, st)
	}
	s.mu.Lock()
	_, driven := s.inflight[r.name]
	s.mu.Unlock()
	if !driven && s.cfg.Alive(spec.Node) {
		s.launch(ctx, eg, a, spec)
	}
	return nil
}

// cancelRun asks a device's node to kill its run, once per leader.
func (s *Site) cancelRun(ctx context.Context, a *Assignment, r viewRun) {
	s.mu.Lock()
	sent := s.canceled[r.name]
	s.canceled[r.name] = true
	s.mu.Unlock()
	if sent {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := s.cfg.Runner.Cancel(cctx, r.spec.Node, a.UID, r.spec.Attempt); err != nil {
		s.log.Debug("cancel device run", "task", a.Task, "peer", r.spec.Node, "err", err)
	}
}

func (s *Site) stop(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cancel, ok := s.inflight[name]; ok {
		cancel()
		delete(s.inflight, name)
	}
}

// launch runs a device on its node in a goroutine owned by Run's group and
// records the result in site Raft.
func (s *Site) launch(ctx context.Context, eg *errgroup.Group, a *Assignment, spec DeviceRunSpec) {
	name := runName(a.UID, spec.Node)
	rctx, cancel := context.WithCancel(ctx)
	s.mu.Lock()
	s.inflight[name] = cancel
	s.mu.Unlock()
	req := RunRequest{
		Task: a.Task, UID: a.UID, Attempt: spec.Attempt, Node: spec.Node, Site: s.cfg.Site,
		Steps: a.Spec.Steps, DeviceTimeout: a.Spec.DeviceTimeoutOrDefault().Milliseconds(),
		Grant: a.grantFor(spec.Node, spec.Attempt), // forwarded untouched; the agent checks it
	}
	eg.Go(func() error {
		defer s.stop(name)
		res, err := s.cfg.Runner.Run(rctx, spec.Node, req)
		if err != nil {
			// Left Running: the next pass re-launches it while the node is
			// alive, and times it out when it is not.
			if rctx.Err() == nil {
				s.log.Debug("device run interrupted", "task", a.Task, "peer", spec.Node, "err", err)
			}
			return nil
		}
		run, ok, err := s.view.run(a.UID, name)
		if err != nil || !ok {
			return nil
		}
		st := run.st
		if st.Result.Phase != ota.DeviceRunning || run.spec.Attempt != spec.Attempt {
			return nil // timed out, canceled or retried meanwhile
		}
		res.Attempt, res.QueuedTime, res.StartTime = spec.Attempt, st.Result.QueuedTime, st.Result.StartTime
		st.Result = res
		if err := s.setRun(ctx, run, st); err != nil && ctx.Err() == nil {
			s.log.Warn("record device result", "task", a.Task, "peer", spec.Node, "err", err)
		}
		return nil
	})
}

// finish ends a result with phase and reason.
func finish(r ota.DeviceResultStatus, phase ota.DevicePhase, reason, msg string) ota.DeviceResultStatus {
	now := metav1.Now()
	r.Phase, r.Reason, r.Message, r.CompletionTime = phase, reason, msg, &now
	return r
}
