package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-mesh/outpost/clusters"
	"github.com/outpost-mesh/outpost/internal/kubetest"
)

// TestClusterCLI registers clusters with the real binary against a real
// kube-apiserver: a direct cluster reaches Ready, `outpost cluster
// kubeconfig` writes a file real kubectl uses to list namespaces and create
// a ConfigMap; `create --proxy` prints the token alone; the agent manifest
// applies to the real API server as it is; bad
// input is refused with the flag or field named.
func TestClusterCLI(t *testing.T) {
	t.Parallel()
	bin := outpostBinary(t)
	_, kubectl, _, err := kubetest.Binaries()
	if err != nil {
		t.Fatal(err)
	}
	_, kc := kubetest.ForTest(t)
	port := freePort(t, "tcp")
	d := startDaemon(t, bin, t.TempDir(), "--tunnel-ports", fmt.Sprintf("%d-%d", port, port+1))
	files := t.TempDir()
	kcPath := writeFile(t, files, "edge.yaml", string(kc))
	kubectlRun := func(kubeconfig, stdin string, args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, kubectl, append([]string{"--kubeconfig", kubeconfig}, args...)...)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}

	d.ok(t, "", "cluster", "create", "edge", "--kubeconfig", kcPath, "--provider", "kubeadm")
	deadline := time.Now().Add(60 * time.Second)
	for {
		var obj struct {
			Status clusters.ClusterStatus `json:"status"`
		}
		_ = json.Unmarshal([]byte(d.ok(t, "", "get", "cluster", "edge", "-o", "json")), &obj)
		ready := false
		for _, c := range obj.Status.Conditions {
			ready = ready || (c.Type == clusters.ConditionReady && c.Status == "True")
		}
		if ready {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster edge not Ready within 60s: %+v", obj.Status.Conditions)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if out := d.ok(t, "", "get", "cluster", "edge", "-o", "yaml"); strings.Contains(out, "kubeconfig") || strings.Contains(out, kubetest.AdminToken) {
		t.Errorf("get cluster shows the kubeconfig:\n%s", out)
	}

	out := filepath.Join(files, "from-hub.yaml")
	d.ok(t, "", "cluster", "kubeconfig", "edge", "-f", out)
	if fi, err := os.Stat(out); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("kubeconfig file: %v, mode %v; want 0600", err, fi)
	}
	if ns := kubectlRun(out, "", "get", "namespaces", "-o", "name"); !strings.Contains(ns, "namespace/kube-system") {
		t.Errorf("kubectl get namespaces:\n%s", ns)
	}
	kubectlRun(out, "", "create", "configmap", "from-outpost", "--from-literal=k=v")
	if cm := kubectlRun(out, "", "get", "configmap", "from-outpost", "-o", "jsonpath={.data.k}"); cm != "v" {
		t.Errorf("configmap data %q, want v", cm)
	}

	token := d.ok(t, "", "cluster", "create", "far", "--proxy")
	if lines := strings.Split(strings.TrimSpace(token), "\n"); len(lines) != 1 {
		t.Fatalf("create --proxy printed %q, want the token alone", token)
	}
	if _, _, err := clusters.ParseAgentToken(strings.TrimSpace(token)); err != nil {
		t.Errorf("printed token: %v", err)
	}
	manifest := d.ok(t, "", "cluster", "agent-manifest", "far", "--token", strings.TrimSpace(token), "--hub", "hub.example:7443", "--image", "registry.example/outpost:test")
	for _, want := range []string{"kind: Namespace", "kind: ServiceAccount", "kind: ClusterRoleBinding", "kind: Secret", "kind: Deployment", "--cluster", "far", "registry.example/outpost:test"} {
		if !strings.Contains(manifest, want) {
			t.Errorf("agent manifest lacks %q", want)
		}
	}
	if got := kubectlRun(kcPath, manifest, "apply", "-f", "-"); strings.Count(got, " created") != 5 {
		t.Errorf("kubectl apply of the agent manifest:\n%s", got)
	}
	args := kubectlRun(kcPath, "", "-n", "outpost-system", "get", "deployment", "outpost-agent", "-o", "jsonpath={.spec.template.spec.containers[0].args}")
	_, fp, _ := clusters.ParseAgentToken(strings.TrimSpace(token))
	if !strings.Contains(args, `"--cluster","far"`) || !strings.Contains(args, `"--in-cluster"`) || !strings.Contains(args, `"--ca-fingerprint","`+fp+`"`) {
		t.Errorf("agent args as applied: %s; want --cluster far, --in-cluster and --ca-fingerprint %s", args, fp)
	}

	bad := writeFile(t, files, "bad.yaml", "clusters: [}")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"cluster", "create", "x"}, "--kubeconfig FILE"},
		{[]string{"cluster", "create", "x", "--proxy", "--kubeconfig", kcPath}, "contradict"},
		{[]string{"cluster", "create", "x", "--kubeconfig", bad}, "spec.connection.kubeconfig"},
		{[]string{"cluster", "create", "x", "--kubeconfig", filepath.Join(files, "missing.yaml")}, "--kubeconfig"},
		{[]string{"cluster", "agent-manifest", "far", "--token", "garbage"}, "--token"},
		{[]string{"cluster", "agent-manifest", "far", "--token", "oct_x." + strings.Repeat("0", 64)}, "another hub"},
	} {
		if r := d.fails(t, tc.args...); !strings.Contains(r.stderr, tc.want) {
			t.Errorf("outpost %s: stderr %q does not mention %s", strings.Join(tc.args, " "), r.stderr, tc.want)
		}
	}
	if out := d.ok(t, "", "get", "clusters", "-o", "name"); strings.Contains(out, "/x\n") {
		t.Errorf("bad input created a cluster:\n%s", out)
	}
}

