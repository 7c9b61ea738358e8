package node_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/outpost-mesh/outpost/node"
)

const auditPath = "/apis/core.outpost.dev/v1alpha1/auditevents"

// auditEvents lists the audit log.
func (tn *testNode) auditEvents(t *testing.T) []node.AuditEventSpec {
	t.Helper()
	var list struct {
		Items []struct {
			Spec node.AuditEventSpec `json:"spec"`
		} `json:"items"`
	}
	tn.mustDo(t, call{method: http.MethodGet, path: auditPath}, http.StatusOK, &list)
	out := make([]node.AuditEventSpec, 0, len(list.Items))
	for _, it := range list.Items {
		out = append(out, it.Spec)
	}
	return out
}

// findEvent waits for an event that match accepts.
func (tn *testNode) findEvent(t *testing.T, what string, match func(node.AuditEventSpec) bool) node.AuditEventSpec {
	t.Helper()
	var found node.AuditEventSpec
	eventually(t, 30*time.Second, func() error {
		for _, ev := range tn.auditEvents(t) {
			if match(ev) {
				found = ev
				return nil
			}
		}
		return fmt.Errorf("no audit event for %s in %+v", what, tn.auditEvents(t))
	})
	return found
}

// TestAuditRecordsWritesAndRefusals: a create, an update and a delete are
// in the log with the user, verb, object, source and result; a refused
// call (403) and a call with a bad token (401) are too; reads are not.
func TestAuditRecordsWritesAndRefusals(t *testing.T) {
	t.Parallel()
	tn := startNode(t)
	viewer := tn.createAccessToken(t, "auditor", node.RoleViewer)
	tn.createSite(t, "berlin", nil, map[string]any{"location": "DE"})
	tn.mustDo(t, call{method: http.MethodPatch, path: sitesPath + "/berlin", body: []byte(`{"spec":{"location":"Berlin"}}`), contentType: "application/merge-patch+json"}, http.StatusOK, nil)
	if code, _ := tn.do(t, call{method: http.MethodDelete, path: sitesPath + "/berlin", auth: viewer}); code != http.StatusForbidden {
		t.Fatalf("viewer delete: %d, want 403", code)
	}
	if code, _ := tn.do(t, call{method: http.MethodGet, path: sitesPath, auth: "Bearer nobody.wrong"}); code != http.StatusUnauthorized {
		t.Fatalf("bad token: %d, want 401", code)
	}
	tn.mustDo(t, call{method: http.MethodDelete, path: sitesPath + "/berlin"}, http.StatusOK, nil)
	tn.mustDo(t, call{method: http.MethodGet, path: sitesPath}, http.StatusOK, nil)

	admin, _, _ := strings.Cut(tn.token, ".")
	for _, tc := range []struct {
		what  string
		match func(e node.AuditEventSpec) bool
	}{
		{"create", func(e node.AuditEventSpec) bool {
			return e.Verb == "create" && e.Resource == "sites" && e.Name == "" && e.User == admin && e.Code == 201 && e.Source == "127.0.0.1"
		}},
		{"patch", func(e node.AuditEventSpec) bool { return e.Verb == "patch" && e.Name == "berlin" && e.Code == 200 }},
		{"refused delete", func(e node.AuditEventSpec) bool {
			return e.Verb == "delete" && e.User == "auditor" && e.Code == 403 && strings.Contains(e.Message, "viewer role cannot delete sites.core.outpost.dev: needs operator")
		}},
		{"bad token", func(e node.AuditEventSpec) bool { return e.User == "nobody" && e.Code == 401 }},
		{"delete", func(e node.AuditEventSpec) bool { return e.Verb == "delete" && e.User == admin && e.Code == 200 }},
	} {
		tn.findEvent(t, tc.what, tc.match)
	}
	for _, e := range tn.auditEvents(t) {
		if (e.Verb == "list" || e.Verb == "get") && e.Code < 400 {
			t.Errorf("a read that was allowed is in the audit log: %+v", e)
		}
	}
	// The log cannot be written through the API, even by an admin.
	body, _ := json.Marshal(map[string]any{"apiVersion": "core.outpost.dev/v1alpha1", "kind": "AuditEvent", "metadata": map[string]any{"name": "fake"}, "spec": map[string]any{}})
	if code, _ := tn.do(t, call{method: http.MethodPost, path: auditPath, body: body}); code != http.StatusMethodNotAllowed {
		t.Fatalf("create of an audit event: %d, want 405", code)
	}
}

