package control

import (
	"context"
	"fmt"

	"golang.org/x/sync/errgroup"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/outpost-mesh/outpost/consensus"
)

// collect deletes an ended assignment from site Raft: the SiteTask, then
// its runs. Only when every run has ended and the hub has acknowledged its
// result, and each delete only at the version the view holds: a run or
// assignment that moved on since (a retry) stays, and the pass that sees
// it dispatches it. The SiteTask goes first because it records the
// devices that started with it (SiteTaskSpec.Started): without their
// runs it would show them Running again. A leader that stops half-way
// leaves runs without a SiteTask, which a later pass deletes
// (collectOrphans).
//
// Without this a site kept every task it ever ran, a hundred objects per
// task at a site of a hundred nodes, in Raft, in the leader's view and in
// every report's Have. The hub sends a dropped assignment again only for
// devices it does not hold as ended (Hub.Assignments).
func (s *Site) collect(ctx context.Context, t *viewTask) error {
	uid := t.spec.Assignment.UID
	runs, ok, err := s.view.settled(uid)
	if err != nil || !ok {
		return err
	}
	if err := s.deleteAt(ctx, &SiteTaskKind, t.obj); err != nil {
		return err
	}
	if err := s.deleteRuns(ctx, runs); err != nil {
		return err
	}
	s.mu.Lock()
	delete(s.done, uid)
	s.mu.Unlock()
	s.log.Info("finished task collected", "task", t.spec.Assignment.Task, "devices", len(runs))
	return nil
}

// collectOrphans deletes the runs of tasks whose SiteTask is gone, once
// each of them has ended and been reported: those a collect that stopped
// half-way left. (An assignment being accepted creates its queued runs
// before its SiteTask; they have not ended.)
func (s *Site) collectOrphans(ctx context.Context) error {
	for _, uid := range s.view.orphans() {
		runs, ok, err := s.view.settled(uid)
		if err != nil || !ok {
			return err
		}
		if err := s.deleteRuns(ctx, runs); err != nil {
			return err
		}
	}
	return nil
}

// deleteRuns deletes runs, many at once.
func (s *Site) deleteRuns(ctx context.Context, runs []viewRun) error {
	eg, ectx := errgroup.WithContext(ctx)
	eg.SetLimit(writeConcurrency)
	for _, r := range runs {
		if r.obj != nil {
			eg.Go(func() error { return s.deleteAt(ectx, &DeviceRunKind, r.obj) })
		}
	}
	return eg.Wait()
}

// deleteAt deletes obj at the version held and forgets it in the view; one
// already gone is no error.
func (s *Site) deleteAt(ctx context.Context, k *consensus.Kind, obj *consensus.Object) error {
	_, err := s.cfg.Store.Delete(ctx, k, "", obj.Name, obj.Revision(), string(obj.UID))
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete %s %s: %w", k.Kind, obj.Name, err)
	}
	s.view.remove(k, obj)
	return nil
}
