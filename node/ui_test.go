package node_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/outpost-mesh/outpost/consensus"
	imagesapi "github.com/outpost-mesh/outpost/images/api"
	"github.com/outpost-mesh/outpost/node"
)

// TestUIAssetsAndWhoAmI checks what the dashboard's page and the API it
// asks about the caller answer, without a browser.
func TestUIAssetsAndWhoAmI(t *testing.T) {
	t.Parallel()
	tn := startNode(t)
	for _, tc := range []struct {
		path, wantType string
		want           int
	}{
		{"/ui/", "text/html; charset=utf-8", http.StatusOK},
		{"/ui/app.js", "text/javascript; charset=utf-8", http.StatusOK},
		{"/ui/style.css", "text/css; charset=utf-8", http.StatusOK},
		{"/ui/nothing.js", "", http.StatusNotFound},
		{"/ui/../admin.yaml", "", http.StatusNotFound},
	} {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, tn.url+tc.path, nil)
		resp, err := tn.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("GET %s: %d, want %d", tc.path, resp.StatusCode, tc.want)
		}
		if tc.want == http.StatusOK {
			if got := resp.Header.Get("Content-Type"); got != tc.wantType {
				t.Errorf("GET %s: Content-Type %q, want %q", tc.path, got, tc.wantType)
			}
			if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
				t.Errorf("GET %s: Content-Security-Policy %q lets in other scripts or framing", tc.path, csp)
			}
		}
	}
	code, _ := tn.do(t, call{method: http.MethodGet, path: "/outpost/v1/whoami", auth: "-"})
	if code != http.StatusUnauthorized {
		t.Errorf("whoami without a token: %d, want 401", code)
	}
	var me struct{ Name, Role string }
	tn.mustDo(t, call{method: http.MethodGet, path: "/outpost/v1/whoami"}, http.StatusOK, &me)
	if me.Role != "admin" || me.Name == "" || !strings.HasPrefix(tn.token, me.Name+".") {
		t.Errorf("whoami with the admin token = %+v, want the token's name and role admin", me)
	}
}

// screenshotDir is where the dashboard tests leave their screenshots: CI
// keeps .build/screenshots/ of the repository.
func screenshotDir(t *testing.T) string {
	dir := os.Getenv("OUTPOST_SCREENSHOTS")
	if dir == "" {
		dir = filepath.Join("..", ".build", "screenshots")
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// browser is one headless Chromium tab driven over the DevTools protocol.
type browser struct {
	t        *testing.T
	ctx      context.Context
	shots    string
	mu       sync.Mutex
	jsErrors []string
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("chromium is not installed: scripts/test-deps.sh installs it")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // CI runs as root
		chromedp.WindowSize(1280, 900),
		// The hub's certificate is signed by its own mesh CA; what the
		// browser tests is the page, not the TLS chain.
		chromedp.Flag("ignore-certificate-errors", true),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	b := &browser{t: t, ctx: ctx, shots: screenshotDir(t)}
	err = chromedp.Listen(ctx, func(ev any) { // starts the browser
		var msg string
		switch ev := ev.(type) {
		case *runtime.EventExceptionThrown:
			d := ev.ExceptionDetails
			msg = fmt.Sprintf("%s at %s:%d", d.Text, d.URL, d.LineNumber)
			if d.Exception != nil {
				msg += ": " + d.Exception.Description
			}
		case *runtime.EventConsoleAPICalled:
			if ev.Type != runtime.ConsoleAPICalledTypeError {
				return
			}
			for _, a := range ev.Args {
				msg += " " + string(a.Value) + a.Description
			}
		default:
			return
		}
		b.mu.Lock()
		b.jsErrors = append(b.jsErrors, msg)
		b.mu.Unlock()
	})
	if err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return b
}

func (b *browser) do(steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 45*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.t.Fatalf("browser: %v\npage text: %s", err, b.text())
	}
}

// waitFor polls a JavaScript predicate until it is true.
func (b *browser) waitFor(what, predicate string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 45*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](predicate, chromedp.WithPollingInterval(50*time.Millisecond))); err != nil {
		b.t.Fatalf("waiting for %s (%s): %v\npage text: %s", what, predicate, err, b.text())
	}
}

