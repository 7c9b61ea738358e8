package node_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/outpost-mesh/outpost/consensus"
	"github.com/outpost-mesh/outpost/node"
)

const (
	sitesPath  = "/apis/core.outpost.dev/v1alpha1/sites"
	nodesPath  = "/apis/core.outpost.dev/v1alpha1/nodes"
	tableMedia = "application/json;as=Table;v=v1;g=meta.k8s.io"
)

// testNode is a running Node and an admin client of its API.
type testNode struct {
	name   string
	dir    string
	url    string
	token  string
	client *http.Client
	node   *node.Node
	// stop ends Run and waits for it; cleanup calls it too.
	stop func(t *testing.T)
}

// startNode runs a one-node hub in a temporary data dir with its API on a
// free loopback port, and returns once the node leads its Raft group and
// has written admin.yaml naming its API. Options change the config first.
// Run is stopped and awaited on cleanup, and must return nil.
func startNode(t *testing.T, opts ...func(*node.Config)) *testNode {
	t.Helper()
	cfg := node.DefaultConfig()
	cfg.Name = "node-1"
	cfg.DataDir = t.TempDir()
	cfg.APIAddr = "127.0.0.1:0"
	cfg.BindAddr = "127.0.0.1" // dialable, and no fixed port of the host's
	cfg.RegistryAddr = ""      // no mirror on port 5000 either; tests opt in with mirrorAt
	cfg.HeartbeatInterval = 50 * time.Millisecond
	cfg.ShutdownTimeout = 10 * time.Second
	cfg.TuneRaft = func(c *consensus.Config) {
		c.HeartbeatTimeout = 50 * time.Millisecond
		c.ElectionTimeout = 50 * time.Millisecond
		c.LeaderLeaseTimeout = 50 * time.Millisecond
	}
	for _, o := range opts {
		o(&cfg)
	}
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	n, err := newNode(t, cfg, logger)
	if err != nil {
		t.Fatalf("node.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	var once sync.Once
	stop := func(t *testing.T) {
		t.Helper()
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run returned %v, want nil", err)
				}
			case <-time.After(30 * time.Second):
				t.Error("Run did not return within 30s of its context's end")
			}
		})
	}
	t.Cleanup(func() { stop(t) })

	var creds *node.Credentials
	eventually(t, 30*time.Second, func() error {
		select {
		case err := <-done:
			done <- err // for stop
			t.Fatalf("Run returned early: %v", err)
		default:
		}
		if creds, err = node.LoadCredentials(filepath.Join(cfg.DataDir, "admin.yaml")); err != nil {
			return err
		}
		if creds.Server != n.APIURL() {
			// A restarted node rewrites the file once it leads.
			return fmt.Errorf("admin.yaml names %s, not %s", creds.Server, n.APIURL())
		}
		return nil
	})
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(creds.CA)) {
		t.Fatal("admin.yaml ca is not a PEM certificate")
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	t.Cleanup(tr.CloseIdleConnections)
	return &testNode{
		name: cfg.Name, dir: cfg.DataDir, url: n.APIURL(), token: creds.Token,
		client: &http.Client{Transport: tr, Timeout: 30 * time.Second},
		node:   n,
		stop:   stop,
	}
}

// newNode is node.New on free loopback ports for QUIC and gossip, chosen
// afresh once if another process took one between choosing and binding.
func newNode(t *testing.T, cfg node.Config, logger *slog.Logger) (*node.Node, error) {
	t.Helper()
	for attempt := 0; ; attempt++ {
		cfg.QUICPort, cfg.GossipPort = freePort(t, false), freePort(t, true)
		n, err := node.New(cfg, logger)
		if err != nil && attempt == 0 && strings.Contains(err.Error(), "address already in use") {
			continue
		}
		return n, err
	}
}

// testPorts hands out ports below the kernel's ephemeral range (32768 and
// up), so a port found free is not taken a moment later by some outgoing
// connection; packages start at a random offset.
var testPorts atomic.Int64

func init() { testPorts.Store(rand.Int64N(12000)) }

// freePort returns a loopback port that is free, right now, for UDP and,
// when tcp is set, for TCP too.
func freePort(t *testing.T, tcp bool) int {
	t.Helper()
	for range 200 {
		port := 20000 + int(testPorts.Add(1)%12000)
		pc, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		pc.Close()
		if !tcp {
			return port
		}
		if ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port))); err == nil {
			ln.Close()
			return port
		}
	}
	t.Fatal("no free loopback port")
	return 0
}

