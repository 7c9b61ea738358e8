package node

import (
	"context"
	"sync"
	"time"

	"github.com/outpost-mesh/outpost/gossip"
	"github.com/outpost-mesh/outpost/transport"
)

// methodOTAPing is answered at once by every node's agent: the site leader
// calls it to open its QUIC connection to a member before a task needs
// one.
const methodOTAPing = "ota.ping"

// warmConcurrency bounds the handshakes one site leader has in flight.
const warmConcurrency = 4

// warmPings is how many times the leader pings a member it reached, at
// least warmSpacing apart (at roster passes): the first opens the
// connection; the others are exchanges in which each end sends a path MTU
// probe (quic-go sends one per exchange, and its search from 1,280 to
// 1,452 bytes takes four). A site connection then idles with a ping every
// 2 minutes (transport.Endpoint.DialSite), which would take eight minutes
// to find the MTU: a task in those minutes paid two to four probes and
// their acknowledgements per device.
const (
	warmPings   = 6
	warmSpacing = 5 * time.Second
)

// memberWarmer makes the site leader hold a QUIC connection to each live
// member of its site: pings when the member appears (a few at a time),
// after which the transport keeps the connection alive (a site connection:
// transport.Endpoint.DialSite). A task's first dispatch to a hundred
// members then opens streams instead of waiting on a hundred handshakes at
// once, which on a machine of many sites is most of the first task's
// time.
type memberWarmer struct {
	mu      sync.Mutex
	reached map[string]warmth // member → how it was reached
	busy    map[string]bool
	sem     chan struct{}
}

// warmth is how far a member's connection was warmed: its QUIC address,
// the pings it answered there and when the last was.
type warmth struct {
	addr  string
	pings int
	at    time.Time
}

// reset forgets every member (the node no longer leads).
func (w *memberWarmer) reset() {
	w.mu.Lock()
	w.reached = nil
	w.mu.Unlock()
}

// warm pings, in the background, each live member of this site that has
// not answered warmPings pings at its current address, the last at least
// warmSpacing ago.
func (n *Node) warmMembers(ctx context.Context, members []gossip.Member) {
	w := &n.warm
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.reached == nil {
		w.reached, w.busy, w.sem = map[string]warmth{}, map[string]bool{}, make(chan struct{}, warmConcurrency)
	}
	now := time.Now()
	for _, m := range members {
		if m.Name == n.id.Name || m.Site != n.id.Site || m.QUICAddr == "" {
			continue
		}
		if m.State != gossip.Alive {
			delete(w.reached, m.Name) // dialled again when it is back
			continue
		}
		wm, due := w.due(m, now)
		if !due {
			continue
		}
		w.busy[m.Name] = true
		go func() {
			ok := false
			select {
			case w.sem <- struct{}{}:
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				var resp struct{}
				ok = callOn(cctx, n.ep.DialSite, wm.addr, methodOTAPing, struct{}{}, &resp) == nil
				cancel()
				<-w.sem
			case <-ctx.Done():
			}
			w.mu.Lock()
			delete(w.busy, m.Name)
			if ok && w.reached != nil {
				wm.pings, wm.at = wm.pings+1, time.Now()
				w.reached[m.Name] = wm
			}
			w.mu.Unlock()
		}()
	}
}

// due returns how far member m was warmed at its current address and
// whether a ping to it is due at now. w.mu is held.
func (w *memberWarmer) due(m gossip.Member, now time.Time) (warmth, bool) {
	wm := w.reached[m.Name]
	if wm.addr != m.QUICAddr {
		wm = warmth{addr: m.QUICAddr} // a new address: from the start
	}
	return wm, wm.pings < warmPings && now.Sub(wm.at) >= warmSpacing && !w.busy[m.Name]
}

// servePing answers a site leader's ping.
func (a *agentService) servePing(s *transport.Stream) {
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(10 * time.Second))
	var req struct{}
	if err := readMessage(s, &req, 1<<10); err != nil {
		return
	}
	_ = writeMessage(s, struct{}{})
}
