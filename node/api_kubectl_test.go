package node_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"k8s.io/kube-openapi/pkg/spec3"
)

// TestOpenAPIForKubectl checks the OpenAPI v3 documents kubectl reads
// before apply: every served group-version is listed under a content hash,
// each document parses as kubectl's parser parses it, and a kind's PATCH
// names its kind, the fieldValidation parameter (the server validates
// fields itself) and merge patches only (so kubectl sends a JSON merge
// patch); read-only kinds have no PATCH.
func TestOpenAPIForKubectl(t *testing.T) {
	t.Parallel()
	tn := startNode(t)
	var root struct {
		Paths map[string]struct {
			ServerRelativeURL string `json:"serverRelativeURL"`
		} `json:"paths"`
	}
	tn.mustDo(t, call{method: http.MethodGet, path: "/openapi/v3"}, http.StatusOK, &root)
	for _, gv := range []string{"apis/ota.outpost.dev/v1alpha1", "apis/core.outpost.dev/v1alpha1", "apis/images.outpost.dev/v1alpha1"} {
		if !strings.Contains(root.Paths[gv].ServerRelativeURL, "?hash=") {
			t.Errorf("/openapi/v3 lists %s as %q, want a URL with ?hash=", gv, root.Paths[gv].ServerRelativeURL)
		}
	}
	u := root.Paths["apis/ota.outpost.dev/v1alpha1"].ServerRelativeURL
	code, body := tn.do(t, call{method: http.MethodGet, path: u})
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", u, code, body)
	}
	var doc spec3.OpenAPI
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatalf("the ota document does not parse as OpenAPI 3: %v", err)
	}
	task := doc.Paths.Paths["/apis/ota.outpost.dev/v1alpha1/tasks/{name}"]
	if task == nil || task.Patch == nil {
		t.Fatalf("no PATCH for tasks/{name} in %v", doc.Paths.Paths)
	}
	var gvk map[string]string
	if err := task.Patch.Extensions.GetObject("x-kubernetes-group-version-kind", &gvk); err != nil || gvk["kind"] != "Task" || gvk["group"] != "ota.outpost.dev" {
		t.Errorf("tasks PATCH names %v (%v), want kind Task of ota.outpost.dev", gvk, err)
	}
	fieldValidation := false
	for _, p := range task.Patch.Parameters {
		fieldValidation = fieldValidation || (p.Name == "fieldValidation" && p.In == "query")
	}
	if !fieldValidation {
		t.Error("tasks PATCH has no fieldValidation query parameter: kubectl apply would validate client-side, without a schema")
	}
	if c := task.Patch.RequestBody.Content; len(c) != 1 || c["application/merge-patch+json"] == nil {
		t.Errorf("tasks PATCH takes %v, want only application/merge-patch+json", c)
	}
	if dr := doc.Paths.Paths["/apis/ota.outpost.dev/v1alpha1/deviceresults/{name}"]; dr == nil || dr.Patch != nil || dr.Get == nil {
		t.Errorf("deviceresults/{name} = %+v, want GET and no PATCH (read-only)", dr)
	}
	if _, ok := doc.Components.Schemas["dev.outpost.ota.v1alpha1.Task"]; !ok {
		t.Error("no schema dev.outpost.ota.v1alpha1.Task")
	}
	if code, _ := tn.do(t, call{method: http.MethodGet, path: "/openapi/v3/apis/nothing.outpost.dev/v1"}); code != http.StatusNotFound {
		t.Errorf("an unserved group-version: %d, want 404", code)
	}
	if code, _ := tn.do(t, call{method: http.MethodGet, path: "/openapi/v3", auth: "-"}); code != http.StatusUnauthorized {
		t.Errorf("/openapi/v3 without a token: %d, want 401", code)
	}
}
