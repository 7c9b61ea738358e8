package control

import (
	"context"
	"fmt"

	"golang.org/x/sync/errgroup"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/outpost-mesh/outpost/consensus"
)

// collect deletes an ended assignment from site Raft: its runs, then the
// SiteTask (a leader that stops half-way leaves a SiteTask whose remaining
// runs the next leader's pass collects). Only when every run has ended and
// the hub has acknowledged its result, and each delete only at the
// version the view holds: a run or assignment that moved on since (a retry)
// stays, and the pass that sees it dispatches it.
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
	eg, ectx := errgroup.WithContext(ctx)
	eg.SetLimit(writeConcurrency)
	for _, r := range runs {
		eg.Go(func() error { return s.deleteAt(ectx, &DeviceRunKind, r.obj) })
	}
	if err := eg.Wait(); err != nil {
		return err
	}
	if err := s.deleteAt(ctx, &SiteTaskKind, t.obj); err != nil {
		return err
	}
	s.mu.Lock()
	delete(s.done, uid)
	s.mu.Unlock()
	s.log.Info("finished task collected", "task", t.spec.Assignment.Task, "devices", len(runs))
	return nil
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
