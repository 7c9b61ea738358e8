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

// memberWarmer makes the site leader hold a QUIC connection to each live
// member of its site: one ping when the member appears (a few at a time),
// after which the transport keeps the connection alive (a site connection:
// transport.Endpoint.DialSite). A task's first
// dispatch to a hundred members then opens streams instead of waiting on a
// hundred handshakes at once, which on a machine of many sites is most of
// the first task's time.
type memberWarmer struct {
	mu      sync.Mutex
	reached map[string]string // member → the QUIC address it was reached at
	busy    map[string]bool
	sem     chan struct{}
}

// reset forgets every member (the node no longer leads).
func (w *memberWarmer) reset() {
	w.mu.Lock()
	w.reached = nil
	w.mu.Unlock()
}

// warm pings, in the background, each live member of this site that has
// not been reached at its current address.
func (n *Node) warmMembers(ctx context.Context, members []gossip.Member) {
	w := &n.warm
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.reached == nil {
		w.reached, w.busy, w.sem = map[string]string{}, map[string]bool{}, make(chan struct{}, warmConcurrency)
	}
	for _, m := range members {
		if m.Name == n.id.Name || m.Site != n.id.Site || m.QUICAddr == "" {
			continue
		}
		if m.State != gossip.Alive {
			delete(w.reached, m.Name) // dialled again when it is back
			continue
		}
		if w.reached[m.Name] == m.QUICAddr || w.busy[m.Name] {
			continue
		}
		w.busy[m.Name] = true
		go func() {
			ok := false
			select {
			case w.sem <- struct{}{}:
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				var resp struct{}
				ok = n.callOn(cctx, n.ep.DialSite, m.QUICAddr, methodOTAPing, struct{}{}, &resp) == nil
				cancel()
				<-w.sem
			case <-ctx.Done():
			}
			w.mu.Lock()
			delete(w.busy, m.Name)
			if ok && w.reached != nil {
				w.reached[m.Name] = m.QUICAddr
			}
			w.mu.Unlock()
		}()
	}
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