// click clicks the element that matches sel when it is there, looked up
// at the moment of the click: a live update may have redrawn it since.
func (b *browser) click(sel string) {
	b.t.Helper()
	b.waitFor("a click on "+sel, `(() => { const e = document.querySelector('`+sel+`'); if (!e) return false; e.click(); return true })()`)
}

func (b *browser) eval(expr string) string {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](expr))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

func (b *browser) text() string {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	v, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
	return v
}

func (b *browser) screenshot(name string) {
	b.t.Helper()
	png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	p := filepath.Join(b.shots, name+".png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("screenshot: %s", p)
}

func (b *browser) checkNoJSErrors() {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.jsErrors) > 0 {
		b.t.Errorf("the page reported errors:\n%s", strings.Join(b.jsErrors, "\n"))
	}
}

// post creates an object through the generic API.
func (tn *testNode) post(t *testing.T, path string, obj any) {
	t.Helper()
	b, _ := json.Marshal(obj)
	tn.mustDo(t, call{method: http.MethodPost, path: path, body: b}, http.StatusCreated, nil)
}

// putStatus replaces an object's status through its status subresource.
func (tn *testNode) putStatus(t *testing.T, path string, status map[string]any) {
	t.Helper()
	var o map[string]any
	tn.mustDo(t, call{method: http.MethodGet, path: path}, http.StatusOK, &o)
	o["status"] = status
	b, _ := json.Marshal(o)
	tn.mustDo(t, call{method: http.MethodPut, path: path + "/status", body: b}, http.StatusOK, nil)
}

// seedFleet creates sites with locations and nodes in them: edge-1..5 in
// the hub's own site, which never come up (their tasks' devices go
// Unreachable), and two nodes in each other site.
func seedFleet(t *testing.T, tn *testNode) {
	t.Helper()
	now := time.Now().UTC().Format(time.RFC3339)
	sites := []struct {
		name, location string
		status         map[string]any
	}{
		{"berlin", "52.52,13.40", map[string]any{"connected": true, "leader": "berlin-1", "nodeCount": 2, "lastSeen": now, "versions": []string{"v0.9.0"}}},
		{"paris", "48.86,2.35", map[string]any{"connected": false, "leader": "paris-1", "nodeCount": 2, "lastSeen": now}},
		{"madrid", "40.42,-3.70", map[string]any{"connected": true, "leader": "madrid-1", "nodeCount": 2, "lastSeen": now, "versions": []string{"v0.9.0"}}},
		{"warehouse-7", "", nil},
	}
	for _, s := range sites {
		tn.post(t, sitesPath, map[string]any{"apiVersion": "core.outpost.dev/v1alpha1", "kind": "Site",
			"metadata": map[string]any{"name": s.name}, "spec": map[string]any{"location": s.location}})
		if s.status != nil {
			tn.putStatus(t, sitesPath+"/"+s.name, s.status)
		}
	}
	node := func(name, site, state, arch string) {
		tn.post(t, nodesPath, map[string]any{"apiVersion": "core.outpost.dev/v1alpha1", "kind": "Node",
			"metadata": map[string]any{"name": name, "labels": map[string]string{"outpost.dev/site": site}}, "spec": map[string]any{}})
		tn.putStatus(t, nodesPath+"/"+name, map[string]any{"site": site, "role": "edge", "state": state, "version": "v0.9.0",
			"os": "linux", "arch": arch, "lastSeen": now})
	}
	for i := 1; i <= 5; i++ {
		node(fmt.Sprintf("edge-%d", i), "hub", "dead", "arm64")
	}
	for _, s := range []string{"berlin", "paris", "madrid"} {
		node(s+"-1", s, "alive", "amd64")
		node(s+"-2", s, map[string]string{"berlin": "alive", "paris": "unknown", "madrid": "suspect"}[s], "arm64")
	}
}