// eventually polls f every 20ms until it returns nil, failing the test with
// f's last error after timeout.
func eventually(t *testing.T, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %v", timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// call is one API request.
type call struct {
	method      string
	path        string
	body        []byte
	contentType string
	accept      string
	// auth replaces the admin token's Authorization header; "-" sends none.
	auth string
}

// do sends c and returns the status code and body.
func (tn *testNode) do(t *testing.T, c call) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), c.method, tn.url+c.path, bytes.NewReader(c.body))
	if err != nil {
		t.Fatal(err)
	}
	switch c.auth {
	case "":
		req.Header.Set("Authorization", "Bearer "+tn.token)
	case "-":
	default:
		req.Header.Set("Authorization", c.auth)
	}
	if c.contentType == "" && c.body != nil {
		c.contentType = "application/json"
	}
	if c.contentType != "" {
		req.Header.Set("Content-Type", c.contentType)
	}
	if c.accept != "" {
		req.Header.Set("Accept", c.accept)
	}
	resp, err := tn.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", c.method, c.path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", c.method, c.path, err)
	}
	return resp.StatusCode, b
}

// mustDo sends c and fails the test unless the answer has code want; it
// decodes the body into out when out is not nil.
func (tn *testNode) mustDo(t *testing.T, c call, want int, out any) {
	t.Helper()
	code, b := tn.do(t, c)
	if code != want {
		t.Fatalf("%s %s: %d %s, want %d", c.method, c.path, code, b, want)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: decode %s: %v", c.method, c.path, b, err)
		}
	}
}

// object is the wire form of a Site or a Node, loosely typed.
type object struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   metav1.ObjectMeta `json:"metadata"`
	Spec       map[string]any    `json:"spec,omitempty"`
	Status     map[string]any    `json:"status,omitempty"`
}

func siteJSON(name string, labels map[string]string, spec map[string]any) []byte {
	b, _ := json.Marshal(object{
		APIVersion: "core.outpost.dev/v1alpha1", Kind: "Site",
		Metadata: metav1.ObjectMeta{Name: name, Labels: labels}, Spec: spec,
	})
	return b
}

// createSite creates a Site and returns it as stored.
func (tn *testNode) createSite(t *testing.T, name string, labels map[string]string, spec map[string]any) object {
	t.Helper()
	var out object
	tn.mustDo(t, call{method: http.MethodPost, path: sitesPath, body: siteJSON(name, labels, spec)}, http.StatusCreated, &out)
	return out
}

