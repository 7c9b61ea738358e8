package control

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

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
	Interval time.Duration
	Logger   *slog.Logger
}

// Site is a site's OTA dispatcher. It acts while its node leads the site's
// group; all it knows is in site Raft, so a new leader goes on where the
// old one stopped.
type Site struct {
	cfg SiteConfig
	log *slog.Logger

	mu       sync.Mutex
	inflight map[string]context.CancelFunc // DeviceRun name → cancel
	canceled map[string]bool               // DeviceRuns whose kill was sent
	// done maps assignment UIDs to the version whose runs had all ended
	// when last listed: dispatch skips them until the hub sends a new
	// version, so finished tasks cost no work per pass.
	done map[string]int
}

// NewSite validates cfg.
func NewSite(cfg SiteConfig) (*Site, error) {
	if cfg.Store == nil || cfg.Runner == nil || cfg.Alive == nil || cfg.IsLeader == nil || cfg.Site == "" {
		return nil, errors.New("ota site: Site, Store, Runner, Alive and IsLeader are required")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 200 * time.Millisecond
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Site{cfg: cfg, log: logger.With("component", "ota-site"), inflight: map[string]context.CancelFunc{}, canceled: map[string]bool{}}, nil
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
			if _, err := store.Update(ctx, &SiteTaskKind, next); err != nil {
				return err
			}
			continue
		}
		if a.Spec == nil {
			continue // the hub will send the spec when it sees we lack it
		}
		if err := s.createRuns(ctx, a); err != nil {
			return err
		}
		obj := &consensus.Object{ObjectMeta: metav1.ObjectMeta{Name: a.UID, Labels: map[string]string{ota.LabelTask: a.Task}}}
		_ = obj.SetSpec(SiteTaskSpec{Assignment: a})
		if _, err := store.Create(ctx, &SiteTaskKind, obj); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
		s.log.Info("task assigned", "task", a.Task, "devices", len(a.Devices), "window", a.Window)
	}
	return nil
}

// requeue queues a retry's devices again at the assignment's attempt.
func (s *Site) requeue(ctx context.Context, a Assignment) error {
	now := metav1.Now()
	for _, node := range a.Retry {
		obj, err := s.cfg.Store.Get(ctx, &DeviceRunKind, "", runName(a.UID, node), consensus.ReadOptions{Stale: true})
		if err != nil {
			return err
		}
		var spec DeviceRunSpec
		_ = obj.DecodeSpec(&spec)
		if spec.Attempt >= a.Attempt {
			continue
		}
		spec.Attempt = a.Attempt
		next := obj.DeepCopy()
		_ = next.SetSpec(spec)
		if obj, err = s.cfg.Store.Update(ctx, &DeviceRunKind, next); err != nil {
			return err
		}
		if err := s.setRun(ctx, obj, DeviceRunStatus{Result: ota.DeviceResultStatus{Phase: ota.DeviceQueued, Attempt: a.Attempt, QueuedTime: &now}}); err != nil {
			return err
		}
	}
	s.log.Info("task retried", "task", a.Task, "attempt", a.Attempt, "devices", len(a.Retry))
	return nil
}

func (s *Site) createRuns(ctx context.Context, a Assignment) error {
	eg, ctx := errgroup.WithContext(ctx)
	eg.SetLimit(64)
	now := metav1.Now()
	for _, node := range a.Devices {
		eg.Go(func() error {
			obj := &consensus.Object{ObjectMeta: metav1.ObjectMeta{Name: runName(a.UID, node), Labels: map[string]string{labelUID: a.UID}}}
			_ = obj.SetSpec(DeviceRunSpec{Task: a.Task, UID: a.UID, Attempt: a.Attempt, Node: node})
			created, err := s.cfg.Store.Create(ctx, &DeviceRunKind, obj)
			if apierrors.IsAlreadyExists(err) {
				return nil
			}
			if err != nil {
				return err
			}
			return s.setRun(ctx, created, DeviceRunStatus{Result: ota.DeviceResultStatus{Phase: ota.DeviceQueued, Attempt: a.Attempt, QueuedTime: &now}})
		})
	}
	return eg.Wait()
}

func (s *Site) setRun(ctx context.Context, obj *consensus.Object, st DeviceRunStatus) error {
	next := obj.DeepCopy()
	if err := next.SetStatus(st); err != nil {
		return err
	}
	next.ResourceVersion = ""
	_, err := s.cfg.Store.UpdateStatus(ctx, &DeviceRunKind, next)
	return err
}

