package control

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/outpost-mesh/outpost/consensus"
	"github.com/outpost-mesh/outpost/ota"
)

// tally keeps the counts of the running tasks' DeviceResults as the store
// holds them: a task's results are listed once, when it is first counted,
// and a watch of DeviceResults moves the counts from there. The hub's
// passes read counts that are exact as of the last change the watch
// delivered, so a task ends as soon as its last result is written, and no
// pass lists ten thousand results to find out. Every change is checked
// against the revision the tally holds for that result, so the list and
// the watch may overlap in any order.
type tally struct {
	mu      sync.Mutex
	tasks   map[string]*taskTally // by task name
	running bool                  // a watch follows the store
	stop    context.CancelFunc
	gen     int // counts the starts: a watch that ended clears only its own
	// changed is called, without the lock, when a task's counts moved.
	changed func()
}

// taskTally is what the tally holds of one task.
type taskTally struct {
	uid     types.UID
	results map[string]resultMark // DeviceResult name → what was counted
	counts  ota.Counts
	sites   map[string]ota.Counts
	// loading is true while the task's results are being listed; the
	// watch's changes of it wait in held meanwhile.
	loading bool
	held    []consensus.Event
}

// resultMark is how one result is counted, and at which revision.
type resultMark struct {
	site  string
	phase ota.DevicePhase
	rev   uint64
}

// start follows the store's DeviceResults from revision from, once: a
// tally whose watch ended (a dropped watch, a lost leadership) forgets its
// tasks and starts again on the next call.
func (t *tally) start(ctx context.Context, store *consensus.Store, from uint64, onEnd func(error)) {
	t.mu.Lock()
	if t.running {
		t.mu.Unlock()
		return
	}
	ctx, cancel := context.WithCancel(ctx)
	t.gen++
	gen := t.gen
	t.running, t.stop, t.tasks = true, cancel, map[string]*taskTally{}
	t.mu.Unlock()
	go func() {
		err := t.follow(ctx, store, from, gen)
		t.mu.Lock()
		if t.gen == gen {
			t.running, t.tasks, t.stop = false, nil, nil
		}
		t.mu.Unlock()
		cancel()
		if ctx.Err() == nil {
			onEnd(err)
		}
	}()
}

// reset stops the watch and forgets every task (the member stopped
// leading).
func (t *tally) reset() {
	t.mu.Lock()
	stop := t.stop
	t.running, t.tasks, t.stop = false, nil, nil
	t.mu.Unlock()
	if stop != nil {
		stop()
	}
}

func (t *tally) follow(ctx context.Context, store *consensus.Store, from uint64, gen int) error {
	w, err := store.Watch(ctx, &ota.DeviceResultKind, "", nil, from)
	if err != nil {
		return err
	}
	defer w.Stop()
	for {
		ev, err := w.Next(ctx)
		if err != nil {
			return err
		}
		task := ev.Object.Labels[ota.LabelTask]
		t.mu.Lock()
		if t.gen != gen {
			t.mu.Unlock()
			return nil // reset and started again
		}
		tt := t.tasks[task]
		moved := false
		switch {
		case tt == nil:
		case tt.loading:
			tt.held = append(tt.held, ev)
		default:
			moved = tt.apply(ev)
		}
		t.mu.Unlock()
		if moved && t.changed != nil {
			t.changed()
		}
	}
}

// errTallyStopped is returned by load when the tally's watch is not
// running: the caller counts on the next pass.
var errTallyStopped = errors.New("the result tally is not following the store")

// counts returns a task's counts, listing its results the first time.
func (t *tally) counts(ctx context.Context, store *consensus.Store, task string, uid types.UID) (ota.Counts, map[string]ota.Counts, error) {
	t.mu.Lock()
	if !t.running {
		t.mu.Unlock()
		return ota.Counts{}, nil, errTallyStopped
	}
	tt, ok := t.tasks[task]
	if ok && tt.uid == uid && !tt.loading {
		c, s := tt.counts, maps.Clone(tt.sites)
		t.mu.Unlock()
		return c, s, nil
	}
	// Held before the list is read: a change the list misses reaches
	// held.
	tt = &taskTally{uid: uid, results: map[string]resultMark{}, sites: map[string]ota.Counts{}, loading: true}
	t.tasks[task] = tt
	t.mu.Unlock()
	// Read in place: apply keeps no object, only its name, site, phase
	// and revision.
	loaded := &taskTally{uid: uid, results: map[string]resultMark{}, sites: map[string]ota.Counts{}}
	err := store.Scan(ctx, &ota.DeviceResultKind, "", taskSelector(task), consensus.ReadOptions{Stale: true}, func(o *consensus.Object) error {
		loaded.apply(consensus.Event{Type: watch.Added, Object: o})
		return nil
	})
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.tasks[task] != tt {
		return ota.Counts{}, nil, errTallyStopped // reset meanwhile
	}
	if err != nil {
		delete(t.tasks, task)
		return ota.Counts{}, nil, err
	}
	tt.results, tt.counts, tt.sites = loaded.results, loaded.counts, loaded.sites
	for _, ev := range tt.held {
		tt.apply(ev)
	}
	tt.held, tt.loading = nil, false
	return tt.counts, maps.Clone(tt.sites), nil
}

// unfinished returns the devices of site whose results the tally holds
// Queued or Running, sorted; all (the site's devices) when that is every
// one of them. counted is false when the tally does not hold task uid
// (this leader has not counted it yet).
func (t *tally) unfinished(task string, uid types.UID, site string, all []string) (nodes []string, counted bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	tt, ok := t.tasks[task]
	if !ok || tt.uid != uid || tt.loading {
		return nil, false
	}
	switch c := tt.sites[site]; c.Queued + c.Running {
	case 0:
		return nil, true
	case len(all):
		return all, true // a new task: no need to look at each result
	}
	for name, m := range tt.results {
		if m.site == site && !m.phase.Finished() {
			nodes = append(nodes, strings.TrimPrefix(name, task+"."))
		}
	}
	slices.Sort(nodes)
	return nodes, true
}

// keep drops every task not named in tasks (ended or deleted ones).
func (t *tally) keep(tasks map[string]bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for name := range t.tasks {
		if !tasks[name] {
			delete(t.tasks, name)
		}
	}
}

// apply counts one change of a result of the task, unless the tally holds
// that result at the change's revision or a later one; it reports whether
// the counts moved.
func (tt *taskTally) apply(ev consensus.Event) bool {
	o := ev.Object
	if !ownedBy(o, tt.uid) {
		return false // a result of an earlier task of the same name
	}
	rev := o.Revision()
	old, had := tt.results[o.Name]
	if had && rev <= old.rev {
		return false
	}
	if had {
		tt.add(old.site, old.phase, -1)
	}
	if ev.Type == watch.Deleted {
		delete(tt.results, o.Name)
		return had
	}
	site, phase, ok := resultPhase(o)
	if !ok {
		delete(tt.results, o.Name)
		return had
	}
	tt.results[o.Name] = resultMark{site: site, phase: phase, rev: rev}
	tt.add(site, phase, 1)
	return !had || old.phase != phase || old.site != site
}

func (tt *taskTally) add(site string, phase ota.DevicePhase, n int) {
	tt.counts.Add(phase, n)
	c := tt.sites[site]
	c.Add(phase, n)
	if c == (ota.Counts{}) {
		delete(tt.sites, site)
		return
	}
	tt.sites[site] = c
}
