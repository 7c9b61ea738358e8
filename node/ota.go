package node

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/outpost-mesh/outpost/consensus"
	"github.com/outpost-mesh/outpost/gossip"
	"github.com/outpost-mesh/outpost/ota"
	"github.com/outpost-mesh/outpost/ota/control"
	"github.com/outpost-mesh/outpost/transport"
)

// otaReportBatch bounds the device results one link report carries.
const otaReportBatch = 512

// newOTA builds this node's share of OTA: every node runs the site
// dispatcher (it acts while the node leads its site) and the agent; hub
// members also run the hub's controller.
func (n *Node) newOTA() error {
	var err error
	n.agent, err = newAgentService(n.cfg.DataDir, n.cfg.OTAPolicy, n.cfg.OTARetention, n.id, nil, n.log)
	if err != nil {
		return err
	}
	n.agent.report = n.deliverRefusals // otarefusal_site.go
	n.otaSite, err = control.NewSite(control.SiteConfig{
		Site: n.id.Site, Store: n.group.Store(), Runner: otaRunner{n}, Alive: n.memberAlive,
		IsLeader: n.group.IsLeader, Logger: n.log,
	})
	if err != nil {
		return err
	}
	if n.id.Role == RoleHub {
		n.otaHub, err = control.NewHub(control.HubConfig{
			Store: n.group.Store(), Inventory: inventory{n}, IsLeader: n.group.IsLeader, Logger: n.log,
		})
	}
	return err
}

// inventory lists the nodes of every site from the hub's roster.
type inventory struct{ n *Node }

// Devices implements control.Inventory.
//
// A Node's site is its outpost.dev/site label, which every roster write
// sets with status.site; the status is decoded only for a Node without
// it. Read in place (Scan), not copied and decoded each: at 10,000 nodes
// that was 8% of the hub's work before a task's first write.
func (i inventory) Devices(ctx context.Context) ([]control.Device, error) {
	var out []control.Device
	err := i.n.group.Store().Scan(ctx, &NodeKind, "", nil, consensus.ReadOptions{Stale: true}, func(o *consensus.Object) error {
		site := o.Labels["outpost.dev/site"]
		if site == "" {
			var st NodeStatus
			_ = o.DecodeStatus(&st)
			site = st.Site
		}
		out = append(out, control.Device{Name: o.Name, Site: site, Labels: maps.Clone(o.Labels)})
		return nil
	})
	return out, err
}

// memberAlive reports whether a node of this site is alive in gossip.
func (n *Node) memberAlive(name string) bool {
	if name == n.id.Name {
		return true
	}
	m, ok := n.gossip.Member(name)
	return ok && m.State == gossip.Alive
}

// otaRunner runs a device on its node: locally, or over a QUIC stream.
type otaRunner struct{ n *Node }

func (r otaRunner) Run(ctx context.Context, node string, req control.RunRequest) (ota.DeviceResultStatus, error) {
	n := r.n
	if node == n.id.Name {
		return n.agent.run(ctx, req, refusalCaller{peer: n.id.Site + "/" + n.id.Name})
	}
	var resp otaRunResponse
	if err := n.callMember(ctx, node, methodOTARun, req, &resp); err != nil {
		return ota.DeviceResultStatus{}, err
	}
	if resp.Error != "" {
		return ota.DeviceResultStatus{}, errors.New(resp.Error)
	}
	return resp.Status, nil
}

// otaCancelRequest asks a node to kill a device's run.
type otaCancelRequest struct {
	UID     string `json:"uid"`
	Attempt int    `json:"attempt"`
}

