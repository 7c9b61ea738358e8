package consensus

import (
	"context"
	"errors"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
)

// watchBuffer is how many events a watcher may fall behind the FSM before it
// is dropped; a dropped watcher resumes from its last resourceVersion.
const watchBuffer = 4096

// historyPage is how many events a watcher reads from history at a time.
const historyPage = 256

// ErrWatchDropped ends a watch whose consumer fell too far behind, or whose
// replica restored a snapshot. Watch again from the last resourceVersion seen.
var ErrWatchDropped = errors.New("watch dropped; watch again from the last resourceVersion seen")

// hub fans applied events out to live watchers without ever blocking the FSM.
type hub struct {
	mu   sync.Mutex
	subs map[*sub]struct{}
}

type sub struct {
	ch   chan Event
	done chan struct{} // closed when the hub drops the subscriber
	err  error         // why, set before done is closed
}

func newHub() *hub { return &hub{subs: map[*sub]struct{}{}} }

func (h *hub) subscribe() *sub {
	s := &sub{ch: make(chan Event, watchBuffer), done: make(chan struct{})}
	h.mu.Lock()
	h.subs[s] = struct{}{}
	h.mu.Unlock()
	return s
}

func (h *hub) unsubscribe(s *sub) {
	h.mu.Lock()
	delete(h.subs, s)
	h.mu.Unlock()
}

// publish hands events to every subscriber. A subscriber whose buffer is full
// is dropped instead of blocking: the FSM must never wait on a reader.
func (h *hub) publish(evs []Event) {
	if len(evs) == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		for _, ev := range evs {
			select {
			case s.ch <- ev:
			default:
				h.drop(s, ErrWatchDropped)
			}
			if _, ok := h.subs[s]; !ok {
				break
			}
		}
	}
}

// closeAll drops every subscriber with err.
func (h *hub) closeAll(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		h.drop(s, err)
	}
}

func (h *hub) drop(s *sub, err error) {
	delete(h.subs, s)
	s.err = err
	close(s.done)
}

// Watcher delivers the events of one kind (optionally one namespace and a
// label selector) after a resourceVersion, in order, each once: first from the
// kept history, then live. It is pull-based and starts no goroutine.
type Watcher struct {
	st       *state
	hub      *hub
	sub      *sub
	kind     *Kind
	prefix   string
	selector labels.Selector
	last     uint64
	buf      []Event
	live     bool
}

// Next returns the next event. It returns a 410 Gone error when the start
// resourceVersion is older than the kept history, ErrWatchDropped when the
// watcher fell behind, and ctx.Err() when ctx ends.
func (w *Watcher) Next(ctx context.Context) (Event, error) {
	for {
		if len(w.buf) > 0 {
			ev := w.buf[0]
			w.buf = w.buf[1:]
			return ev, nil
		}
		if !w.live {
			evs, last, done, err := w.st.eventsAfter(w.last, w.prefix, historyPage)
			var ce *compactedError
			if errors.As(err, &ce) {
				return Event{}, apierrors.NewResourceExpired(ce.Error())
			}
			if err != nil {
				select {
				case <-w.sub.done:
					// The member stopped and closed its store under
					// the read: report that, which says to resume.
					return Event{}, w.sub.err
				default:
				}
				return Event{}, err
			}
			w.last = last
			w.buf = w.filter(evs)
			w.live = done
			continue
		}
		select {
		case ev := <-w.sub.ch:
			if ev.Index() <= w.last || !hasPrefix(ev.Key, w.prefix) {
				continue
			}
			w.last = ev.Index()
			w.buf = w.filter([]Event{ev})
		case <-w.sub.done:
			// Drain what arrived before the drop, then report it.
			select {
			case ev := <-w.sub.ch:
				if ev.Index() > w.last && hasPrefix(ev.Key, w.prefix) {
					w.last = ev.Index()
					w.buf = w.filter([]Event{ev})
				}
				continue
			default:
			}
			return Event{}, w.sub.err
		case <-ctx.Done():
			return Event{}, ctx.Err()
		}
	}
}

func (w *Watcher) filter(evs []Event) []Event {
	if w.selector == nil || w.selector.Empty() {
		return evs
	}
	out := evs[:0:0]
	for _, ev := range evs {
		if w.selector.Matches(labels.Set(ev.Object.Labels)) {
			out = append(out, ev)
		}
	}
	return out
}

// Stop releases the watcher.
func (w *Watcher) Stop() { w.hub.unsubscribe(w.sub) }
