package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/outpost-mesh/outpost/clusters"
	"github.com/outpost-mesh/outpost/internal/kubetest"
)

// TestChartsPushAndInstall: `outpost charts push` puts a chart into the
// hub's registry with the API token, and the hub installs a Cluster's
// component from there (no other source) into a real API server; deleting
// the Cluster uninstalls it.
func TestChartsPushAndInstall(t *testing.T) {
	t.Parallel()
	bin := outpostBinary(t)
	kube, err := kubetest.Start(t.Context())
	if err != nil {
		t.Fatalf("real kube-apiserver: %v", err)
	}
	t.Cleanup(func() {
		if err := kube.Stop(); err != nil {
			t.Error(err)
		}
	})
	reg := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t, "tcp")))
	port := freePort(t, "tcp")
	d := startDaemon(t, bin, t.TempDir(), "--registry-addr", reg, "--registry-push", "--tunnel-ports", fmt.Sprintf("%d-%d", port, port+1))

	chart, err := filepath.Abs("../../clusters/components/testdata/charts/cloudcore")
	if err != nil {
		t.Fatal(err)
	}
	out := d.ok(t, "", "charts", "push", "--registry", reg, chart)
	if want := "pushed oci://" + reg + "/charts/cloudcore:1.21.0"; strings.TrimSpace(out) != want {
		t.Errorf("charts push printed %q, want %q", out, want)
	}
	if r := d.fails(t, "charts", "push", "--registry", reg, "no-such-chart"); !strings.Contains(r.stderr, "no-such-chart") {
		t.Errorf("pushing a missing chart: %q does not name it", r.stderr)
	}
	// No argument: the project's own charts, built into the binary.
	out = d.ok(t, "", "charts", "push", "--registry", reg)
	for _, want := range []string{"pushed oci://" + reg + "/charts/outpost-agent:0.1.0", "pushed oci://" + reg + "/charts/outpost-node:0.1.0"} {
		if !strings.Contains(out, want) {
			t.Errorf("charts push with no argument printed %q, want %q", out, want)
		}
	}

	kc, err := kube.Kubeconfig(kubetest.AdminToken)
	if err != nil {
		t.Fatal(err)
	}
	manifest := fmt.Sprintf(`apiVersion: clusters.outpost.dev/v1alpha1
kind: Cluster
metadata:
  name: edge
spec:
  connection:
    type: direct
    kubeconfig: %s
  components:
  - name: kubeedge
`, base64.StdEncoding.EncodeToString(kc))
	d.ok(t, manifest, "apply", "-f", "-")
	// No kubelet runs: installed from the hub's registry, it rolls out
	// forever.
	deadline := time.Now().Add(time.Minute)
	for {
		var obj struct {
			Status clusters.ClusterStatus `json:"status"`
		}
		_ = json.Unmarshal([]byte(d.ok(t, "", "get", "cluster", "edge", "-o", "json")), &obj)
		var last string
		done := false
		for _, c := range obj.Status.Conditions {
			if c.Type == "KubeedgeReady" {
				last = c.Reason + ": " + c.Message
				done = c.Reason == "RollingOut"
			}
		}
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("KubeedgeReady never RollingOut; last %q", last)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if _, err := kube.Client.AppsV1().Deployments("ke-system").Get(t.Context(), "cloudcore", metav1.GetOptions{}); err != nil {
		t.Fatalf("cloudcore not installed: %v", err)
	}
	d.ok(t, "", "delete", "cluster", "edge")
	deadline = time.Now().Add(time.Minute)
	for {
		_, err := kube.Client.AppsV1().Deployments("ke-system").Get(t.Context(), "cloudcore", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cloudcore left after the Cluster's deletion: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
