package node_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

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

// TestAuditRetention: past --audit-max-events the oldest events go.
func TestAuditRetention(t *testing.T) {
	t.Parallel()
	tn := startNode(t, func(c *node.Config) { c.AuditMaxEvents = 5 })
	for i := range 12 {
		tn.createSite(t, fmt.Sprintf("s%d", i), nil, nil)
	}
	node.PruneAuditNow(tn.node)
	eventually(t, 30*time.Second, func() error {
		if n := len(tn.auditEvents(t)); n > 5 {
			return fmt.Errorf("%d events kept, want at most 5", n)
		}
		return nil
	})
	evs := tn.auditEvents(t)
	if len(evs) == 0 {
		t.Fatal("pruning removed every event")
	}
}
