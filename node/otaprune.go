package node

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// DefaultOTARetention is how long a node keeps a run that ended: its
// journal, its result and the output `outpost task logs` reads.
const DefaultOTARetention = 7 * 24 * time.Hour

// pruneEvery is how often the agent looks for runs past retention.
const pruneEvery = time.Hour

// runPruner is a RunStore that can delete old runs. The daemon's file
// store is one; the benchmark's shared store is not, and keeps every run.
type runPruner interface {
	// prune deletes the runs last written before cutoff and returns how
	// many it deleted. It deletes a run only while hold holds it (ok false:
	// the run is in progress, leave it), and calls release after.
	prune(cutoff time.Time, hold func(run string) (release func(), ok bool)) (int, error)
}

// runPruning deletes runs past retention at start and then every
// pruneEvery, until ctx ends: without it each task left a directory on
// every node it ran on, for good.
func (a *agentService) runPruning(ctx context.Context) error {
	p, ok := a.store.(runPruner)
	if !ok || a.retention <= 0 {
		return nil
	}
	t := time.NewTicker(pruneEvery)
	defer t.Stop()
	for {
		if n, err := a.prune(p, time.Now()); err != nil {
			a.log.Warn("could not delete old task runs; they stay until the next try", "err", err)
		} else if n > 0 {
			a.log.Info("deleted task runs past retention", "runs", n, "retention", a.retention)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// prune deletes the runs p holds that were last written more than
// retention before now. The grant guard is synced first: a run's journal
// is what tells a replay of its grant from a re-dispatch (hasTrace), and
// once the journal is gone only the guard, whose appends are not fsynced,
// remembers that the grant was used.
func (a *agentService) prune(p runPruner, now time.Time) (int, error) {
	if err := a.grants.Sync(); err != nil {
		return 0, err
	}
	return p.prune(now.Add(-a.retention), func(run string) (func(), bool) {
		// Holding admitMu, no run is admitted (started, or answered from
		// its journal) while its directory goes.
		a.admitMu.Lock()
		a.mu.Lock()
		_, running := a.running[run]
		a.mu.Unlock()
		if running {
			a.admitMu.Unlock()
			return nil, false
		}
		return a.admitMu.Unlock, true
	})
}

// prune implements runPruner: a run is its directory, and its age that
// of the newest file in it (a result, a journal record, output).
func (s fileRunStore) prune(cutoff time.Time, hold func(run string) (func(), bool)) (int, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, e := range entries {
		if !e.IsDir() {
			continue // grants.log
		}
		dir := filepath.Join(s.dir, e.Name())
		newest, err := newestWrite(dir)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !newest.Before(cutoff) {
			continue
		}
		release, ok := hold(e.Name())
		if !ok {
			continue // in progress
		}
		err = os.RemoveAll(dir)
		release()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

// newestWrite is the latest modification time of dir and what it holds.
func newestWrite(dir string) (time.Time, error) {
	var newest time.Time
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if info.ModTime().After(newest) {
			newest = info.ModTime()
		}
		return nil
	})
	return newest, err
}