func TestAPIRejectsBadInput(t *testing.T) {
	t.Parallel()
	tn := startNode(t)

	stale := tn.createSite(t, "stale", nil, nil)
	tn.mustDo(t, call{method: http.MethodPut, path: sitesPath + "/stale", body: siteJSON("stale", nil, map[string]any{"location": "new"})}, http.StatusOK, nil)
	staleBody, _ := json.Marshal(map[string]any{
		"apiVersion": "core.outpost.dev/v1alpha1", "kind": "Site",
		"metadata": map[string]any{"name": "stale", "resourceVersion": stale.Metadata.ResourceVersion},
		"spec":     map[string]any{"location": "lost update"},
	})
	adminID, _, _ := strings.Cut(tn.token, ".")

	get := func(path string) call { return call{method: http.MethodGet, path: path} }
	getAs := func(path, auth string) call { return call{method: http.MethodGet, path: path, auth: auth} }
	post := func(path, body string) call { return call{method: http.MethodPost, path: path, body: []byte(body)} }
	put := func(path, body string) call { return call{method: http.MethodPut, path: path, body: []byte(body)} }
	patch := func(path, contentType, body string) call {
		return call{method: http.MethodPatch, path: path, body: []byte(body), contentType: contentType}
	}
	const merge = "application/merge-patch+json"
	// site is a Site's JSON with the given fields after kind.
	site := func(fields string) string {
		return `{"apiVersion":"core.outpost.dev/v1alpha1","kind":"Site",` + fields + `}`
	}
	big := site(`"metadata":{"name":"big"},"spec":{"description":"` + strings.Repeat("x", 3<<20) + `"}`)

	cases := []struct {
		name     string
		call     call
		wantCode int
		wantMsg  []string // each must be in the Status message
	}{
		{"unknown field in spec", post(sitesPath, site(`"metadata":{"name":"x"},"spec":{"bogus":1}`)), 400, []string{`"spec.bogus"`}},
		{"unknown field in status", put(sitesPath+"/stale/status", site(`"metadata":{"name":"stale"},"status":{"nodeCount":1,"extra":true}`)), 400, []string{`"status.extra"`}},
		{"unknown top-level field", post(sitesPath, site(`"metadata":{"name":"x"},"sepc":{}`)), 400, []string{`"sepc"`}},
		{"wrong type in spec", post(sitesPath, site(`"metadata":{"name":"x"},"spec":{"location":7}`)), 400, []string{"spec.location"}},
		{"kind of another endpoint", post(sitesPath, `{"apiVersion":"core.outpost.dev/v1alpha1","kind":"Node","metadata":{"name":"x"}}`), 400, []string{"Node", "Site"}},
		{"malformed JSON", post(sitesPath, `{"apiVersion":`), 400, []string{"malformed body"}},
		{"empty body", post(sitesPath, ""), 400, []string{"empty body"}},
		{"body over 3 MiB", post(sitesPath, big), 413, []string{"3145728-byte limit"}},
		{"invalid name", post(sitesPath, string(siteJSON("Bad_Name", nil, nil))), 422, []string{"Bad_Name", "metadata.name"}},
		{"name in the body differs from the path", put(sitesPath+"/stale", string(siteJSON("other", nil, nil))), 400, []string{`"other"`, `"stale"`}},
		{"namespace in the body of a cluster-scoped kind", post(sitesPath, site(`"metadata":{"name":"x","namespace":"default"}`)), 400, []string{"cluster-scoped", "metadata.namespace"}},
		{"already exists", post(sitesPath, string(siteJSON("stale", nil, nil))), 409, []string{`"stale" already exists`}},
		{"stale resourceVersion on PUT", put(sitesPath+"/stale", string(staleBody)), 409, []string{"has been modified", "you sent " + stale.Metadata.ResourceVersion}},
		{"update of a missing object", put(sitesPath+"/ghost", string(siteJSON("ghost", nil, nil))), 404, []string{`"ghost" not found`}},
		{"missing token", getAs(sitesPath, "-"), 401, []string{"missing bearer token"}},
		{"wrong token", getAs(sitesPath, "Bearer "+adminID+".not-the-secret"), 401, []string{"invalid bearer token"}},
		{"token of no AccessToken", getAs(sitesPath, "Bearer nobody.secret"), 401, []string{"invalid bearer token"}},
		{"malformed token", getAs("/apis", "Bearer no-dot"), 401, []string{"malformed bearer token"}},
		{"basic auth instead of a bearer token", getAs("/apis", "Basic YWRtaW46YWRtaW4="), 401, []string{"missing bearer token"}},
		{"unknown resource", get("/apis/core.outpost.dev/v1alpha1/bogus"), 404, []string{`no resource "bogus"`}},
		{"hidden resource", get("/apis/core.outpost.dev/v1alpha1/members"), 404, []string{`no resource "members"`}},
		{"unknown group", get("/apis/bogus.example.com"), 404, []string{"bogus.example.com"}},
		{"path past the subresource", get(sitesPath + "/stale/status/x"), 404, []string{"stale/status/x"}},
		{"unknown subresource", get(sitesPath + "/stale/scale"), 404, []string{"stale/scale"}},
		{"namespace in the path of a cluster-scoped kind", get("/apis/core.outpost.dev/v1alpha1/namespaces/default/sites"), 404, []string{"sites is cluster-scoped", "/namespaces/default"}},
		{"legacy core group", get("/api/v1/pods"), 404, []string{"/api"}},
		{"PATCH with an unsupported content type", patch(sitesPath+"/stale", "application/json-patch+json", `[{"op":"add","path":"/spec/location","value":"x"}]`), 415, []string{"application/json-patch+json", merge}},
		{"PATCH that renames", patch(sitesPath+"/stale", merge, `{"metadata":{"name":"renamed"}}`), 400, []string{"metadata.name"}},
		{"PATCH with an unknown spec field", patch(sitesPath+"/stale", merge, `{"spec":{"bogus":1}}`), 400, []string{`"spec.bogus"`}},
		{"bad label selector", get(sitesPath + "?labelSelector=a%3D%3D%3Db"), 400, []string{"labelSelector"}},
		{"unsupported field selector", get(sitesPath + "?fieldSelector=spec.location%3Dx"), 400, []string{"spec.location"}},
		{"bad watch timeout", get(sitesPath + "?watch=true&timeoutSeconds=soon"), 400, []string{"timeoutSeconds"}},
		{"POST to an object", post(sitesPath+"/stale", string(siteJSON("stale", nil, nil))), 405, []string{"POST"}},
		{"DELETE of a collection", call{method: http.MethodDelete, path: sitesPath}, 405, []string{"DELETE"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			code, body := tn.do(t, tc.call)
			if code != tc.wantCode {
				t.Errorf("status code %d, want %d; body %s", code, tc.wantCode, body)
			}
			var st metav1.Status
			if err := json.Unmarshal(body, &st); err != nil {
				t.Fatalf("body %q is not a Status: %v", body, err)
			}
			if st.Kind != "Status" || st.APIVersion != "v1" || st.Status != metav1.StatusFailure || int(st.Code) != tc.wantCode {
				t.Errorf("Status %+v: want kind Status, apiVersion v1, status Failure, code %d", st, tc.wantCode)
			}
			for _, want := range tc.wantMsg {
				if !strings.Contains(st.Message, want) {
					t.Errorf("message %q does not name %q", st.Message, want)
				}
			}
		})
	}
}

