package gossip

import (
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/hashicorp/memberlist"
)

// delegate is every memberlist callback of a Gossip. memberlist calls most
// of them with its node lock held, from its own goroutines, so they only
// decode, take the Gossip's mutex and never call back into memberlist.
type delegate struct {
	g *Gossip
}

var (
	_ memberlist.Delegate         = (*delegate)(nil)
	_ memberlist.EventDelegate    = (*delegate)(nil)
	_ memberlist.PingDelegate     = (*delegate)(nil)
	_ memberlist.AliveDelegate    = (*delegate)(nil)
	_ memberlist.ConflictDelegate = (*delegate)(nil)
)

// NodeMeta returns the local Meta, encoded. Its size was checked when it
// was set, so it is within limit (memberlist.MetaMaxSize).
func (d *delegate) NodeMeta(limit int) []byte {
	return d.g.localMetaBytes()
}

// NotifyMsg ignores user messages: the pool carries none.
func (d *delegate) NotifyMsg([]byte) {}

// GetBroadcasts has no user broadcasts to add.
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }

// LocalState has no user state to exchange on push/pull.
func (d *delegate) LocalState(join bool) []byte { return nil }

// MergeRemoteState ignores the (absent) user state of a push/pull.
func (d *delegate) MergeRemoteState(buf []byte, join bool) {}

// NotifyJoin records a member that memberlist now holds alive: new, or back
// from dead or left.
func (d *delegate) NotifyJoin(n *memberlist.Node) { d.g.onAlive(n) }

// NotifyUpdate records a member whose metadata changed.
func (d *delegate) NotifyUpdate(n *memberlist.Node) { d.g.onAlive(n) }

// NotifyLeave records a member that memberlist declared dead or left.
func (d *delegate) NotifyLeave(n *memberlist.Node) { d.g.onGone(n.Name) }

// AckPayload adds nothing to the acks this node sends.
func (d *delegate) AckPayload() []byte { return nil }

// NotifyPingComplete records that a member answered one of this node's
// probes directly, which clears this node's suspicion of it.
func (d *delegate) NotifyPingComplete(other *memberlist.Node, rtt time.Duration, payload []byte) {
	d.g.onAck(other.Name)
}

// NotifyAlive admits a node only if its metadata decodes, names the node
// itself and puts it in this site. An error makes memberlist ignore the
// alive message, so such a node never becomes a member.
func (d *delegate) NotifyAlive(peer *memberlist.Node) error {
	m, err := DecodeMeta(peer.Meta)
	if err != nil {
		return fmt.Errorf("node %s: %w", peer.Name, err)
	}
	if m.Name != peer.Name {
		return fmt.Errorf("node %s: metadata names node %q", peer.Name, m.Name)
	}
	if m.Site != d.g.cfg.Meta.Site {
		return fmt.Errorf("node %s: site %q, this pool is site %q", peer.Name, m.Site, d.g.cfg.Meta.Site)
	}
	return nil
}

// NotifyConflict logs two nodes that claim one name from different
// addresses; memberlist keeps the first.
func (d *delegate) NotifyConflict(existing, other *memberlist.Node) {
	d.g.log.Error("two nodes claim one name; keeping the first", "peer", existing.Name,
		"addr", nodeAddr(existing), "other_addr", nodeAddr(other))
}

// nodeAddr is n's gossip address, host:port.
func nodeAddr(n *memberlist.Node) string {
	return net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
}
