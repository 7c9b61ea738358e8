package node_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/outpost-mesh/outpost/node"
)

const tokensPath = "/apis/core.outpost.dev/v1alpha1/accesstokens"

// createAccessToken makes an AccessToken with role through the API, as
// `outpost access create` does, and returns its bearer token.
func (tn *testNode) createAccessToken(t *testing.T, name, role string) string {
	t.Helper()
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	secret := base64.RawURLEncoding.EncodeToString(b)
	sum := sha256.Sum256([]byte(secret))
	body, _ := json.Marshal(map[string]any{
		"apiVersion": "core.outpost.dev/v1alpha1", "kind": "AccessToken",
		"metadata": map[string]any{"name": name}, "spec": map[string]any{"role": role, "secretHash": hex.EncodeToString(sum[:])},
	})
	tn.mustDo(t, call{method: http.MethodPost, path: tokensPath, body: body}, http.StatusCreated, nil)
	return "Bearer " + name + "." + secret
}

// statusOf sends c and returns only the status code, closing the body
// without reading it (a watch streams).
func (tn *testNode) statusOf(t *testing.T, c call) (int, string) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, c.method, tn.url+c.path, strings.NewReader(string(c.body)))
	req.Header.Set("Authorization", c.auth)
	req.Header.Set("Content-Type", "application/merge-patch+json")
	resp, err := tn.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", c.method, c.path, err)
	}
	defer resp.Body.Close()
	var s metav1.Status
	if resp.StatusCode >= 400 {
		_ = json.NewDecoder(resp.Body).Decode(&s)
	}
	return resp.StatusCode, s.Message
}

// TestRolesEveryKindAndVerb sends every verb on every kind the API serves
// (from discovery, which the registry makes: a new kind is covered
// without a new case) as each role, and checks that exactly the calls the
// policy refuses get 403 naming the role, verb, resource and the role
// needed, and that no other call does.
func TestRolesEveryKindAndVerb(t *testing.T) {
	t.Parallel()
	tn := startNode(t)
	tokens := map[string]string{
		node.RoleAdmin:    "Bearer " + tn.token,
		node.RoleOperator: tn.createAccessToken(t, "op", node.RoleOperator),
		node.RoleViewer:   tn.createAccessToken(t, "view", node.RoleViewer),
	}
	var groups metav1.APIGroupList
	tn.mustDo(t, call{method: http.MethodGet, path: "/apis"}, http.StatusOK, &groups)
	kinds := 0
	for _, g := range groups.Groups {
		var list metav1.APIResourceList
		tn.mustDo(t, call{method: http.MethodGet, path: "/apis/" + g.PreferredVersion.GroupVersion}, http.StatusOK, &list)
		for _, res := range list.APIResources {
			kinds++
			plural, sub, _ := strings.Cut(res.Name, "/")
			base := "/apis/" + g.PreferredVersion.GroupVersion
			if res.Namespaced {
				base += "/namespaces/default"
			}
			base += "/" + plural
			one := base + "/no-such-object"
			if sub != "" {
				one += "/" + sub
			}
			for _, verb := range res.Verbs {
				var c call
				switch verb {
				case "get":
					c = call{method: http.MethodGet, path: one}
				case "list":
					c = call{method: http.MethodGet, path: base}
				case "watch":
					c = call{method: http.MethodGet, path: base + "?watch=true&timeoutSeconds=1"}
				case "create":
					c = call{method: http.MethodPost, path: base, body: []byte(`{}`)}
				case "update":
					c = call{method: http.MethodPut, path: one, body: []byte(`{}`)}
				case "patch":
					c = call{method: http.MethodPatch, path: one, body: []byte(`{}`)}
				case "delete":
					c = call{method: http.MethodDelete, path: one}
				}
				if sub != "" && (verb == "list" || verb == "watch" || verb == "create" || verb == "delete") {
					continue
				}
				for role, auth := range tokens {
					need := node.RequiredRole(verb, g.Name, res.Name)
					allowed := rank(role) >= rank(need)
					c.auth = auth
					code, msg := tn.statusOf(t, c)
					if !allowed {
						want := role + " role cannot " + verb + " " + res.Name + "." + g.Name + ": needs " + need
						if code != http.StatusForbidden || !strings.Contains(msg, want) {
							t.Errorf("%s %s %s: %d %q, want 403 %q", role, verb, res.Name, code, msg, want)
						}
						continue
					}
					if code == http.StatusForbidden || code == http.StatusUnauthorized {
						t.Errorf("%s %s %s: %d %q, want it let through", role, verb, res.Name, code, msg)
					}
				}
			}
		}
	}
	if kinds < 10 {
		t.Fatalf("discovery served %d resources; the sweep covered too little", kinds)
	}
}