// Have reports the version of every assignment the site holds.
func (s *Site) Have(ctx context.Context) (SiteState, error) {
	list, err := s.cfg.Store.List(ctx, &SiteTaskKind, "", nil, consensus.ReadOptions{Stale: true})
	if err != nil {
		return nil, err
	}
	have := SiteState{}
	for _, o := range list.Items {
		var spec SiteTaskSpec
		if o.DecodeSpec(&spec) == nil {
			have[spec.Assignment.UID] = spec.Assignment.Version
		}
	}
	return have, nil
}

// Pending returns up to max device reports the hub has not acknowledged.
func (s *Site) Pending(ctx context.Context, limit int) ([]DeviceReport, error) {
	list, err := s.cfg.Store.List(ctx, &DeviceRunKind, "", nil, consensus.ReadOptions{Stale: true})
	if err != nil {
		return nil, err
	}
	var out []DeviceReport
	for _, o := range list.Items {
		var spec DeviceRunSpec
		var st DeviceRunStatus
		if o.DecodeSpec(&spec) != nil || o.DecodeStatus(&st) != nil || st.Result.Phase == "" || st.Result.Phase == st.Reported {
			continue
		}
		out = append(out, DeviceReport{Task: spec.Task, UID: spec.UID, Attempt: spec.Attempt, Node: spec.Node, Status: st.Result})
		if len(out) == limit {
			break
		}
	}
	return out, nil
}

// Acked records that the hub holds these reports.
func (s *Site) Acked(ctx context.Context, reports []DeviceReport) error {
	for _, r := range reports {
		obj, err := s.cfg.Store.Get(ctx, &DeviceRunKind, "", runName(r.UID, r.Node), consensus.ReadOptions{Stale: true})
		if err != nil {
			continue
		}
		var st DeviceRunStatus
		_ = obj.DecodeStatus(&st)
		if st.Result.Phase != r.Status.Phase {
			continue // moved on since; report again
		}
		st.Reported = r.Status.Phase
		if err := s.setRun(ctx, obj, st); err != nil {
			return err
		}
	}
	return nil
}