func TestAPIStaleUpdateChangesNothing(t *testing.T) {
	t.Parallel()
	tn := startNode(t)
	first := tn.createSite(t, "s", nil, map[string]any{"location": "a"})
	var second object
	tn.mustDo(t, call{method: http.MethodPatch, path: sitesPath + "/s", body: []byte(`{"spec":{"location":"b"}}`), contentType: "application/merge-patch+json"}, http.StatusOK, &second)

	// A merge patch carrying the old resourceVersion is a precondition.
	patch := fmt.Sprintf(`{"metadata":{"resourceVersion":%q},"spec":{"location":"c"}}`, first.Metadata.ResourceVersion)
	code, body := tn.do(t, call{method: http.MethodPatch, path: sitesPath + "/s", body: []byte(patch), contentType: "application/merge-patch+json"})
	if code != http.StatusConflict {
		t.Fatalf("stale patch: %d %s, want 409", code, body)
	}
	// So is a DELETE precondition.
	del := fmt.Sprintf(`{"preconditions":{"resourceVersion":%q}}`, first.Metadata.ResourceVersion)
	code, body = tn.do(t, call{method: http.MethodDelete, path: sitesPath + "/s", body: []byte(del)})
	if code != http.StatusConflict {
		t.Fatalf("stale delete: %d %s, want 409", code, body)
	}
	var got object
	tn.mustDo(t, call{method: http.MethodGet, path: sitesPath + "/s"}, http.StatusOK, &got)
	if got.Metadata.ResourceVersion != second.Metadata.ResourceVersion || got.Spec["location"] != "b" {
		t.Errorf("after refused writes: rv %s location %v, want rv %s location b", got.Metadata.ResourceVersion, got.Spec["location"], second.Metadata.ResourceVersion)
	}
}

func TestAPIDiscovery(t *testing.T) {
	t.Parallel()
	tn := startNode(t)

	var groups metav1.APIGroupList
	tn.mustDo(t, call{method: http.MethodGet, path: "/apis"}, http.StatusOK, &groups)
	i := slices.IndexFunc(groups.Groups, func(g metav1.APIGroup) bool { return g.Name == node.CoreGroup })
	if i < 0 {
		t.Fatalf("/apis lists %+v, want %s", groups.Groups, node.CoreGroup)
	}
	if pv := groups.Groups[i].PreferredVersion.GroupVersion; pv != "core.outpost.dev/v1alpha1" {
		t.Errorf("preferred version %q, want core.outpost.dev/v1alpha1", pv)
	}

	var group metav1.APIGroup
	tn.mustDo(t, call{method: http.MethodGet, path: "/apis/core.outpost.dev"}, http.StatusOK, &group)
	if group.Name != node.CoreGroup {
		t.Errorf("/apis/core.outpost.dev names %q", group.Name)
	}

	var resources metav1.APIResourceList
	tn.mustDo(t, call{method: http.MethodGet, path: "/apis/core.outpost.dev/v1alpha1"}, http.StatusOK, &resources)
	var names []string
	for _, r := range resources.APIResources {
		names = append(names, r.Name)
		if r.Name == "sites" && (r.Namespaced || r.Kind != "Site" || !slices.Contains(r.Verbs, "watch")) {
			t.Errorf("sites resource %+v: want cluster-scoped kind Site with watch", r)
		}
	}
	for _, want := range []string{"nodes", "nodes/status", "sites", "sites/status"} {
		if !slices.Contains(names, want) {
			t.Errorf("resources %v lack %s", names, want)
		}
	}
	if slices.Contains(names, "members") {
		t.Errorf("resources %v list the hidden members", names)
	}

	// The server's version needs a token too.
	var v struct {
		GitVersion string `json:"gitVersion"`
	}
	tn.mustDo(t, call{method: http.MethodGet, path: "/version"}, http.StatusOK, &v)
	if v.GitVersion != node.BuildVersion() {
		t.Errorf("/version gitVersion %q, want %q", v.GitVersion, node.BuildVersion())
	}
}