// Cancel implements control.Runner.
func (r otaRunner) Cancel(ctx context.Context, node, uid string, attempt int) error {
	n := r.n
	if node == n.id.Name {
		n.agent.cancel(uid, attempt)
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var resp otaRunResponse
	return n.callMember(ctx, node, methodOTACancel, otaCancelRequest{UID: uid, Attempt: attempt}, &resp)
}

// serve handles the agent's RPC methods, which every node serves; false
// when method is not one of them.
func (a *agentService) serve(ctx context.Context, method string, s *transport.Stream) bool {
	switch method {
	case methodOTARun:
		a.serveRun(ctx, s)
	case methodOTACancel:
		a.serveCancel(ctx, s)
	case methodOTALogs:
		a.serveLogs(ctx, s)
	case methodOTAPing:
		a.servePing(s) // otawarm.go
	default:
		return false
	}
	return true
}

// serveCancel kills a run for the leader of this node's site.
func (a *agentService) serveCancel(_ context.Context, s *transport.Stream) {
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(10 * time.Second))
	var req otaCancelRequest
	if err := readMessage(s, &req, 64<<10); err != nil {
		return
	}
	var resp otaRunResponse
	if peer := s.Peer(); peer.Site != a.id.Site {
		resp.Error = fmt.Sprintf("%s of site %s may not cancel runs on site %s", peer.Name, peer.Site, a.id.Site)
	} else {
		a.cancel(req.UID, req.Attempt)
	}
	_ = writeMessage(s, resp)
}

// memberAddr is a site member's QUIC address, "" when unknown.
func (n *Node) memberAddr(name string) string {
	m, _ := n.gossip.Member(name)
	return m.QUICAddr
}

// otaRunResponse answers a RunRequest.
type otaRunResponse struct {
	Error  string                 `json:"error,omitempty"`
	Status ota.DeviceResultStatus `json:"status"`
}

// serveRun runs a device for the leader of this node's site.
func (a *agentService) serveRun(ctx context.Context, s *transport.Stream) {
	defer s.Close()
	_ = s.SetReadDeadline(time.Now().Add(30 * time.Second))
	var req control.RunRequest
	if err := readMessage(s, &req, maxMessageBytes); err != nil {
		return
	}
	_ = s.SetReadDeadline(time.Time{})
	var resp otaRunResponse
	if peer := s.Peer(); peer.Site != a.id.Site {
		resp.Error = fmt.Sprintf("%s of site %s may not run tasks on site %s", peer.Name, peer.Site, a.id.Site)
	} else if req.Node != a.id.Name {
		resp.Error = fmt.Sprintf("run for node %s reached node %s", req.Node, a.id.Name)
	} else {
		st, err := a.run(ctx, req, refusalCaller{peer: peer.Site + "/" + peer.Name, source: peerHost(peer)})
		if err != nil {
			resp.Error = err.Error()
		}
		resp.Status = st
	}
	_ = writeMessage(s, resp)
}

// otaLinkReport is the OTA part of a site's report to the hub.
type otaLinkReport struct {
	Have    control.SiteState      `json:"have,omitempty"`
	Results []control.DeviceReport `json:"results,omitempty"`
	Logs    []logReply             `json:"logs,omitempty"`
	// Refusals are run requests the site's nodes refused for their grant
	// (otarefusal.go), for the audit log.
	Refusals []GrantRefusal `json:"refusals,omitempty"`
	// Running counts the site's running devices not reported one by one
	// (control.Site.Running), by task UID.
	Running map[string]int `json:"running,omitempty"`
}

// otaLinkReply is the OTA part of the hub's answer.
type otaLinkReply struct {
	Assignments []control.Assignment   `json:"assignments,omitempty"`
	Acked       []control.DeviceReport `json:"acked,omitempty"`
	LogRequests []logRequest           `json:"logRequests,omitempty"`
	// RefusalsAudited are the refusals the hub wrote to its audit log.
	RefusalsAudited []refusalAck `json:"refusalsAudited,omitempty"`
}

// otaOutbox gathers what the site leader sends the hub.
func (n *Node) otaOutbox(ctx context.Context) (*otaLinkReport, error) {
	have, err := n.otaSite.Have(ctx)
	if err != nil {
		return nil, err
	}
	results, err := n.otaSite.Pending(ctx, otaReportBatch)
	if err != nil {
		return nil, err
	}
	refusals, err := n.refusalStore().pending(ctx) // otarefusal_site.go
	if err != nil {
		return nil, err
	}
	n.outLogsMu.Lock()
	logs := n.outLogs
	n.outLogs = nil
	n.outLogsMu.Unlock()
	return &otaLinkReport{Have: have, Results: results, Logs: logs, Refusals: refusals, Running: n.otaSite.Running(time.Now())}, nil
}