// TestNodeClusterFlags: the cluster flags of `outpost node` are checked
// before anything starts, each error naming its flag.
func TestNodeClusterFlags(t *testing.T) {
	t.Parallel()
	bin := outpostBinary(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--cluster", "store-1"}, "--kubeconfig"},
		{[]string{"--cluster", "store-1", "--kubeconfig", "/x"}, "--cluster-token"},
		{[]string{"--kubeconfig", "/x"}, "give --cluster NAME"},
		{[]string{"--cluster-grace", "0s"}, "--cluster-grace"},
		{[]string{"--cluster-workers", "0"}, "--cluster-workers"},
		{[]string{"--tunnel-ports", "17000"}, "--tunnel-ports"},
		{[]string{"--tunnel-ports", "17999-17000"}, "--tunnel-ports"},
		{[]string{"--tunnel-ports", "high-low"}, "--tunnel-ports"},
		{[]string{"--cluster-resync", "-1s"}, "--cluster-resync"},
	} {
		args := append([]string{"node", "--data-dir", t.TempDir(), "--api-addr", "127.0.0.1:0", "--registry-addr", ""}, tc.args...)
		if r := runCLI(t, bin, "", args...); r.code == 0 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("outpost node %s: exit %d, stderr %q; want a refusal naming %s", strings.Join(tc.args, " "), r.code, r.stderr, tc.want)
		}
	}
}

// TestLoopbackOnly: `outpost cluster kubeconfig` warns when the kubeconfig
// reaches a tunnel port on the hub leader's loopback from a machine that
// reached the hub elsewhere.
func TestLoopbackOnly(t *testing.T) {
	t.Parallel()
	kc := func(server string) []byte {
		return []byte("apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: \"" + server +
			"\"}\ncontexts:\n- name: c\n  context: {cluster: c, user: u}\nusers:\n- name: u\n  user: {token: t}\ncurrent-context: c\n")
	}
	for _, tc := range []struct {
		server, hub string
		want        bool
	}{
		{"https://127.0.0.1:17000", "https://hub.example.net:7000", true},
		{"https://127.0.0.1:17000", "https://10.1.2.3:7000", true},
		{"https://localhost:17000", "https://10.1.2.3:7000", true},
		{"https://127.0.0.1:17000", "https://127.0.0.1:7000", false},
		{"https://10.1.2.3:17000", "https://10.1.2.3:7000", false},
		{"https://api.factory-a.example:6443", "https://hub.example.net:7000", false},
	} {
		if got := loopbackOnly(kc(tc.server), tc.hub); got != tc.want {
			t.Errorf("loopbackOnly(server %s, hub %s) = %v, want %v", tc.server, tc.hub, got, tc.want)
		}
	}
}