// TestAPITrailingSlash checks that paths that trim to the bare /apis answer
// instead of breaking the connection.
func TestAPITrailingSlash(t *testing.T) {
	t.Parallel()
	tn := startNode(t)
	for _, path := range []string{"/apis/", "/apis//"} {
		code, body := tn.do(t, call{method: http.MethodGet, path: path})
		if code != http.StatusOK && code != http.StatusNotFound {
			t.Errorf("GET %s: %d %s", path, code, body)
		}
	}
}

func TestAPISiteRoundTrip(t *testing.T) {
	t.Parallel()
	tn := startNode(t)

	created := tn.createSite(t, "lab", map[string]string{"env": "test"}, map[string]any{"location": "bench"})
	if created.Metadata.UID == "" || created.Metadata.ResourceVersion == "" || created.Metadata.Generation != 1 || created.Metadata.CreationTimestamp.IsZero() {
		t.Fatalf("created metadata %+v: want uid, resourceVersion, generation 1 and creationTimestamp", created.Metadata)
	}
	if created.APIVersion != "core.outpost.dev/v1alpha1" || created.Kind != "Site" {
		t.Errorf("created %s %s, want core.outpost.dev/v1alpha1 Site", created.APIVersion, created.Kind)
	}

	var got object
	tn.mustDo(t, call{method: http.MethodGet, path: sitesPath + "/lab"}, http.StatusOK, &got)
	if got.Metadata.ResourceVersion != created.Metadata.ResourceVersion || got.Spec["location"] != "bench" {
		t.Errorf("get: rv %s spec %v, want rv %s location bench", got.Metadata.ResourceVersion, got.Spec, created.Metadata.ResourceVersion)
	}

	tn.createSite(t, "other", map[string]string{"env": "prod"}, nil)
	var list struct {
		Kind     string          `json:"kind"`
		Metadata metav1.ListMeta `json:"metadata"`
		Items    []object        `json:"items"`
	}
	tn.mustDo(t, call{method: http.MethodGet, path: sitesPath + "?labelSelector=env%3Dtest"}, http.StatusOK, &list)
	if list.Kind != "SiteList" || len(list.Items) != 1 || list.Items[0].Metadata.Name != "lab" || list.Metadata.ResourceVersion == "" {
		t.Errorf("list env=test: kind %s rv %q items %+v, want SiteList of lab", list.Kind, list.Metadata.ResourceVersion, list.Items)
	}
	tn.mustDo(t, call{method: http.MethodGet, path: sitesPath + "?fieldSelector=metadata.name%3Dother"}, http.StatusOK, &list)
	if len(list.Items) != 1 || list.Items[0].Metadata.Name != "other" {
		t.Errorf("list metadata.name=other: %+v", list.Items)
	}
	tn.mustDo(t, call{method: http.MethodGet, path: sitesPath}, http.StatusOK, &list)
	if len(list.Items) != 3 { // lab, other and the node's own site, hub
		t.Errorf("list: %d items, want lab, other and hub", len(list.Items))
	}

	// PUT with the current resourceVersion.
	got.Spec["location"] = "rack 2"
	body, _ := json.Marshal(got)
	var updated object
	tn.mustDo(t, call{method: http.MethodPut, path: sitesPath + "/lab", body: body}, http.StatusOK, &updated)
	if updated.Spec["location"] != "rack 2" || updated.Metadata.Generation != 2 || rv(t, updated) <= rv(t, got) || updated.Metadata.UID != created.Metadata.UID {
		t.Errorf("updated %+v spec %v: want location rack 2, generation 2, a newer rv, same uid", updated.Metadata, updated.Spec)
	}

	// A merge patch keeps what it does not name.
	var patched object
	tn.mustDo(t, call{method: http.MethodPatch, path: sitesPath + "/lab", body: []byte(`{"metadata":{"labels":{"tier":"edge"}},"spec":{"description":"the lab"}}`), contentType: "application/merge-patch+json"}, http.StatusOK, &patched)
	if patched.Spec["location"] != "rack 2" || patched.Spec["description"] != "the lab" || patched.Metadata.Labels["env"] != "test" || patched.Metadata.Labels["tier"] != "edge" || patched.Metadata.Generation != 3 {
		t.Errorf("patched %+v spec %v: want both spec fields, both labels, generation 3", patched.Metadata, patched.Spec)
	}

	// The status subresource changes status only.
	var withStatus object
	tn.mustDo(t, call{method: http.MethodPatch, path: sitesPath + "/lab/status", body: []byte(`{"status":{"connected":true,"nodeCount":2},"spec":{"location":"ignored"}}`), contentType: "application/merge-patch+json"}, http.StatusOK, &withStatus)
	if withStatus.Status["connected"] != true || withStatus.Spec["location"] != "rack 2" || withStatus.Metadata.Generation != 3 {
		t.Errorf("status patch: status %v spec %v generation %d", withStatus.Status, withStatus.Spec, withStatus.Metadata.Generation)
	}
	// A PUT of the object keeps the status it does not own.
	withStatus.Status = nil
	body, _ = json.Marshal(withStatus)
	tn.mustDo(t, call{method: http.MethodPut, path: sitesPath + "/lab", body: body}, http.StatusOK, &updated)
	if updated.Status["connected"] != true {
		t.Errorf("PUT dropped the status: %v", updated.Status)
	}

	// YAML bodies are accepted too.
	yamlSite := "apiVersion: core.outpost.dev/v1alpha1\nkind: Site\nmetadata:\n  name: from-yaml\nspec:\n  location: yard\n"
	tn.mustDo(t, call{method: http.MethodPost, path: sitesPath, body: []byte(yamlSite), contentType: "application/yaml"}, http.StatusCreated, &got)
	if got.Spec["location"] != "yard" {
		t.Errorf("YAML create: spec %v", got.Spec)
	}

	var deleted object
	tn.mustDo(t, call{method: http.MethodDelete, path: sitesPath + "/lab"}, http.StatusOK, &deleted)
	if deleted.Metadata.Name != "lab" {
		t.Errorf("delete returned %+v", deleted.Metadata)
	}
	code, b := tn.do(t, call{method: http.MethodGet, path: sitesPath + "/lab"})
	if code != http.StatusNotFound || !strings.Contains(string(b), `\"lab\" not found`) {
		t.Errorf("get after delete: %d %s, want 404 naming lab", code, b)
	}
	code, b = tn.do(t, call{method: http.MethodDelete, path: sitesPath + "/lab"})
	if code != http.StatusNotFound {
		t.Errorf("second delete: %d %s, want 404", code, b)
	}
}