func rank(role string) int {
	return map[string]int{node.RoleViewer: 1, node.RoleOperator: 2, node.RoleAdmin: 3}[role]
}

// TestRolePolicy pins what the issue asks of each role, independently of
// the table: operators run tasks but manage no tokens; viewers only read.
func TestRolePolicy(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		verb, group, resource, need string
	}{
		{"create", "core.outpost.dev", "accesstokens", node.RoleAdmin},
		{"list", "core.outpost.dev", "accesstokens", node.RoleAdmin},
		{"create", "ota.outpost.dev", "tasks", node.RoleOperator},
		{"patch", "ota.outpost.dev", "tasks", node.RoleOperator}, // halt, resume, cancel, retry
		{"get", "ota.outpost.dev", "tasks/logs", node.RoleViewer},
		{"create", "images.outpost.dev", "imagesyncs", node.RoleOperator},
		{"create", "images.outpost.dev", "registries", node.RoleOperator},
		{"create", "clusters.outpost.dev", "clusters", node.RoleOperator},
		{"patch", "core.outpost.dev", "nodes", node.RoleOperator},
		{"delete", "core.outpost.dev", "nodes", node.RoleAdmin},
		{"update", "ota.outpost.dev", "tasks/status", node.RoleAdmin},
		{"watch", "ota.outpost.dev", "deviceresults", node.RoleViewer},
		{"create", "example.outpost.dev", "widgets", node.RoleAdmin}, // a kind nobody placed
		{"get", "example.outpost.dev", "widgets", node.RoleViewer},
	} {
		if got := node.RequiredRole(tc.verb, tc.group, tc.resource); got != tc.need {
			t.Errorf("%s %s.%s needs %s, want %s", tc.verb, tc.resource, tc.group, got, tc.need)
		}
	}
}

// TestAccessTokenLifecycle: a token's hash never comes back, a revoked
// token is refused at once, an expired one too.
func TestAccessTokenLifecycle(t *testing.T) {
	t.Parallel()
	tn := startNode(t)
	op := tn.createAccessToken(t, "ci", node.RoleOperator)
	code, b := tn.do(t, call{method: http.MethodGet, path: tokensPath + "/ci"})
	if code != http.StatusOK || strings.Contains(string(b), "secretHash") {
		t.Fatalf("GET accesstoken: %d %s; want 200 without secretHash", code, b)
	}
	tn.mustDo(t, call{method: http.MethodGet, path: sitesPath, auth: op}, http.StatusOK, nil)
	tn.mustDo(t, call{method: http.MethodDelete, path: tokensPath + "/ci"}, http.StatusOK, nil)
	if code, _ := tn.do(t, call{method: http.MethodGet, path: sitesPath, auth: op}); code != http.StatusUnauthorized {
		t.Fatalf("revoked token: %d, want 401", code)
	}

	// A token past its expiry (--ttl) is refused, one before it is not.
	for _, tc := range []struct {
		name    string
		expires time.Time
		want    int
	}{
		{"expired", time.Now().Add(-time.Minute), http.StatusUnauthorized},
		{"current", time.Now().Add(time.Hour), http.StatusOK},
	} {
		secret := "s3cret-" + tc.name
		sum := sha256.Sum256([]byte(secret))
		body, _ := json.Marshal(map[string]any{
			"apiVersion": "core.outpost.dev/v1alpha1", "kind": "AccessToken", "metadata": map[string]any{"name": tc.name},
			"spec": map[string]any{"role": node.RoleViewer, "secretHash": hex.EncodeToString(sum[:]), "expires": tc.expires.UTC().Format(time.RFC3339)},
		})
		tn.mustDo(t, call{method: http.MethodPost, path: tokensPath, body: body}, http.StatusCreated, nil)
		code, msg := tn.statusOf(t, call{method: http.MethodGet, path: sitesPath, auth: "Bearer " + tc.name + "." + secret})
		if code != tc.want || (tc.want == http.StatusUnauthorized && !strings.Contains(msg, "expired")) {
			t.Errorf("%s token: %d %q, want %d", tc.name, code, msg, tc.want)
		}
	}
}