// Run dispatches devices while this node leads its site, until ctx is done.
func (s *Site) Run(ctx context.Context) error {
	eg, ctx := errgroup.WithContext(ctx)
	eg.Go(func() error {
		t := time.NewTicker(s.cfg.Interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
			}
			if !s.cfg.IsLeader() {
				s.cancelAll()
				continue
			}
			if err := s.dispatch(ctx, eg); err != nil && ctx.Err() == nil {
				s.log.Warn("dispatch", "err", err)
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
	tasks, err := s.cfg.Store.List(ctx, &SiteTaskKind, "", nil, consensus.ReadOptions{Stale: true})
	if err != nil {
		return err
	}
	live := map[string]bool{}
	for _, t := range tasks.Items {
		var spec SiteTaskSpec
		if t.DecodeSpec(&spec) != nil || spec.Assignment.Spec == nil {
			continue
		}
		live[spec.Assignment.UID] = true
		s.mu.Lock()
		v, ended := s.done[spec.Assignment.UID]
		s.mu.Unlock()
		if ended && v == spec.Assignment.Version {
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
	return nil
}

func (s *Site) dispatchTask(ctx context.Context, eg *errgroup.Group, a *Assignment) error {
	runs, err := s.cfg.Store.List(ctx, &DeviceRunKind, "", labels.SelectorFromSet(labels.Set{labelUID: a.UID}), consensus.ReadOptions{Stale: true})
	if err != nil {
		return err
	}
	sort.Slice(runs.Items, func(i, j int) bool { return runs.Items[i].Name < runs.Items[j].Name })
	now := time.Now()
	running := 0
	var queued []*consensus.Object
	for _, o := range runs.Items {
		var st DeviceRunStatus
		_ = o.DecodeStatus(&st)
		switch st.Result.Phase {
		case ota.DeviceRunning:
			running++
			if a.Canceled {
				s.cancelRun(ctx, a, o)
			}
			if err := s.watchRunning(ctx, eg, a, o, st, now); err != nil {
				return err
			}
		case ota.DeviceQueued, "":
			queued = append(queued, o)
		}
	}
	if running == 0 && len(queued) == 0 {
		s.mu.Lock()
		if s.done == nil {
			s.done = map[string]int{}
		}
		s.done[a.UID] = a.Version
		s.mu.Unlock()
		return nil
	}
	// Devices that start are marked Running concurrently, so that Raft
	// commits them together rather than one fsync after another.
	starts, sctx := errgroup.WithContext(ctx)
	starts.SetLimit(64)
	for _, o := range queued {
		var st DeviceRunStatus
		_ = o.DecodeStatus(&st)
		var spec DeviceRunSpec
		_ = o.DecodeSpec(&spec)
		switch {
		case a.Canceled:
			st.Result = finish(st.Result, ota.DeviceCanceled, "Canceled", "the task was canceled before this device started")
			if err := s.setRun(ctx, o, st); err != nil {
				return err
			}
		case a.Halted || running >= a.Window:
		case !s.cfg.Alive(spec.Node):
			if st.Result.QueuedTime != nil && now.Sub(st.Result.QueuedTime.Time) > a.Spec.DeliveryDeadlineOrDefault() {
				st.Result = finish(st.Result, ota.DeviceUnreachable, "Unreachable",
					fmt.Sprintf("node %s was offline for the whole delivery deadline (%s)", spec.Node, a.Spec.DeliveryDeadlineOrDefault()))
				if err := s.setRun(ctx, o, st); err != nil {
					return err
				}
			}
		default:
			start := metav1.NewTime(now)
			st.Result.Phase, st.Result.StartTime = ota.DeviceRunning, &start
			running++
			starts.Go(func() error {
				if err := s.setRun(sctx, o, st); err != nil {
					return err
				}
				s.launch(ctx, eg, a, spec)
				return nil
			})
		}
	}
	return starts.Wait()
}

// watchRunning fails a run past its device timeout and re-launches a run
// that no goroutine of this leader drives (it was started by another).
func (s *Site) watchRunning(ctx context.Context, eg *errgroup.Group, a *Assignment, o *consensus.Object, st DeviceRunStatus, now time.Time) error {
	var spec DeviceRunSpec
	_ = o.DecodeSpec(&spec)
	// The agent kills the device's process at the timeout; the site gives
	// it a moment more to report before it decides for itself.
	deadline := a.Spec.DeviceTimeoutOrDefault() + 5*time.Second
	if st.Result.StartTime != nil && now.Sub(st.Result.StartTime.Time) > deadline {
		s.stop(o.Name)
		if a.Canceled {
			st.Result = finish(st.Result, ota.DeviceCanceled, "Canceled", fmt.Sprintf("the task was canceled; node %s did not confirm the kill", spec.Node))
		} else {
			st.Result = finish(st.Result, ota.DeviceTimedOut, "DeviceTimeout",
				fmt.Sprintf("no result from node %s within spec.deviceTimeout (%s); the node may have gone offline during the run", spec.Node, a.Spec.DeviceTimeoutOrDefault()))
		}
		return s.setRun(ctx, o, st)
	}
	s.mu.Lock()
	_, driven := s.inflight[o.Name]
	s.mu.Unlock()
	if !driven && s.cfg.Alive(spec.Node) {
		s.launch(ctx, eg, a, spec)
	}
	return nil
}

// cancelRun asks a device's node to kill its run, once per leader.
func (s *Site) cancelRun(ctx context.Context, a *Assignment, o *consensus.Object) {
	var spec DeviceRunSpec
	_ = o.DecodeSpec(&spec)
	s.mu.Lock()
	sent := s.canceled[o.Name]
	s.canceled[o.Name] = true
	s.mu.Unlock()
	if sent {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := s.cfg.Runner.Cancel(cctx, spec.Node, a.UID, spec.Attempt); err != nil {
		s.log.Debug("cancel device run", "task", a.Task, "peer", spec.Node, "err", err)
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
		obj, err := s.cfg.Store.Get(ctx, &DeviceRunKind, "", name, consensus.ReadOptions{Stale: true})
		if err != nil {
			return nil
		}
		var st DeviceRunStatus
		_ = obj.DecodeStatus(&st)
		if st.Result.Phase != ota.DeviceRunning {
			return nil // timed out or canceled meanwhile
		}
		res.Attempt, res.QueuedTime, res.StartTime = spec.Attempt, st.Result.QueuedTime, st.Result.StartTime
		st.Result = res
		if err := s.setRun(ctx, obj, st); err != nil && ctx.Err() == nil {
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