func TestAPIFinalizerHoldsDeletion(t *testing.T) {
	t.Parallel()
	tn := startNode(t)
	body := []byte(`{"apiVersion":"core.outpost.dev/v1alpha1","kind":"Site","metadata":{"name":"held","finalizers":["test.outpost.dev/hold"]}}`)
	tn.mustDo(t, call{method: http.MethodPost, path: sitesPath, body: body}, http.StatusCreated, nil)
	var marked object
	tn.mustDo(t, call{method: http.MethodDelete, path: sitesPath + "/held"}, http.StatusOK, &marked)
	if marked.Metadata.DeletionTimestamp == nil {
		t.Fatalf("delete of an object with a finalizer: %+v, want a deletionTimestamp", marked.Metadata)
	}
	tn.mustDo(t, call{method: http.MethodGet, path: sitesPath + "/held"}, http.StatusOK, nil)
	tn.mustDo(t, call{method: http.MethodPatch, path: sitesPath + "/held", body: []byte(`{"metadata":{"finalizers":null}}`), contentType: "application/merge-patch+json"}, http.StatusOK, nil)
	code, b := tn.do(t, call{method: http.MethodGet, path: sitesPath + "/held"})
	if code != http.StatusNotFound {
		t.Errorf("after the last finalizer went: %d %s, want 404", code, b)
	}
}

func rv(t *testing.T, o object) uint64 {
	t.Helper()
	n, err := strconv.ParseUint(o.Metadata.ResourceVersion, 10, 64)
	if err != nil {
		t.Fatalf("resourceVersion %q: %v", o.Metadata.ResourceVersion, err)
	}
	return n
}

// waitNodes waits until the hub's roster lists at least n nodes.
func (tn *testNode) waitNodes(t *testing.T, n int) {
	t.Helper()
	eventually(t, 60*time.Second, func() error {
		var list struct{ Items []object }
		tn.mustDo(t, call{method: http.MethodGet, path: nodesPath}, http.StatusOK, &list)
		if len(list.Items) < n {
			return fmt.Errorf("%d nodes registered, want %d", len(list.Items), n)
		}
		return nil
	})
}

