package node

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/outpost-mesh/outpost/ota/control"
	"github.com/outpost-mesh/outpost/transport"
)

// A run request an agent refuses for its grant (forged, changed, expired
// or replayed) is audited at the hub, however it reached the node: from
// its site leader's dispatcher, or sent straight to the agent by anyone
// holding a certificate of the site. The refusal travels as the site's
// results do: the agent counts it (refusalBook), hands it to its site
// leader, which keeps it in site Raft (otarefusal_site.go) until the hub
// has written it to the audit log and said so on the link. Every stage is
// bounded, so a flood of forged requests costs a few counters, never
// memory or Raft entries in proportion.
const (
	// maxHeldRefusals bounds the refusals an agent itemizes while it
	// has not handed them on; more are counted in one overflow entry.
	maxHeldRefusals = 64
	// maxSiteRefusals bounds the refusals a site keeps for the hub; more
	// are counted in one overflow object.
	maxSiteRefusals = 256
	// refusalReportBatch bounds the refusals one link report carries.
	refusalReportBatch = 64
	// refusalPace is the least time between two hand-overs of an agent's
	// refusals: a flood costs its site leader ten writes a second.
	refusalPace = 100 * time.Millisecond
	// refusalBackoffMax caps the wait after a failed hand-over.
	refusalBackoffMax = 30 * time.Second
	// overflowRefusal names the entry that counts refusals beyond the
	// itemized ones.
	overflowRefusal = "overflow"
	// maxRefusalMessage bounds a refusal's message.
	maxRefusalMessage = 512
)

// GrantRefusal is one kind of run request a node refused for its grant,
// counted: the same caller asking for the same run again adds to Count.
type GrantRefusal struct {
	// Name is the site's key for it (set once the site holds it).
	Name string `json:"name,omitempty"`
	// Node refused the request; Peer asked for it ("<site>/<node>" of
	// its certificate), from Source (its address; empty when the node's
	// own dispatcher asked).
	Node   string `json:"node"`
	Peer   string `json:"peer"`
	Source string `json:"source,omitempty"`
	// Task, UID and Attempt are what the request named.
	Task    string `json:"task,omitempty"`
	UID     string `json:"uid,omitempty"`
	Attempt int    `json:"attempt,omitempty"`
	// Message is why the first of them was refused.
	Message string      `json:"message"`
	Count   int         `json:"count"`
	First   metav1.Time `json:"first"`
	Last    metav1.Time `json:"last"`
}

// key is what identifies a refusal for counting: who refused what, asked
// by whom; the overflow entry has its own.
func (r *GrantRefusal) key() string {
	if r.Name == overflowRefusal {
		return overflowRefusal
	}
	sum := sha256.Sum256([]byte(fmt.Sprintf("%s\x00%s\x00%s\x00%s\x00%s\x00%d", r.Node, r.Peer, r.Source, r.Task, r.UID, r.Attempt)))
	return hex.EncodeToString(sum[:16])
}

// merge adds o's count and time span to r.
func (r *GrantRefusal) merge(o GrantRefusal) {
	r.Count += o.Count
	if o.First.Before(&r.First) {
		r.First = o.First
	}
	if r.Last.Before(&o.Last) {
		r.Last = o.Last
		if r.Name == overflowRefusal {
			// The overflow entry says what the latest was.
			r.Node, r.Peer, r.Source, r.Task, r.UID, r.Attempt = o.Node, o.Peer, o.Source, o.Task, o.UID, o.Attempt
			r.Message = o.Message
		}
	}
}

// asOverflow is r counted in an overflow entry.
func (r GrantRefusal) asOverflow() GrantRefusal {
	r.Name = overflowRefusal
	return r
}

// refusalCaller is who asked an agent for a run.
type refusalCaller struct {
	peer, source string
}

// peerHost is a peer's IP, "" when unknown.
func peerHost(p transport.Peer) string {
	if p.Addr == nil {
		return ""
	}
	return hostOf(p.Addr.String())
}

// refusalBook is an agent's count of the refusals it has not yet handed
// to its site leader: at most maxHeldRefusals entries and an overflow.
type refusalBook struct {
	mu      sync.Mutex
	max     int
	entries map[string]*GrantRefusal
	wake    chan struct{}
}

func newRefusalBook(max int) *refusalBook {
	return &refusalBook{max: max, entries: map[string]*GrantRefusal{}, wake: make(chan struct{}, 1)}
}

// add counts r (Count 1 when unset); fresh says whether it started a new
// entry (the caller logs only those).
func (b *refusalBook) add(r GrantRefusal) (fresh bool) {
	if r.Count == 0 {
		r.Count = 1
	}
	if len(r.Message) > maxRefusalMessage {
		r.Message = r.Message[:maxRefusalMessage]
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	k := r.key()
	e, ok := b.entries[k]
	if !ok && len(b.entries) >= b.max {
		r = r.asOverflow()
		k = overflowRefusal
		e, ok = b.entries[k]
	}
	if ok {
		e.merge(r)
	} else {
		b.entries[k] = &r
	}
	select {
	case b.wake <- struct{}{}:
	default: // a wake-up is pending already
	}
	return !ok
}

// take returns a copy of the entries, oldest first.
func (b *refusalBook) take() []GrantRefusal {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]GrantRefusal, 0, len(b.entries))
	for _, e := range b.entries {
		out = append(out, *e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].First.Before(&out[j].First) })
	return out
}

// done forgets what sent handed on: counts that came in since stay.
func (b *refusalBook) done(sent []GrantRefusal) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, s := range sent {
		k := s.key()
		e, ok := b.entries[k]
		if !ok {
			continue
		}
		if e.Count -= s.Count; e.Count <= 0 {
			delete(b.entries, k)
		}
	}
}

// refuse records a refused run request: logged when it is a new entry,
// counted for the hub's audit log.
func (a *agentService) refuse(req control.RunRequest, from refusalCaller, err error) {
	now := metav1.Now()
	fresh := a.refusals.add(GrantRefusal{
		Node: a.id.Name, Peer: from.peer, Source: from.source,
		Task: req.Task, UID: req.UID, Attempt: req.Attempt, Message: err.Error(), First: now, Last: now,
	})
	if fresh {
		a.log.Warn("task refused", "task", req.Task, "attempt", req.Attempt, "peer", from.peer, "err", err)
	}
}

// reportRefusals hands the refusals to the site, through report, until
// ctx ends: at once when there are some, at most every refusalPace, and
// again after a failure with a growing wait.
func (a *agentService) reportRefusals(ctx context.Context, report func(context.Context, []GrantRefusal) error) error {
	backoff := time.Second
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-a.refusals.wake:
		}
		batch := a.refusals.take()
		if len(batch) == 0 {
			continue
		}
		wait := refusalPace
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := report(cctx, batch)
		cancel()
		if err != nil {
			a.log.Debug("refused tasks not handed to the site leader yet", "count", len(batch), "err", err)
			wait, backoff = backoff, min(2*backoff, refusalBackoffMax)
			// Try again after the wait even if nothing new comes in.
			select {
			case a.refusals.wake <- struct{}{}:
			default:
			}
		} else {
			a.refusals.done(batch)
			backoff = time.Second
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}