// TestSecretTaskOutput: a task annotated ota.outpost.dev/secret-output
// keeps its devices' output from viewers, in every way they could read it
// (get, list, table, watch, the logs subresource), while an operator sees
// it; a task without the annotation shows its output to viewers.
func TestSecretTaskOutput(t *testing.T) {
	t.Parallel()
	tn := startNode(t)
	tn.waitNode(t)
	viewer := tn.createAccessToken(t, "eyes", node.RoleViewer)
	operator := tn.createAccessToken(t, "hands", node.RoleOperator)
	for name, word := range map[string]string{"secret": "TOPSECRET", "plain": "PLAINTEXT"} {
		obj := map[string]any{
			"apiVersion": "ota.outpost.dev/v1alpha1", "kind": "Task", "metadata": map[string]any{"name": name},
			"spec": map[string]any{
				"targets": map[string]any{"nodes": []string{tn.name}},
				"steps":   []map[string]any{{"name": "say", "type": "exec", "command": []string{"echo", word + "-OUT"}}},
			},
		}
		if name == "secret" {
			obj["metadata"].(map[string]any)["annotations"] = map[string]string{node.SecretOutputAnnotation: "true"}
		}
		body, _ := json.Marshal(obj)
		tn.mustDo(t, call{method: http.MethodPost, path: tasksPath, body: body}, http.StatusCreated, nil)
		tn.waitTask(t, name, ended)
	}
	const results = "/apis/ota.outpost.dev/v1alpha1/deviceresults"
	sel := func(task string) string { return "?labelSelector=ota.outpost.dev%2Ftask%3D" + task }
	read := func(auth, path, accept string) string {
		t.Helper()
		code, b := tn.do(t, call{method: http.MethodGet, path: path, auth: auth, accept: accept})
		if code != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, code, b)
		}
		return string(b)
	}
	var one struct {
		Items []struct {
			Metadata struct{ Name string } `json:"metadata"`
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(read("", results+sel("secret"), "")), &one); err != nil || len(one.Items) != 1 {
		t.Fatalf("the secret task's results: %v, %+v; want one", err, one)
	}
	secretResult := results + "/" + one.Items[0].Metadata.Name
	tableWithObjects := "application/json;as=Table;v=v1;g=meta.k8s.io"
	for _, tc := range []struct{ what, path, accept string }{
		{"list", results + sel("secret"), ""},
		{"get", secretResult, ""},
		{"table", results + sel("secret") + "&includeObject=Object", tableWithObjects},
		{"watch", results + sel("secret") + "&watch=true&timeoutSeconds=1", ""},
	} {
		if got := read(viewer, tc.path, tc.accept); strings.Contains(got, "TOPSECRET") || !strings.Contains(got, node.SecretOutputAnnotation+"-withheld") {
			t.Errorf("viewer %s of the secret task's results: %s; want the output withheld, and said so", tc.what, got)
		}
		if got := read(operator, tc.path, tc.accept); !strings.Contains(got, "TOPSECRET-OUT") {
			t.Errorf("operator %s of the secret task's results lacks its output: %s", tc.what, got)
		}
	}
	if got := read(viewer, results+sel("plain"), ""); !strings.Contains(got, "PLAINTEXT-OUT") {
		t.Errorf("viewer list of the plain task's results lacks its output: %s", got)
	}
	code, msg := tn.statusOf(t, call{method: http.MethodGet, path: tasksPath + "/secret/logs?node=" + tn.name, auth: viewer})
	if code != http.StatusForbidden || !strings.Contains(msg, "secret") || !strings.Contains(msg, "needs operator") {
		t.Errorf("viewer GET tasks/secret/logs: %d %q; want 403 saying the output is secret and operator is needed", code, msg)
	}
	if got := read(operator, tasksPath+"/secret/logs?node="+tn.name, ""); !strings.Contains(got, "TOPSECRET-OUT") {
		t.Errorf("operator GET tasks/secret/logs: %s; want the output", got)
	}
	if got := read(viewer, tasksPath+"/plain/logs?node="+tn.name, ""); !strings.Contains(got, "PLAINTEXT-OUT") {
		t.Errorf("viewer GET tasks/plain/logs: %s; want the output", got)
	}
}