// waitNode waits until the node has registered itself with a heartbeat.
func (tn *testNode) waitNode(t *testing.T) object {
	t.Helper()
	var n object
	eventually(t, 30*time.Second, func() error {
		code, b := tn.do(t, call{method: http.MethodGet, path: nodesPath + "/" + tn.name})
		if code != http.StatusOK {
			return fmt.Errorf("GET node: %d %s", code, b)
		}
		if err := json.Unmarshal(b, &n); err != nil {
			return err
		}
		if n.Status["heartbeatTime"] == nil {
			return fmt.Errorf("node %s has no heartbeat yet: %s", tn.name, b)
		}
		return nil
	})
	return n
}

func TestAPINodeRegistersItself(t *testing.T) {
	t.Parallel()
	tn := startNode(t)
	n := tn.waitNode(t)
	want := map[string]any{"site": "hub", "role": "hub", "version": node.BuildVersion()}
	for k, v := range want {
		if n.Status[k] != v {
			t.Errorf("status.%s = %v, want %v", k, n.Status[k], v)
		}
	}
	if n.Status["state"] == nil || n.Status["state"] == "" {
		t.Errorf("status.state is empty: %v", n.Status)
	}
	hb, err := time.Parse(time.RFC3339, fmt.Sprint(n.Status["heartbeatTime"]))
	if err != nil {
		t.Fatalf("status.heartbeatTime %v: %v", n.Status["heartbeatTime"], err)
	}
	if d := time.Since(hb); d > time.Minute || d < -time.Minute {
		t.Errorf("status.heartbeatTime %s is %s away from now", hb, d)
	}
	if raft, _ := n.Status["raft"].(map[string]any); raft["state"] != "Leader" {
		t.Errorf("status.raft %v, want state Leader", n.Status["raft"])
	}
	// The node's site was created on bootstrap.
	tn.mustDo(t, call{method: http.MethodGet, path: sitesPath + "/hub"}, http.StatusOK, nil)
}

func TestAPITable(t *testing.T) {
	t.Parallel()
	tn := startNode(t)
	tn.waitNode(t)

	var tbl metav1.Table
	tn.mustDo(t, call{method: http.MethodGet, path: nodesPath, accept: tableMedia}, http.StatusOK, &tbl)
	if tbl.Kind != "Table" || tbl.APIVersion != "meta.k8s.io/v1" {
		t.Errorf("table is %s %s", tbl.APIVersion, tbl.Kind)
	}
	var cols, narrow []string
	for _, c := range tbl.ColumnDefinitions {
		cols = append(cols, c.Name)
		if c.Priority == 0 {
			narrow = append(narrow, c.Name)
		}
	}
	if want := []string{"Name", "Site", "Role", "State", "Version", "Age"}; !slices.Equal(narrow, want) {
		t.Errorf("priority-0 columns %v, want %v", narrow, want)
	}
	if cols[0] != "Name" || cols[len(cols)-1] != "Age" {
		t.Errorf("columns %v: want Name first and Age last", cols)
	}
	if len(tbl.Rows) != 1 {
		t.Fatalf("%d rows, want 1", len(tbl.Rows))
	}
	cells := tbl.Rows[0].Cells
	if len(cells) != len(cols) {
		t.Fatalf("row %v has %d cells for %d columns", cells, len(cells), len(cols))
	}
	if cells[0] != tn.name || cells[1] != "hub" || cells[2] != "hub" || cells[3] == "<none>" || cells[4] != node.BuildVersion() {
		t.Errorf("row %v, want %s hub hub STATE %s ...", cells, tn.name, node.BuildVersion())
	}
	var meta metav1.PartialObjectMetadata
	if err := json.Unmarshal(tbl.Rows[0].Object.Raw, &meta); err != nil || meta.Name != tn.name {
		t.Errorf("row object %s: want the node's PartialObjectMetadata (%v)", tbl.Rows[0].Object.Raw, err)
	}

	// One object as a table; sites' columns.
	tn.createSite(t, "tbl", nil, map[string]any{"location": "shelf"})
	tbl = metav1.Table{}
	tn.mustDo(t, call{method: http.MethodGet, path: sitesPath + "/tbl?includeObject=None", accept: tableMedia + ", application/json"}, http.StatusOK, &tbl)
	cols = cols[:0]
	for _, c := range tbl.ColumnDefinitions {
		cols = append(cols, c.Name)
	}
	if want := []string{"Name", "Connected", "Nodes", "Leader", "Last-Seen", "Location", "Age"}; !slices.Equal(cols, want) {
		t.Errorf("site columns %v, want %v", cols, want)
	}
	if len(tbl.Rows) != 1 || tbl.Rows[0].Cells[0] != "tbl" || tbl.Rows[0].Cells[5] != "shelf" || tbl.Rows[0].Object.Raw != nil {
		t.Errorf("site rows %+v: want tbl at shelf, without the object", tbl.Rows)
	}
}

