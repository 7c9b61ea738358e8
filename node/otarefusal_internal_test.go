package node

import (
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/outpost-mesh/outpost/consensus"
	"github.com/outpost-mesh/outpost/consensus/consensustest"
)

func refusalFor(task string, at time.Time) GrantRefusal {
	return GrantRefusal{Node: "n1", Peer: "a/evil", Source: "10.0.0.9", Task: task, UID: task + "-uid", Attempt: 1,
		Message: "the task carries no grant signed by the hub", First: metav1.NewTime(at), Last: metav1.NewTime(at)}
}

func sumCounts(rs []GrantRefusal) int {
	n := 0
	for _, r := range rs {
		n += r.Count
	}
	return n
}

// TestRefusalBookIsBounded: an agent flooded with distinct forged
// requests itemizes at most maxHeldRefusals of them and counts the rest in
// one overflow entry; repeats are counted, not itemized; handing some on
// keeps what came in meanwhile.
func TestRefusalBookIsBounded(t *testing.T) {
	t.Parallel()
	b := newRefusalBook(maxHeldRefusals)
	now := time.Now()
	for i := range 1000 {
		b.add(refusalFor(fmt.Sprintf("t%d", i), now.Add(time.Duration(i)*time.Millisecond)))
	}
	for range 50 {
		b.add(refusalFor("t0", now))
	}
	got := b.take()
	if len(got) != maxHeldRefusals+1 {
		t.Fatalf("%d entries held, want %d and the overflow", len(got), maxHeldRefusals)
	}
	if n := sumCounts(got); n != 1050 {
		t.Fatalf("the entries count %d refusals, want 1050", n)
	}
	var overflow *GrantRefusal
	for i := range got {
		if got[i].Name == overflowRefusal {
			overflow = &got[i]
		}
	}
	if overflow == nil || overflow.Count != 1000-maxHeldRefusals || overflow.Task != "t999" {
		t.Fatalf("overflow entry %+v, want %d refusals, the latest t999", overflow, 1000-maxHeldRefusals)
	}
	b.add(refusalFor("t0", now)) // after take, before done
	b.done(got)
	left := b.take()
	if len(left) != 1 || left[0].Task != "t0" || left[0].Count != 1 {
		t.Fatalf("after handing on: %+v, want the one t0 that came in meanwhile", left)
	}
}

// TestSiteRefusalsAreBoundedAndAcked: a site leader keeps at most
// maxSiteRefusals refusal objects and an overflow, losing no count; the
// link carries them in batches; the hub's audit takes each once; an
// object whose count grew since it was sent keeps the difference.
func TestSiteRefusalsAreBoundedAndAcked(t *testing.T) {
	t.Parallel()
	store := consensustest.NewStore(t, func(r *consensus.Registry) error {
		r.MustRegister(GrantRefusalKind, AuditEventKind)
		return nil
	})
	ctx := t.Context()
	site := refusalStore{mu: &sync.Mutex{}, store: store}
	audit := newAuditLog(store, func() bool { return true }, 0, 0, slog.New(slog.DiscardHandler))
	now := time.Now()
	const distinct = maxSiteRefusals + 100
	for i := 0; i < distinct; i += maxHeldRefusals {
		var batch []GrantRefusal
		for j := i; j < min(i+maxHeldRefusals, distinct); j++ {
			r := refusalFor(fmt.Sprintf("t%d", j), now.Add(time.Duration(j)*time.Millisecond))
			r.Count = 2
			batch = append(batch, r)
		}
		if err := site.add(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	list, err := store.List(ctx, &GrantRefusalKind, "", nil, consensus.ReadOptions{Stale: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != maxSiteRefusals+1 {
		t.Fatalf("the site holds %d refusal objects, want %d and the overflow", len(list.Items), maxSiteRefusals)
	}

	// The link carries them; the hub audits each batch; a count that
	// comes in between a report and its answer stays.
	audited, events := 0, 0
	for round := 0; ; round++ {
		if round > 2*distinct/refusalReportBatch {
			t.Fatal("the site's refusals do not drain")
		}
		pending, err := site.pending(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(pending) == 0 {
			break
		}
		if len(pending) > refusalReportBatch {
			t.Fatalf("a report carries %d refusals, want at most %d", len(pending), refusalReportBatch)
		}
		if round == 0 {
			if err := site.add(ctx, []GrantRefusal{pending[0]}); err != nil { // the same again, counted in
				t.Fatal(err)
			}
		}
		acks := audit.auditRefusals(ctx, "a", pending)
		if len(acks) != len(pending) {
			t.Fatalf("the hub audited %d of %d refusals", len(acks), len(pending))
		}
		events += len(acks)
		audited += sumCounts(pending)
		if err := site.ack(ctx, acks); err != nil {
			t.Fatal(err)
		}
	}
	if want := 2*distinct + 2; audited != want {
		t.Fatalf("%d refusals audited, want %d", audited, want)
	}
	list, err = store.List(ctx, &AuditEventKind, "", nil, consensus.ReadOptions{Stale: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != events {
		t.Fatalf("%d audit events, want the %d the hub acknowledged", len(list.Items), events)
	}
}