// TestAuditRetention: past --audit-max-events the oldest events go, and
// past --audit-max-age every event older than that.
func TestAuditRetention(t *testing.T) {
	t.Parallel()
	t.Run("count", func(t *testing.T) {
		t.Parallel()
		tn := startNode(t, func(c *node.Config) { c.AuditMaxEvents = 5 })
		for i := range 12 {
			tn.createSite(t, fmt.Sprintf("s%d", i), nil, nil)
		}
		if err := node.PruneAuditNow(tn.node); err != nil {
			t.Fatal(err)
		}
		evs := tn.auditEvents(t)
		if len(evs) != 5 {
			t.Fatalf("%d events kept, want 5", len(evs))
		}
		for _, e := range evs {
			if e.Verb == "create" && e.Name == "" && e.Resource == "sites" && e.Code == 201 {
				continue
			}
			t.Errorf("kept %+v; want only the newest site creates", e)
		}
	})
	t.Run("age", func(t *testing.T) {
		t.Parallel()
		tn := startNode(t, func(c *node.Config) { c.AuditMaxAge = time.Hour })
		for i := range 3 {
			tn.createSite(t, fmt.Sprintf("s%d", i), nil, nil)
		}
		before := len(tn.auditEvents(t))
		if before < 3 {
			t.Fatalf("%d events, want the 3 site creates at least", before)
		}
		// Half an hour on, nothing is past the hour.
		if err := node.PruneAuditAt(tn.node, time.Now().Add(30*time.Minute)); err != nil {
			t.Fatal(err)
		}
		if n := len(tn.auditEvents(t)); n != before {
			t.Fatalf("%d events after pruning at +30m, want all %d", n, before)
		}
		// Two hours on, every one of them is.
		if err := node.PruneAuditAt(tn.node, time.Now().Add(2*time.Hour)); err != nil {
			t.Fatal(err)
		}
		if evs := tn.auditEvents(t); len(evs) != 0 {
			t.Fatalf("%d events left after pruning at +2h, want none: %+v", len(evs), evs)
		}
	})
}

// TestAuditSurvivesLeaderChange: on a hub of three, the events of writes,
// a refusal and a task's dispatch, all recorded by the first leader, are
// every one in the log the next leader serves once the first has stopped;
// a write sent to a follower afterwards is recorded once, with the
// follower it came through.
func TestAuditSurvivesLeaderChange(t *testing.T) {
	t.Parallel()
	first := startNode(t, calmRaft)
	token := first.createToken(t, "hub", 0, time.Time{})
	addr := first.hubQUIC(t)
	members := []*edgeNode{}
	mirrors := map[string]string{}
	for _, name := range []string{"node-2", "node-3"} {
		var mirror string
		members = append(members, startEdge(t, addr, token, name, mirrorAt(t, &mirror), calmRaft, func(c *node.Config) {
			c.APIAddr, c.RegistryPush = "127.0.0.1:0", true
		}))
		mirrors[name] = mirror
	}
	eventually(t, 60*time.Second, func() error { return leadsVoters(first, 3) })

	viewer := first.createAccessToken(t, "watcher", node.RoleViewer)
	first.createSite(t, "berlin", nil, map[string]any{"location": "DE"})
	if code, _ := first.do(t, call{method: http.MethodDelete, path: sitesPath + "/berlin", auth: viewer}); code != http.StatusForbidden {
		t.Fatalf("viewer delete: %d, want 403", code)
	}
	first.mustDo(t, call{method: http.MethodPost, path: tasksPath, body: taskJSON("before", map[string]any{
		"targets": map[string]any{"nodes": []string{"node-1"}},
		"steps":   []map[string]any{{"name": "true", "type": "exec", "command": []string{"true"}}},
	})}, http.StatusCreated, nil)
	first.findEvent(t, "the dispatch", func(e node.AuditEventSpec) bool { return e.Verb == "dispatch" && e.Name == "before" })
	before := first.auditEvents(t)
	if len(before) < 5 {
		t.Fatalf("%d events before the change, want the token, site, refusal, task and dispatch", len(before))
	}

	first.stop(t)
	var next *edgeNode
	eventually(t, 60*time.Second, func() error {
		if next = siteLeader(members); next == nil {
			return fmt.Errorf("the hub has no new leader")
		}
		return nil
	})
	var follower *edgeNode
	for _, m := range members {
		if m != next {
			follower = m
		}
	}
	at := func(n *edgeNode) *testNode {
		c := *first
		c.url, c.node = n.APIURL(), n.Node
		return &c
	}
	after := at(next).auditEvents(t)
	for _, want := range before {
		if !slices.ContainsFunc(after, func(e node.AuditEventSpec) bool { return e == want }) {
			t.Errorf("lost with the leader change: %+v", want)
		}
	}
	at(follower).createSite(t, "paris", nil, nil)
	var got []node.AuditEventSpec
	all := at(next).auditEvents(t)
	for _, e := range all {
		if e.Verb == "create" && e.Resource == "sites" && !slices.Contains(before, e) {
			got = append(got, e)
		}
	}
	if len(got) != 1 || got[0].Via != follower.Name() || got[0].Code != http.StatusCreated {
		t.Fatalf("the create sent to follower %s is in the log as %+v; want once, via it; the log: %+v", follower.Name(), got, all)
	}
	// A push to the follower's own registry: it serves it, the leader
	// records it.
	ref, err := name.ParseReference(mirrors[follower.Name()]+"/team/tool:v2", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if code := pushAs(t, ref, first.token); code != 0 {
		t.Fatalf("push to follower %s: %d", follower.Name(), code)
	}
	at(next).findEvent(t, "the push to the follower", func(e node.AuditEventSpec) bool {
		return e.Verb == "push" && e.Name == "team/tool:v2" && e.Via == follower.Name() && e.Code == http.StatusCreated
	})
}