func TestHealthAndMetrics(t *testing.T) {
	t.Parallel()
	tn := startNode(t)
	for _, path := range []string{"/healthz", "/readyz"} {
		// No token: probes and scrapers have none.
		code, b := tn.do(t, call{method: http.MethodGet, path: path, auth: "-"})
		if code != http.StatusOK {
			t.Errorf("GET %s: %d %s", path, code, b)
		}
	}
	code, b := tn.do(t, call{method: http.MethodGet, path: "/metrics", auth: "-"})
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", code, b)
	}
	for _, want := range []string{"outpost_raft_term ", "outpost_raft_applied_index ", `outpost_raft_state{state="Leader"} 1`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestControlSocketStatus(t *testing.T) {
	t.Parallel()
	tn := startNode(t)
	st, err := node.ReadLocalStatus(filepath.Join(tn.dir, node.SocketName))
	if err != nil {
		t.Fatal(err)
	}
	if st.Name != tn.name || st.Site != "hub" || st.Role != "hub" {
		t.Errorf("status name %q site %q role %q, want %s hub hub", st.Name, st.Site, st.Role, tn.name)
	}
	if st.Raft.State != "Leader" || st.Raft.LeaderID != tn.name || st.Raft.Term == 0 || len(st.Raft.Peers) != 1 {
		t.Errorf("raft %+v, want this node leading a group of one", st.Raft)
	}
	if "https://"+st.APIAddr != tn.url {
		t.Errorf("apiAddr %q, want %s", st.APIAddr, tn.url)
	}
	fi, err := os.Stat(filepath.Join(tn.dir, node.SocketName))
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("socket mode %o, want 600", perm)
	}
	fi, err = os.Stat(filepath.Join(tn.dir, "admin.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("admin.yaml mode %o, want 600", perm)
	}
}

func TestSecondNodeOnDataDirFails(t *testing.T) {
	t.Parallel()
	tn := startNode(t)
	cfg := node.DefaultConfig()
	cfg.Name = "node-2"
	cfg.DataDir = tn.dir
	cfg.APIAddr = "127.0.0.1:0"
	cfg.BindAddr = "127.0.0.1"
	if _, err := newNode(t, cfg, nil); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second node.New on %s: %v, want an in-use error", tn.dir, err)
	}
}

func TestConfigValidateNamesFlags(t *testing.T) {
	t.Parallel()
	cfg := node.DefaultConfig()
	cfg.Name = "Bad_Name"
	cfg.APIAddr = "nope"
	cfg.LogLevel = "loud"
	cfg.HeartbeatInterval = 0
	cfg.OTARetention = -time.Hour
	cfg.KeepAlive = 2 * cfg.IdleTimeout
	err := cfg.Validate()
	if err == nil {
		t.Fatal("Validate: nil")
	}
	for _, flag := range []string{"--name", "--api-addr", "--log-level", "--heartbeat-interval", "--ota-retention", "--keep-alive"} {
		if !strings.Contains(err.Error(), flag) {
			t.Errorf("error %q does not name %s", err, flag)
		}
	}
}

// TestReadsDoNotWaitForAWrite checks that linearizable reads answer at once
// on a fresh node and after a restart. Before consensus.lastFSMIndex they
// waited for the next write whenever the commit index ended in the new
// leader's no-op or barrier, which Raft never hands a BatchingFSM; the
// roster's own writes now usually hide that within a second.
func TestReadsDoNotWaitForAWrite(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	quiet := func(c *node.Config) {
		c.DataDir = dir
		c.HeartbeatInterval = time.Hour
	}
	tn := startNode(t, quiet)
	timedGet := func(tn *testNode, path string) object {
		t.Helper()
		start := time.Now()
		var o object
		tn.mustDo(t, call{method: http.MethodGet, path: path}, http.StatusOK, &o)
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("GET %s took %s", path, d)
		}
		return o
	}
	timedGet(tn, sitesPath+"/hub")
	kept := tn.createSite(t, "kept", nil, map[string]any{"location": "vault"})
	tn.stop(t)

	tn = startNode(t, quiet)
	got := timedGet(tn, sitesPath+"/kept")
	if got.Metadata.ResourceVersion != kept.Metadata.ResourceVersion || got.Spec["location"] != "vault" {
		t.Errorf("after restart: rv %s spec %v, want rv %s location vault", got.Metadata.ResourceVersion, got.Spec, kept.Metadata.ResourceVersion)
	}
}