func uiTask(name string, targets map[string]any, step map[string]any, extra map[string]any) map[string]any {
	spec := map[string]any{"targets": targets, "steps": []any{step}}
	for k, v := range extra {
		spec[k] = v
	}
	return map[string]any{"apiVersion": "ota.outpost.dev/v1alpha1", "kind": "Task", "metadata": map[string]any{"name": name}, "spec": spec}
}

// TestDashboard drives the dashboard in headless Chromium through sign-in,
// the sites map, a running task whose progress moves live, a failed task's
// grouped failures with retry and cancel, clusters' conditions, images, and
// a viewer who gets no operator buttons. Screenshots go to
// .build/screenshots/.
func TestDashboard(t *testing.T) {
	b := newBrowser(t)
	// Its proxy cluster's tunnel ports: not the default range, which
	// another package's hub may hold at the same time.
	tn := startNode(t, func(c *node.Config) { c.TunnelPorts = freeTunnelPorts(t) })
	tn.waitNode(t)
	seedFleet(t, tn)

	// A task whose device on this hub runs until the test lets it finish,
	// beside devices in sites that never connect (queued), and naming a
	// site with no nodes (not found).
	release := filepath.Join(t.TempDir(), "release")
	tn.post(t, tasksPath, uiTask("rollout-web",
		map[string]any{"nodes": []string{tn.name}, "sites": []string{"berlin", "paris", "madrid", "lisbon"}},
		map[string]any{"name": "wait", "type": "exec", "script": fmt.Sprintf("for i in $(seq 1200); do [ -f %s ] && exit 0; sleep 0.05; done; exit 1", release)}, nil))
	// A task that fails on this hub with some output, and whose five
	// other devices never come up: two groups of identical outcomes.
	tn.post(t, tasksPath, uiTask("patch-openssl",
		map[string]any{"nodes": []string{tn.name, "edge-1", "edge-2", "edge-3", "edge-4", "edge-5"}},
		map[string]any{"name": "upgrade", "type": "exec", "script": "echo 'E: Unable to locate package openssl-3.9' >&2; exit 100"},
		map[string]any{"deliveryDeadline": "1s"}))

	// Sign in: a wrong token is refused on the page, the admin's accepted.
	b.do(chromedp.Navigate(tn.url + "/ui/"))
	b.waitFor("the sign-in form", `!!document.querySelector('#token')`)
	b.screenshot("01-sign-in")
	b.do(chromedp.SendKeys("#token", "nobody.nothing"), chromedp.Click("#signin"))
	b.waitFor("the refusal", `document.querySelector('.signin .error').textContent.includes('not valid')`)
	b.eval(`document.querySelector('#token').value = ''`)
	start := time.Now()
	b.do(chromedp.SendKeys("#token", tn.token), chromedp.Click("#signin"))
	b.waitFor("the sites map", `document.querySelectorAll('svg.map [data-site]').length === 5`)
	b.waitFor("node rows", `document.body.innerText.includes('madrid-2')`)
	// Each node's state, version, arch and when it was last seen.
	b.waitFor("a node's row", `[...document.querySelectorAll('tbody tr')].some((r) =>
		/^madrid-2\s+madrid\s+edge\s+suspect\s+v0\.9\.0\s+linux\/arm64\s+\S+\s+\d+s( ago)?$/.test(r.innerText.trim()))`)
	t.Logf("sign-in to a drawn sites page: %v (informational)", time.Since(start).Round(time.Millisecond))
	if who := b.eval(`document.querySelector('#who').textContent`); !strings.Contains(who, "admin") {
		t.Errorf("header shows %q, want the admin role", who)
	}
	for site, fill := range map[string]string{"berlin": "fill-ok", "paris": "fill-bad", "madrid": "fill-warn", "warehouse-7": "fill-idle"} {
		got := b.eval(fmt.Sprintf(`document.querySelector('svg.map [data-site=%q] :is(rect,circle)').getAttribute('class')`, site))
		if got != fill {
			t.Errorf("site %s drawn as %q, want %q", site, got, fill)
		}
	}
	b.screenshot("02-sites")

	b.do(chromedp.Navigate(tn.url + "/ui/#/tasks"))
	b.waitFor("the task list", `document.querySelectorAll('tbody tr').length === 2 && !!document.querySelector('tbody .seg-running') && !!document.querySelector('tbody .seg-unreachable')`)
	b.screenshot("03-tasks")

	// A running task: the bar shows one device running, six queued; the
	// page follows the device to Succeeded through the watch, unreloaded.
	b.do(chromedp.Navigate(tn.url + "/ui/#/tasks/rollout-web"))
	b.waitFor("one running device", `document.querySelector('[data-count=running]')?.textContent === '1' && document.querySelector('[data-count=queued]')?.textContent === '6'`)
	b.waitFor("the targets not found", `document.querySelector('#notfound')?.textContent.startsWith('Not found, not run: site lisbon')`)
	if n := b.eval(`String(document.querySelectorAll('#progress .bar span').length)`); n != "2" {
		t.Errorf("progress bar has %s segments, want 2 (running, queued)", n)
	}
	b.waitFor("the per-site breakdown", `(() => {
		const card = [...document.querySelectorAll('.card')].find((c) => c.querySelector('h2')?.textContent === 'Sites');
		const rows = card ? [...card.querySelectorAll('tbody tr')].map((r) => r.innerText.replace(/\s+/g, ' ').trim()) : [];
		return rows.length === 4 && ['berlin 0/2', 'hub 0/1 1', 'madrid 0/2', 'paris 0/2'].every((w, i) => rows[i].startsWith(w));
	})()`)
	b.screenshot("04-task-running")
	b.eval(`window.__sameDocument = 'yes'`)
	if err := os.WriteFile(release, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	b.waitFor("the device's success, live", `document.querySelector('[data-count=succeeded]')?.textContent === '1'`)
	if b.eval(`window.__sameDocument || ''`) != "yes" {
		t.Error("the page reloaded to show the change; want a live update")
	}

	// Cancel asks for a confirmation, then cancels.
	b.click("#cancel")
	b.waitFor("the confirmation", `document.querySelector('#cancel').textContent === 'Confirm cancel'`)
	b.click("#cancel")
	eventually(t, 30*time.Second, func() error {
		var task struct{ Spec struct{ Canceled bool } }
		tn.mustDo(t, call{method: http.MethodGet, path: tasksPath + "/rollout-web"}, http.StatusOK, &task)
		if !task.Spec.Canceled {
			return fmt.Errorf("rollout-web not canceled")
		}
		return nil
	})

	// A failed task: the failures are grouped where identical, with the
	// output; retry re-runs the failed devices.
	b.do(chromedp.Navigate(tn.url + "/ui/#/tasks/patch-openssl"))
	b.waitFor("two failure groups", `document.querySelectorAll('#failures .group').length === 2`)
	groups := b.eval(`[...document.querySelectorAll('#failures .group')].map(g => g.innerText.replace(/\s+/g, ' ')).join(' | ')`)
	for _, want := range []string{"5 devices", "edge-1", "edge-5", "1 device", "Unable to locate package openssl-3.9", "exit 100"} {
		if !strings.Contains(groups, want) {
			t.Errorf("failure groups %q do not show %q", groups, want)
		}
	}
	b.waitFor("the retry button", `!!document.querySelector('#retry')`)
	b.screenshot("05-task-failures")
	b.click("#retry")
	eventually(t, 30*time.Second, func() error {
		var task struct{ Spec struct{ Retry int } }
		tn.mustDo(t, call{method: http.MethodGet, path: tasksPath + "/patch-openssl"}, http.StatusOK, &task)
		if task.Spec.Retry != 1 {
			return fmt.Errorf("patch-openssl spec.retry = %d, want 1", task.Spec.Retry)
		}
		return nil
	})

	testClusterConditions(t, b, tn)

	const imagesAPI = "/apis/images.outpost.dev/v1alpha1/"
	tn.post(t, imagesAPI+"clusterregistries", map[string]any{"apiVersion": "images.outpost.dev/v1alpha1", "kind": "ClusterRegistry",
		"metadata": map[string]any{"name": "local"}, "spec": map[string]any{"domain": "127.0.0.1:5999", "insecure": true}})
	tn.post(t, imagesAPI+"clusterrepositories", map[string]any{"apiVersion": "images.outpost.dev/v1alpha1", "kind": "ClusterRepository",
		"metadata": map[string]any{"name": "nginx"}, "spec": map[string]any{"registryName": "local", "repositoryName": "library/nginx"}})
	// Each node's cache figures, as the hub writes them from its sites'
	// reports (the kind is read-only through the API); the hub's image
	// controller sums the repository's pulls from them.
	nginx := func(pulls uint64) []imagesapi.RepositoryUsage {
		return []imagesapi.RepositoryUsage{{Registry: "127.0.0.1:5999", Repository: "library/nginx", Artifacts: 3, Pulls: pulls, SizeBytes: 70 << 20}}
	}
	for name, st := range map[string]imagesapi.ImageStatsStatus{
		"berlin-1": {Site: "berlin", BlobHits: 30, BlobMisses: 10, BytesSaved: 2 << 30, BytesFromOrigin: 1 << 30, Repositories: nginx(30)},
		"berlin-2": {Site: "berlin", BlobHits: 15, BlobMisses: 5, BytesSaved: 1 << 30, Repositories: nginx(10)},
		"madrid-1": {Site: "madrid", BlobHits: 1, BlobMisses: 3, BytesSaved: 512 << 20, Repositories: nginx(2)},
	} {
		obj := &consensus.Object{ObjectMeta: metav1.ObjectMeta{Name: name}}
		if err := obj.SetStatus(st); err != nil {
			t.Fatal(err)
		}
		if _, err := tn.node.Group().Store().CreateWithStatus(t.Context(), &imagesapi.ImageStatsKind, obj); err != nil {
			t.Fatal(err)
		}
	}
	b.do(chromedp.Navigate(tn.url + "/ui/#/images"))
	b.waitFor("the images page", `document.body.innerText.includes('library/nginx') && !document.body.innerText.includes('Loading')`)
	// Pulls, the hit ratio and the bytes saved, overall and by site.
	b.waitFor("the image figures", `(() => {
		const stat = (label) => [...document.querySelectorAll('.stat')].find((s) => s.querySelector('span')?.textContent === label)?.querySelector('b')?.textContent;
		const card = [...document.querySelectorAll('.card')].find((c) => c.querySelector('h2')?.textContent === 'Cache by site');
		const rows = card ? [...card.querySelectorAll('tbody tr')].map((r) => r.innerText.replace(/\s+/g, ' ').trim()) : [];
		return stat('Pulls') === '42' && stat('Cache hit ratio') === '71.9%' && stat('Saved (from site peers)') === '3.5 GiB' &&
			rows.length === 3 && rows[0].startsWith('berlin 2 75% 3.0 GiB') && rows[1].startsWith('hub 1 0% 0 B') && rows[2].startsWith('madrid 1 25% 512 MiB') &&
			[...document.querySelectorAll('.card')].some((c) => /library\/nginx\s+42\s+3\s+70 MiB\s+3/.test(c.innerText));
	})()`)
	b.screenshot("07-images")

	// A viewer: signs in, sees the failed task, and no operator button.
	viewer := viewerToken(t, tn, "ui-viewer", "viewer")
	b.do(chromedp.Click("#signout"))
	b.waitFor("the sign-in form", `!!document.querySelector('#token')`)
	b.do(chromedp.SendKeys("#token", viewer), chromedp.Click("#signin"))
	b.waitFor("the viewer's header", `document.querySelector('#who').textContent.includes('viewer')`)
	b.do(chromedp.Navigate(tn.url + "/ui/#/tasks/patch-openssl"))
	b.waitFor("the retried task failed again", `document.querySelectorAll('#failures .group').length === 2 && document.body.innerText.includes('attempt 2') && document.querySelector('[data-count=unreachable]')?.textContent === '5'`)
	if got := b.eval(`String(!!document.querySelector('#retry') || !!document.querySelector('#cancel'))`); got != "false" {
		t.Error("a viewer is shown the retry or cancel button")
	}
	b.screenshot("08-viewer-task")

	// An operator is shown retry (the task failed again), as an admin is.
	b.do(chromedp.Click("#signout"))
	b.waitFor("the sign-in form", `!!document.querySelector('#token')`)
	b.do(chromedp.SendKeys("#token", viewerToken(t, tn, "ui-operator", "operator")), chromedp.Click("#signin"))
	b.waitFor("the operator's header", `document.querySelector('#who').textContent.includes('operator')`)
	b.do(chromedp.Navigate(tn.url + "/ui/#/tasks/patch-openssl"))
	b.waitFor("the operator's retry button", `document.querySelectorAll('#failures .group').length === 2 && !!document.querySelector('#retry')`)
	b.checkNoJSErrors()
}

// testClusterConditions shows clusters' conditions as stages, when this
// build serves a Cluster kind: a direct cluster whose API server does not
// answer, and a proxy cluster whose agent never connects.
func testClusterConditions(t *testing.T, b *browser, tn *testNode) {
	t.Helper()
	var groups struct{ Groups []struct{ Name string } }
	tn.mustDo(t, call{method: http.MethodGet, path: "/apis"}, http.StatusOK, &groups)
	served := false
	for _, g := range groups.Groups {
		served = served || g.Name == "clusters.outpost.dev"
	}
	b.do(chromedp.Navigate(tn.url + "/ui/#/clusters"))
	if !served {
		b.waitFor("the no-clusters note", `document.body.innerText.includes('serves no Cluster kind')`)
		return
	}
	const clustersPath = "/apis/clusters.outpost.dev/v1alpha1/clusters"
	kubeconfig := "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\nusers: [{name: u, user: {token: t}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\n"
	tn.post(t, clustersPath, map[string]any{"apiVersion": "clusters.outpost.dev/v1alpha1", "kind": "Cluster",
		"metadata": map[string]any{"name": "plant-k3s"},
		"spec":     map[string]any{"provider": "k3s", "connection": map[string]any{"type": "direct", "kubeconfig": []byte(kubeconfig)}}})
	sum := sha256.Sum256([]byte("agent-secret"))
	tn.post(t, clustersPath, map[string]any{"apiVersion": "clusters.outpost.dev/v1alpha1", "kind": "Cluster",
		"metadata": map[string]any{"name": "store-eks"},
		"spec":     map[string]any{"provider": "eks", "connection": map[string]any{"type": "proxy", "tokenHash": hex.EncodeToString(sum[:])}}})
	b.waitFor("both clusters' chains", `['plant-k3s', 'store-eks'].every(n => document.querySelectorAll('[data-cluster="' + n + '"] .stage').length >= 2)`)
	b.waitFor("an initialized stage", `!!document.querySelector('[data-cluster="store-eks"] .stage[data-type=Initialized][data-status=True]')`)
	b.waitFor("a failed stage explained", `[...document.querySelectorAll('.blocked')].length === 2`)
	b.screenshot("06-cluster-conditions")
}

// viewerToken makes an AccessToken with role through the API and returns
// its bearer token, "<name>.<secret>".
func viewerToken(t *testing.T, tn *testNode, name, role string) string {
	t.Helper()
	secret := "s3cret-" + name
	sum := sha256.Sum256([]byte(secret))
	tn.post(t, "/apis/core.outpost.dev/v1alpha1/accesstokens", map[string]any{
		"apiVersion": "core.outpost.dev/v1alpha1", "kind": "AccessToken",
		"metadata": map[string]any{"name": name},
		"spec":     map[string]any{"role": role, "secretHash": hex.EncodeToString(sum[:])},
	})
	return name + "." + secret
}
