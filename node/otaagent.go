package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/outpost-mesh/outpost/internal/atomicfile"
	"github.com/outpost-mesh/outpost/ota"
	"github.com/outpost-mesh/outpost/ota/agent"
	"github.com/outpost-mesh/outpost/ota/control"
	"github.com/outpost-mesh/outpost/ota/grant"
)

// agentService runs devices on this node. A run outlives the stream that
// asked for it (a site leader that fails over asks again and gets the same
// run); its steps are journaled in a RunStore, so no step runs twice in an
// attempt, and the final result is kept there too. Output goes to
// <dir>/<task-uid>-<attempt>/.
type agentService struct {
	dir    string
	policy agent.Policy
	id     *identity
	store  RunStore
	log    *slog.Logger
	// blobs opens contentFrom blobs through the node's image cache; nil
	// on a node without one.
	blobs agent.BlobOpener
	// grants remembers the hub's grants this agent accepted (otagrant.go).
	grants *grant.Guard
	// refusals counts the run requests refused for their grant until
	// report hands them to the site (otarefusal.go); a nil report keeps
	// them here, bounded.
	refusals *refusalBook
	report   func(context.Context, []GrantRefusal) error
	// retention is how long an ended run is kept (otaprune.go); 0 keeps
	// every run.
	retention time.Duration

	// admitMu serializes admitRun.
	admitMu sync.Mutex
	mu      sync.Mutex
	eg      *errgroup.Group
	ctx     context.Context
	running map[string]*agentRun
}

type agentRun struct {
	done   chan struct{}
	cancel context.CancelCauseFunc
	status ota.DeviceResultStatus
}

// errTaskCanceled is the cause of a run killed by `outpost task cancel`:
// unlike a shutdown, its result is final.
var errTaskCanceled = errors.New("the task was canceled")

// newAgentService keeps output in <dataDir>/ota; a nil store keeps the
// journal and results there too, as files, and deletes runs retention
// after they ended (0: never).
func newAgentService(dataDir string, pol agent.Policy, retention time.Duration, id *identity, store RunStore, logger *slog.Logger) (*agentService, error) {
	dir := filepath.Join(dataDir, "ota")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if store == nil {
		store = fileRunStore{dir: dir}
	}
	grants, err := grant.OpenGuard(filepath.Join(dir, "grants.log"), 0, time.Now())
	if err != nil {
		return nil, err
	}
	return &agentService{
		dir: dir, policy: pol, id: id, store: store, log: logger, grants: grants,
		refusals: newRefusalBook(maxHeldRefusals), running: map[string]*agentRun{}, retention: retention,
	}, nil
}

// Run owns the device runs until ctx ends; on return every run has ended
// (its processes killed).
func (a *agentService) Run(ctx context.Context) error {
	eg, ctx := errgroup.WithContext(ctx)
	a.mu.Lock()
	a.eg, a.ctx = eg, ctx
	a.mu.Unlock()
	if a.report != nil {
		eg.Go(func() error { return a.reportRefusals(ctx, a.report) }) // otarefusal.go
	}
	eg.Go(func() error { return a.runPruning(ctx) }) // otaprune.go
	<-ctx.Done()
	a.mu.Lock()
	a.eg = nil
	a.mu.Unlock()
	return errors.Join(eg.Wait(), a.grants.Close())
}

// run returns the device's result: the stored one, the one of a run in
// progress once it ends, or that of a new run. from is who asked, for the
// audit of a refusal.
func (a *agentService) run(ctx context.Context, req control.RunRequest, from refusalCaller) (ota.DeviceResultStatus, error) {
	key := runKey(req.UID, req.Attempt)
	r, st, err := a.admitRun(req, key, from)
	if r == nil {
		return st, err
	}
	select {
	case <-r.done:
		return r.status, nil
	case <-ctx.Done():
		return ota.DeviceResultStatus{}, ctx.Err()
	}
}

// admitRun checks the request's grant and returns the run to wait for
// (a new one or the one in progress), or, with a nil run, the answer: the
// stored result or a refusal. Admissions are serialized, so that a site
// leader's second request for a run (its first stream broke) never finds
// the grant recorded but the run not yet started, and takes it for a
// replay.
func (a *agentService) admitRun(req control.RunRequest, key string, from refusalCaller) (*agentRun, ota.DeviceResultStatus, error) {
	a.admitMu.Lock()
	defer a.admitMu.Unlock()
	if err := a.admit(req, key); err != nil { // otagrant.go: only the hub's grants run
		a.refuse(req, from, err) // otarefusal.go: audited at the hub
		return nil, failed(req, grant.Reason, err.Error()), nil
	}
	if st, ok, err := a.store.Result(key); err != nil || ok {
		return nil, st, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if r, ok := a.running[key]; ok {
		return r, ota.DeviceResultStatus{}, nil
	}
	if a.eg == nil {
		return nil, ota.DeviceResultStatus{}, errors.New("the agent is shutting down")
	}
	runCtx, cancel := context.WithCancelCause(a.ctx)
	r := &agentRun{done: make(chan struct{}), cancel: cancel}
	a.running[key] = r
	a.eg.Go(func() error {
		defer cancel(nil)
		defer close(r.done)
		r.status = a.execute(runCtx, req, key)
		a.mu.Lock()
		delete(a.running, key)
		a.mu.Unlock()
		return nil
	})
	return r, ota.DeviceResultStatus{}, nil
}

// cancel kills a run in progress; it reports Canceled.
func (a *agentService) cancel(uid string, attempt int) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	r, ok := a.running[runKey(uid, attempt)]
	if ok {
		r.cancel(errTaskCanceled)
	}
	return ok
}

