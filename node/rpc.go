package node

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/outpost-mesh/outpost/consensus"
	"github.com/outpost-mesh/outpost/transport"
)

// rpcHeader opens every KindRPC stream and names the method.
type rpcHeader struct {
	Method string `json:"method"`
}

// RPC methods.
const (
	methodLink      = "link"       // site leader → hub: roster reports, revocations back
	methodAPI       = "api"        // hub follower → hub leader: forwarded admin API call
	methodRenew     = "renew"      // any node → hub: certificate renewal
	methodOTARun    = "ota.run"    // site leader → node: run a task's device
	methodOTACancel = "ota.cancel" // site leader → node: kill a device's run
	methodOTALogs   = "ota.logs"   // site member → node: a run's full output
	// methodOTARefusals (otarefusal_site.go): site member → site leader.
)

// readRPCHeader reads the header of a KindRPC stream; on error it closes
// the stream.
func readRPCHeader(s *transport.Stream) (rpcHeader, bool) {
	_ = s.SetReadDeadline(time.Now().Add(30 * time.Second))
	var h rpcHeader
	if err := readMessage(s, &h, 4<<10); err != nil {
		s.Close()
		return h, false
	}
	_ = s.SetReadDeadline(time.Time{})
	return h, true
}

// serveRPC dispatches a KindRPC stream by its method.
func (n *Node) serveRPC(ctx context.Context, s *transport.Stream) {
	h, ok := readRPCHeader(s)
	if !ok {
		return
	}
	peer := s.Peer()
	switch {
	case h.Method == methodLink && n.id.Role == RoleHub && peer.Role == RoleEdge:
		n.serveLink(ctx, s)
	case h.Method == methodAPI && n.id.Role == RoleHub && peer.Role == RoleHub:
		n.serveForwarded(ctx, s)
	case h.Method == methodRenew && n.id.Role == RoleHub:
		n.serveRenew(ctx, s)
	case h.Method == methodOTARefusals:
		n.serveRefusals(ctx, s) // otarefusal_site.go
	case h.Method == methodAudit && n.id.Role == RoleHub && peer.Role == RoleHub && n.access.audit != nil:
		n.serveAudit(ctx, s) // images_audit.go
	case n.agent.serve(ctx, h.Method, s):
	default:
		refuseMethod(s, h.Method)
	}
}

// refuseMethod answers a call this node does not serve to its caller.
func refuseMethod(s *transport.Stream, method string) {
	peer := s.Peer()
	_ = writeMessage(s, map[string]string{"error": fmt.Sprintf("method %q is not served to %s/%s here", method, peer.Site, peer.Name)})
	s.Close()
}

// dialRPC opens a KindRPC stream for method.
func (n *Node) dialRPC(ctx context.Context, addr, method string) (*transport.Stream, error) {
	s, err := n.ep.Dial(ctx, addr, transport.KindRPC)
	if err != nil {
		return nil, err
	}
	if err := writeMessage(s, rpcHeader{Method: method}); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// call makes one request/response call on a new KindRPC stream to addr.
// The stream is closed when ctx ends, so ctx bounds the whole call.
//
// The request ends the stream's write side (its FIN mostly goes with the
// request's last bytes), so the callee, having read to the end, closes the
// stream without asking the caller to stop sending: a call costs two
// packets the peer must acknowledge, not three (no STOP_SENDING and
// RESET_STREAM exchange). The header and the request go in one Write, so
// in one packet. A callee that answers and closes before the FIN comes
// (it reads one message, not to the end) makes the half-close moot, which
// transport.Stream.CloseWrite takes as such. A site leader makes one call
// per device of a task.
func (n *Node) call(ctx context.Context, addr, method string, req, resp any) error {
	return callOn(ctx, n.ep.Dial, addr, method, req, resp)
}

// callOn is call over a stream dial opens: an endpoint's Dial, or its
// DialSite for a member of this node's site. A stateless agent, which is
// no Node, calls with it too (deliverRefusals).
func callOn(ctx context.Context, dial func(context.Context, string, transport.Kind) (*transport.Stream, error), addr, method string, req, resp any) error {
	b, err := appendMessage(nil, rpcHeader{Method: method})
	if err == nil {
		b, err = appendMessage(b, req)
	}
	if err != nil {
		return err
	}
	s, err := dial(ctx, addr, transport.KindRPC)
	if err != nil {
		return err
	}
	defer s.Close()
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	if _, err := s.Write(b); err != nil {
		return err
	}
	if err := s.CloseWrite(); err != nil {
		return err
	}
	return readMessage(s, resp, maxMessageBytes)
}

// callMember calls a member of this node's site by name, on a site
// connection (transport.Endpoint.DialSite).
func (n *Node) callMember(ctx context.Context, node, method string, req, resp any) error {
	addr := n.memberAddr(node)
	if addr == "" {
		return fmt.Errorf("node %s is not a known member of site %s", node, n.id.Site)
	}
	return callOn(ctx, n.ep.DialSite, addr, method, req, resp)
}

// whileLeader calls fn every interval while this node leads its group,
// until ctx ends; fn's errors are logged at debug as what.
func (n *Node) whileLeader(ctx context.Context, interval time.Duration, what string, fn func(context.Context) error) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if !n.group.IsLeader() {
			continue
		}
		if err := fn(ctx); err != nil && ctx.Err() == nil {
			n.log.Debug(what, "err", err)
		}
	}
}

// authorizeStream is the transport's check on every incoming stream: Raft
// only within the site; the rest is checked per method.
func (n *Node) authorizeStream(p transport.Peer, k transport.Kind) error {
	if k == transport.KindRaft && p.Site != n.id.Site {
		return fmt.Errorf("%s of site %s may not open raft streams of site %s", p.Name, p.Site, n.id.Site)
	}
	return nil
}

// isRevoked is the transport's revocation check: a revoked name is refused
// everywhere; the hub also refuses a certificate that is not the one its
// member record holds (an old certificate of a name that joined again).
func (n *Node) isRevoked(p transport.Peer) bool {
	if p.Name == "" {
		return false
	}
	if n.revoked(p.Name) {
		return true
	}
	if n.id.Role != RoleHub || p.Site == HubSite && p.Name == n.id.Name {
		return false
	}
	obj, err := n.group.Store().Get(context.Background(), &MemberKind, "", p.Name, consensus.ReadOptions{Stale: true})
	if err != nil {
		// Hub members bootstrapped before any record, and members whose
		// record has not replicated yet, are accepted on the CA alone.
		return false
	}
	var spec MemberSpec
	if obj.DecodeSpec(&spec) != nil {
		return false
	}
	return !slices.Contains(spec.Serials, p.Serial)
}
