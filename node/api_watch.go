package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/outpost-mesh/outpost/consensus"
)

// maxWatchTimeout bounds one watch request; clients reconnect from the last
// resourceVersion they saw, as Kubernetes clients do.
const maxWatchTimeout = 30 * time.Minute

// watchEvent is the wire form of one event, as Kubernetes streams it.
type watchEvent struct {
	Type   watch.EventType      `json:"type"`
	Object runtime.RawExtension `json:"object"`
}

// watch streams events as newline-delimited JSON. Without a
// resourceVersion (or with "0") it first sends the current objects as
// ADDED, then every change after them. It is served from the local replica,
// so any member answers and a client can resume on another.
func (a *apiServer) watch(w http.ResponseWriter, r *http.Request, req request) {
	sel, fsel, err := selectors(r)
	if err != nil {
		writeError(w, err, a.log)
		return
	}
	timeout := maxWatchTimeout - time.Duration(rand.Int64N(int64(maxWatchTimeout/4)))
	if s := r.URL.Query().Get("timeoutSeconds"); s != "" {
		secs, err := strconv.Atoi(s)
		if err != nil || secs < 0 {
			writeError(w, apierrors.NewBadRequest(fmt.Sprintf("timeoutSeconds %q must be a non-negative integer", s)), a.log)
			return
		}
		if d := time.Duration(secs) * time.Second; secs > 0 && d < timeout {
			timeout = d
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()

	var initial []*consensus.Object
	var from uint64
	rvParam := r.URL.Query().Get("resourceVersion")
	if rvParam == "" || rvParam == "0" {
		list, err := a.store.List(ctx, req.kind, req.namespace, sel, consensus.ReadOptions{Stale: true})
		if err != nil {
			writeError(w, err, a.log)
			return
		}
		initial, from = list.Items, list.ResourceVersion
	} else if from, err = strconv.ParseUint(rvParam, 10, 64); err != nil {
		writeError(w, apierrors.NewBadRequest(fmt.Sprintf("resourceVersion %q must be a number", rvParam)), a.log)
		return
	}
	watcher, err := a.store.Watch(ctx, req.kind, req.namespace, sel, from)
	if err != nil {
		writeError(w, err, a.log)
		return
	}
	defer watcher.Stop()

	flusher, _ := w.(http.Flusher)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	tables, columns := wantsTable(r), true
	send := func(t watch.EventType, v any) error {
		if o, ok := v.(*consensus.Object); ok {
			v = a.redact(r, req.kind, o)
		}
		if o, ok := v.(*consensus.Object); ok && tables {
			tbl := a.table.convert(req.kind, []*consensus.Object{o}, o.Revision(), r)
			if !columns {
				tbl.ColumnDefinitions = nil
			}
			columns = false
			v = tbl
		}
		raw, err := json.Marshal(v)
		if err != nil {
			return err
		}
		if err := enc.Encode(watchEvent{Type: t, Object: runtime.RawExtension{Raw: raw}}); err != nil {
			return err
		}
		if flusher != nil {
			flusher.Flush()
		}
		return nil
	}
	for _, o := range initial {
		if !matchesFields(fsel, o) {
			continue
		}
		if send(watch.Added, o) != nil {
			return
		}
	}
	if flusher != nil {
		flusher.Flush()
	}
	for {
		ev, err := watcher.Next(ctx)
		if err != nil {
			var status apierrors.APIStatus
			if errors.As(err, &status) {
				s := status.Status()
				s.APIVersion, s.Kind = "v1", "Status"
				_ = send(watch.Error, s)
			} else if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
				a.log.Debug("watch ended", "err", err)
			}
			return
		}
		if !matchesFields(fsel, ev.Object) {
			continue
		}
		if send(ev.Type, ev.Object) != nil {
			return
		}
	}
}