func (a *agentService) execute(ctx context.Context, req control.RunRequest, key string) ota.DeviceResultStatus {
	// The run's directory is made by the first thing kept there (a
	// journal record, a step's output): a run that prints nothing into a
	// RunStore of its own costs the disk no directory.
	runDir := filepath.Join(a.dir, key)
	d := agent.Device{
		Env:     agent.Env{Node: a.id.Name, Site: a.id.Site, Task: req.Task},
		Attempt: req.Attempt, Steps: req.Steps,
		Timeout: time.Duration(req.DeviceTimeout) * time.Millisecond,
		Policy:  a.policy, LogDir: runDir, Journal: a.store.Journal(key),
		Blobs: a.blobs,
	}
	a.log.Info("running task", "task", req.Task, "attempt", req.Attempt, "steps", len(req.Steps))
	st := agent.RunDevice(ctx, d)
	if ctx.Err() != nil && context.Cause(ctx) != errTaskCanceled {
		return st // shutting down: not final; the next dispatch resumes
	}
	if err := a.store.SaveResult(key, st); err != nil {
		a.log.Warn("could not keep the task result", "task", req.Task, "err", err)
	}
	a.log.Info("task finished on this node", "task", req.Task, "phase", st.Phase)
	return st
}

func failed(req control.RunRequest, reason, msg string) ota.DeviceResultStatus {
	return ota.DeviceResultStatus{Phase: ota.DeviceFailed, Attempt: req.Attempt, Reason: reason, Message: msg}
}

// runKey names a device's run: one attempt of one task.
func runKey(uid string, attempt int) string { return fmt.Sprintf("%s-%d", uid, attempt) }

// RunStore keeps what an agent must not forget across a crash, keyed by
// run: each step's result (the journal), durable when Record returns, and
// each run's final result. The final result sums up the journal, so it
// need not be durable: a run whose result a crash lost is answered from
// its journal, every step's recorded result returned and none run again
// (only the run's start and completion times are those of the answer).
// So a device costs the store the synced writes of its steps and no more.
type RunStore interface {
	// Journal returns the step journal of a run.
	Journal(run string) agent.Journal
	// Result returns a run's final result, ok false when it has none.
	Result(run string) (st ota.DeviceResultStatus, ok bool, err error)
	// SaveResult keeps a run's final result; it may be lost in a crash.
	SaveResult(run string, st ota.DeviceResultStatus) error
}

// fileRunStore is the daemon's RunStore: files in <dir>/<run>/, each
// replaced atomically, the journal's fsynced.
type fileRunStore struct{ dir string }

func (s fileRunStore) Journal(run string) agent.Journal {
	return fileJournal{dir: filepath.Join(s.dir, run)}
}

func (s fileRunStore) Result(run string) (ota.DeviceResultStatus, bool, error) {
	var st ota.DeviceResultStatus
	b, err := os.ReadFile(filepath.Join(s.dir, run, "result.json"))
	if errors.Is(err, os.ErrNotExist) {
		return st, false, nil
	}
	if err != nil {
		return st, false, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		// Not synced (SaveResult): a crash of the machine can leave it
		// empty. The journal answers instead.
		return ota.DeviceResultStatus{}, false, nil
	}
	return st, true, nil
}

func (s fileRunStore) SaveResult(run string, st ota.DeviceResultStatus) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(s.dir, run), 0o700); err != nil {
		return err
	}
	return atomicfile.WriteUnsynced(filepath.Join(s.dir, run, "result.json"), b, 0o600)
}

// fileJournal records step results as files, each written atomically and
// fsynced before the step after it starts.
type fileJournal struct{ dir string }

var _ agent.Journal = fileJournal{}

func (j fileJournal) path(i int) string { return filepath.Join(j.dir, fmt.Sprintf("step-%d.json", i)) }

func (j fileJournal) Lookup(i int) (ota.StepResult, bool, error) {
	var r ota.StepResult
	b, err := os.ReadFile(j.path(i))
	if errors.Is(err, os.ErrNotExist) {
		return r, false, nil
	}
	if err != nil {
		return r, false, err
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, false, fmt.Errorf("journal %s: %w", j.path(i), err)
	}
	return r, true, nil
}

func (j fileJournal) Record(i int, r ota.StepResult) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(j.dir, 0o700); err != nil {
		return err
	}
	return atomicfile.Write(j.path(i), b, 0o600)
}
