package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// kubectlBinary finds the kubectl that scripts/kube-peers.sh builds (or
// $OUTPOST_KUBECTL).
func kubectlBinary(t *testing.T) string {
	t.Helper()
	p := os.Getenv("OUTPOST_KUBECTL")
	if p == "" {
		p = filepath.Join("..", "..", ".build", "tools", "kube-v1.37.2", "kubectl")
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("no kubectl at %s: run scripts/kube-peers.sh (or set OUTPOST_KUBECTL)", p)
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

// kubectl runs kubectl against kubeconfig with its own cache dir.
type kubectl struct {
	bin, kubeconfig, cache string
}

func (k kubectl) command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, k.bin, append([]string{"--kubeconfig", k.kubeconfig, "--cache-dir", k.cache}, args...)...)
	cmd.Env = append(childEnv(), "HOME="+k.cache)
	return cmd
}

func (k kubectl) run(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := k.command(ctx, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr, cmd.Stdin = &stdout, &stderr, strings.NewReader(stdin)
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("kubectl %s: %v", strings.Join(args, " "), err)
	}
	return result{stdout: stdout.String(), stderr: stderr.String(), code: cmd.ProcessState.ExitCode()}
}

func (k kubectl) ok(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	r := k.run(t, stdin, args...)
	if r.code != 0 {
		t.Fatalf("kubectl %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

func kubeTaskYAML(name, node, word string) string {
	return fmt.Sprintf(`apiVersion: ota.outpost.dev/v1alpha1
kind: Task
metadata:
  name: %s
spec:
  targets:
    nodes: [%s]
  steps:
  - name: say
    type: exec
    command: [echo, %s]
`, name, node, word)
}

// header is the first line of a table, as words.
func header(table string) string {
	line, _, _ := strings.Cut(table, "\n")
	return strings.Join(strings.Fields(line), " ")
}

// TestKubectl runs a real kubectl against a hub with the kubeconfig that
// `outpost kubeconfig` writes: apply (create, then a three-way merge
// patch), strict field validation by the server, get with the same
// columns as `outpost get`, -o wide, describe, and get --watch.
func TestKubectl(t *testing.T) {
	k := kubectl{bin: kubectlBinary(t), cache: t.TempDir()}
	bin := outpostBinary(t)
	port := freePort(t, "tcp") // tunnel ports of its proxy cluster, not the default range another test's hub may hold
	d := startDaemon(t, bin, t.TempDir(), "--tunnel-ports", fmt.Sprintf("%d-%d", port, port+1))
	k.kubeconfig = filepath.Join(t.TempDir(), "kubeconfig")
	d.ok(t, "", "kubeconfig", "--file", k.kubeconfig)
	if fi, err := os.Stat(k.kubeconfig); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("kubeconfig file: %v, mode %v; want mode 0600 (it holds the token)", err, fi.Mode())
	}
	if out := d.ok(t, "", "kubeconfig"); !strings.Contains(out, "certificate-authority-data:") || !strings.Contains(out, "current-context: outpost") {
		t.Errorf("outpost kubeconfig printed:\n%s", out)
	}

	// A task's targets are resolved from the Node objects: wait for this
	// node's own.
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(d.ok(t, "", "get", "nodes", "-o", "name"), "node.core.outpost.dev/"+d.name) {
		if time.Now().After(deadline) {
			t.Fatalf("node %s did not register within 30s", d.name)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if out := k.ok(t, kubeTaskYAML("k-hello", d.name, "hi"), "apply", "-f", "-"); strings.TrimSpace(out) != "task.ota.outpost.dev/k-hello created" {
		t.Errorf("kubectl apply (create) printed %q", out)
	}
	// A label and a halt may change; a step may not, once the task is
	// created.
	labelled := strings.Replace(kubeTaskYAML("k-hello", d.name, "hi"), "  name: k-hello\n", "  name: k-hello\n  labels: {rollout: wave-1}\n", 1) + "  halted: true\n"
	if out := k.ok(t, labelled, "apply", "-f", "-"); strings.TrimSpace(out) != "task.ota.outpost.dev/k-hello configured" {
		t.Errorf("kubectl apply (patch) printed %q", out)
	}
	if out := d.ok(t, "", "get", "task", "k-hello", "-o", "json"); !strings.Contains(out, `"wave-1"`) || !strings.Contains(out, `"halted": true`) || !strings.Contains(out, "last-applied-configuration") {
		t.Errorf("after the second apply the task is:\n%s", out)
	}
	if r := k.run(t, kubeTaskYAML("k-hello", d.name, "bye"), "apply", "-f", "-"); r.code == 0 || !strings.Contains(r.stderr, "spec.steps: Forbidden") {
		t.Errorf("kubectl apply of a changed step: exit %d, stderr %q; want the server to refuse spec.steps", r.code, r.stderr)
	}
	bad := strings.Replace(kubeTaskYAML("k-bad", d.name, "x"), "  steps:", "  stepz: []\n  steps:", 1)
	if r := k.run(t, bad, "apply", "-f", "-"); r.code == 0 || !strings.Contains(r.stderr, "stepz") {
		t.Errorf("kubectl apply of an unknown field: exit %d, stderr %q; want the server to refuse spec.stepz", r.code, r.stderr)
	}

	// Columns are the server's, the same for both clients.
	for _, args := range [][]string{{"get", "tasks"}, {"get", "tasks", "-o", "wide"}} {
		want := header(d.ok(t, "", args...))
		out := k.ok(t, "", args...)
		if got := header(out); got != want || !strings.Contains(out, "k-hello") {
			t.Errorf("kubectl %s printed header %q (want %q as outpost prints it):\n%s", strings.Join(args, " "), got, want, out)
		}
	}
	if clusters := d.ok(t, "", "get", "clusters", "-o", "name"); clusters == "" {
		sum := sha256.Sum256([]byte("agent-token"))
		d.ok(t, fmt.Sprintf("apiVersion: clusters.outpost.dev/v1alpha1\nkind: Cluster\nmetadata: {name: store-1}\nspec: {provider: k3s, connection: {type: proxy, tokenHash: %s}}\n",
			hex.EncodeToString(sum[:])), "apply", "-f", "-")
	}
	want := header(d.ok(t, "", "get", "clusters", "-o", "wide"))
	if out := k.ok(t, "", "get", "clusters", "-o", "wide"); header(out) != want || !strings.Contains(out, "store-1") {
		t.Errorf("kubectl get clusters -o wide printed header %q, want %q:\n%s", header(out), want, out)
	}

	desc := k.ok(t, "", "describe", "task", "k-hello")
	for _, w := range []string{"Name:", "k-hello", "Kind:         Task", "API Version:  ota.outpost.dev/v1alpha1", "Command:", "hi", "Halted:  true", "Phase:"} {
		if !strings.Contains(desc, w) {
			t.Errorf("kubectl describe task k-hello lacks %q:\n%s", w, desc)
		}
	}

	// Watch: the list, then a task created afterwards, as it changes.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	out := &syncBuffer{}
	watch := k.command(ctx, "get", "tasks", "--watch")
	watch.Stdout, watch.Stderr = out, out
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = watch.Wait() }()
	waitOutput(t, out, func(s string) bool { return strings.Contains(s, "k-hello") }, "the listed task")
	d.ok(t, kubeTaskYAML("k-later", d.name, "later"), "apply", "-f", "-")
	waitOutput(t, out, func(s string) bool {
		for _, line := range strings.Split(s, "\n") {
			if f := strings.Fields(line); len(f) > 1 && f[0] == "k-later" && f[1] == "Succeeded" {
				return true
			}
		}
		return false
	}, "k-later to appear and succeed")
}

// waitOutput polls a child's output until ok accepts it.
func waitOutput(t *testing.T, out *syncBuffer, ok func(string) bool, what string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !ok(out.String()) {
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s; output so far:\n%s", what, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
