package node_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"

	"github.com/outpost-mesh/outpost/gossip"
	"github.com/outpost-mesh/outpost/node"
	"github.com/outpost-mesh/outpost/ota"
)

// startAgent joins a stateless member to the hub at hubAddr and runs it.
func startAgent(t *testing.T, hubAddr, token, name string) {
	t.Helper()
	cfg := joinConfig(t, hubAddr, token, name, "")
	cfg.TuneGossip = func(c *gossip.Config) {
		c.ProbeInterval = 100 * time.Millisecond
		c.ProbeTimeout = 50 * time.Millisecond
		c.GossipInterval = 20 * time.Millisecond
		c.PushPullInterval = 500 * time.Millisecond
	}
	cfg.QUICPort, cfg.GossipPort = freePort(t, false), freePort(t, true)
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	if err := node.Join(t.Context(), cfg, logger); err != nil {
		t.Fatalf("join %s: %v", name, err)
	}
	a, err := node.NewAgent(cfg, nil, logger)
	if err != nil {
		t.Fatalf("NewAgent %s: %v", name, err)
	}
	// Without a shared store the agent owns its data dir: a second one
	// there is refused.
	if _, err := node.NewAgent(cfg, nil, logger); err == nil || !strings.Contains(err.Error(), "in use by another outpost node") {
		t.Fatalf("a second agent on %s's data dir: %v, want it refused as in use", name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent %s: Run returned %v", name, err)
		}
	})
}

// TestStatelessAgent checks that a stateless member is a Node of its site
// that never joins the site's Raft group, and runs the site's tasks: here
// a write of the largest inline content a task may carry.
func TestStatelessAgent(t *testing.T) {
	t.Parallel()
	var hubMirror, leaderMirror string
	hub := startNode(t, mirrorAt(t, &hubMirror), func(c *node.Config) { c.RegistryPush = true })
	addr := hub.hubQUIC(t)
	token := hub.createToken(t, "sa", 0, time.Time{})
	leader := startEdge(t, addr, token, "sa-0", mirrorAt(t, &leaderMirror))
	startAgent(t, addr, token, "sa-agent")
	eventually(t, 60*time.Second, func() error {
		var n struct {
			Status node.NodeStatus `json:"status"`
		}
		if code, b := hub.do(t, call{method: http.MethodGet, path: nodesPath + "/sa-agent"}); code != http.StatusOK {
			return fmt.Errorf("%d %s", code, b)
		} else if err := json.Unmarshal(b, &n); err != nil {
			return err
		}
		if n.Status.State != "alive" || n.Status.Raft == nil || n.Status.Raft.State != "None" {
			return fmt.Errorf("sa-agent at the hub: state %q, raft %+v", n.Status.State, n.Status.Raft)
		}
		return nil
	})
	if s := suffrage(leader); len(s) != 1 {
		t.Errorf("site sa's Raft group is %v, want only sa-0", s)
	}

	dir := t.TempDir()
	content := strings.Repeat("0123456789abcdef", ota.MaxInlineBytes/16)
	hub.mustDo(t, call{method: http.MethodPost, path: tasksPath, body: taskJSON("agent-write", map[string]any{
		"targets": map[string]any{"nodes": []string{"sa-agent"}},
		"steps": []map[string]any{
			{"name": "write", "type": "write", "path": dir + "/big", "content": content},
			{"name": "exec", "type": "exec", "script": "echo $OUTPOST_NODE > " + dir + "/ran"},
		},
	})}, http.StatusCreated, nil)
	v := hub.waitTask(t, "agent-write", ended)
	if v.Status.Phase != ota.TaskSucceeded || v.Status.Counts.Succeeded != 1 {
		t.Fatalf("task ended %s with %+v, want Succeeded 1/1", v.Status.Phase, v.Status.Counts)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "big")); err != nil || string(b) != content {
		t.Errorf("written file: %d bytes, %v; want the %d bytes sent", len(b), err, len(content))
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "ran")); string(b) != "sa-agent\n" {
		t.Errorf("exec ran as %q, want sa-agent", b)
	}

	// A contentFrom write: the agent, which has no image cache, reads the
	// blob through its site leader's, which fetches it from the hub.
	payload := bytes.Repeat([]byte("driver "), 3<<20/7)
	layer := static.NewLayer(payload, "application/octet-stream")
	repo, err := name.NewRepository(hubMirror+"/"+ota.DefaultContentRepository, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteLayer(repo, layer, remote.WithAuth(&authn.Basic{Username: "outpost", Password: hub.token}), remote.WithContext(t.Context())); err != nil {
		t.Fatal(err)
	}
	d, _ := layer.Digest()
	hub.mustDo(t, call{method: http.MethodPost, path: tasksPath, body: taskJSON("agent-content", map[string]any{
		"targets": map[string]any{"nodes": []string{"sa-agent", "sa-0"}},
		"steps": []map[string]any{
			{"name": "write", "type": "write", "path": dir + "/driver", "contentFrom": map[string]any{"blob": d.String(), "size": len(payload)}},
		},
	})}, http.StatusCreated, nil)
	v = hub.waitTask(t, "agent-content", ended)
	if v.Status.Phase != ota.TaskSucceeded || v.Status.Counts.Succeeded != 2 {
		_, b := hub.do(t, call{method: http.MethodGet, path: "/apis/ota.outpost.dev/v1alpha1/deviceresults"})
		t.Fatalf("contentFrom task ended %s with %+v, want Succeeded 2/2; results: %s", v.Status.Phase, v.Status.Counts, b)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "driver")); err != nil || !bytes.Equal(b, payload) {
		t.Errorf("written driver: %d bytes, %v; want the %d bytes pushed", len(b), err, len(payload))
	}
}