// otaInbox applies the hub's answer at the site.
func (n *Node) otaInbox(ctx context.Context, reply *otaLinkReply) error {
	if reply == nil {
		return nil
	}
	if len(reply.LogRequests) > 0 {
		logs := n.answerLogRequests(ctx, reply.LogRequests)
		n.outLogsMu.Lock()
		n.outLogs = append(n.outLogs, logs...)
		n.outLogsMu.Unlock()
	}
	if err := n.otaSite.Accept(ctx, reply.Assignments); err != nil {
		return err
	}
	if err := n.refusalStore().ack(ctx, reply.RefusalsAudited); err != nil { // otarefusal_site.go
		return err
	}
	return n.otaSite.Acked(ctx, reply.Acked)
}

// assignFirst answers a site's report at once, writing nothing, when the
// hub has a task the site has not heard of (an assignment with its spec;
// acceptReport asks only for a report whose roster is unchanged):
// the report's own writes (due lastSeen refreshes, results) would wait at
// the hub behind the new task's thousands, and the site's devices with
// them. Once per site and task: a reply with assignments makes the site
// report again at once, and that report is written and acknowledged as
// usual. Nil when there is no such task.
func (n *Node) assignFirst(ctx context.Context, site string, rep *otaLinkReport) *otaLinkReply {
	if rep == nil || n.otaHub == nil {
		return nil
	}
	as := n.otaHub.Assignments(site, rep.Have)
	n.firstMu.Lock()
	sent := n.firstSent[site]
	for uid := range sent {
		if _, ok := rep.Have[uid]; ok {
			delete(sent, uid) // the site holds it now
		}
	}
	fresh := false
	for _, a := range as {
		if a.Spec != nil && !sent[a.UID] {
			fresh = true
		}
	}
	if fresh {
		if sent == nil {
			sent = map[string]bool{}
			if n.firstSent == nil {
				n.firstSent = map[string]map[string]bool{}
			}
			n.firstSent[site] = sent
		}
		for _, a := range as {
			if a.Spec != nil {
				sent[a.UID] = true
			}
		}
	}
	n.firstMu.Unlock()
	if !fresh {
		return nil
	}
	n.logs.deliver(rep.Logs) // the site does not send them again
	return &otaLinkReply{Assignments: n.signAssignments(ctx, site, as), LogRequests: n.logs.take(site)}
}

// otaExchange is the hub's side: ingest a site's results and answer with
// its assignments.
func (n *Node) otaExchange(ctx context.Context, site string, rep *otaLinkReport) (*otaLinkReply, error) {
	if rep == nil || n.otaHub == nil {
		return nil, nil
	}
	n.logs.deliver(rep.Logs)
	audited := n.access.audit.auditRefusals(ctx, site, rep.Refusals) // otarefusal_site.go
	if err := n.otaHub.Ingest(ctx, site, rep.Results); err != nil {
		return nil, err
	}
	n.otaHub.SiteRunning(site, rep.Running)
	// A task being started with devices here: answer with it, once its
	// results exist, rather than at the site's next report.
	n.otaHub.AwaitSite(ctx, site, linkInterval)
	as := n.signAssignments(ctx, site, n.otaHub.Assignments(site, rep.Have)) // otagrant.go: every device run is signed
	return &otaLinkReply{Assignments: as, Acked: control.Acks(rep.Results), LogRequests: n.logs.take(site), RefusalsAudited: audited}, nil
}

// runHubSiteOTA is the hub site's link to its own controller: the hub
// leader is also its site's leader, so the exchange is a function call.
func (n *Node) runHubSiteOTA(ctx context.Context) error {
	return n.whileLeader(ctx, 250*time.Millisecond, "hub site OTA exchange", func(ctx context.Context) error {
		rep, err := n.otaOutbox(ctx)
		if err != nil {
			return err
		}
		reply, err := n.otaExchange(ctx, n.id.Site, rep)
		if err != nil {
			return err
		}
		return n.otaInbox(ctx, reply)
	})
}

// otaBusy reports whether the site has results the hub has not taken.
func (n *Node) otaBusy(ctx context.Context) bool {
	n.outLogsMu.Lock()
	logs := len(n.outLogs)
	n.outLogsMu.Unlock()
	p, err := n.otaSite.Pending(ctx, 1)
	return logs > 0 || err == nil && len(p) > 0
}
