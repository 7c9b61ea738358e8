package node_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/outpost-mesh/outpost/consensus"
	"github.com/outpost-mesh/outpost/gossip"
	"github.com/outpost-mesh/outpost/node"
)

// edgeNode is a running site node.
type edgeNode struct {
	*node.Node
	stop func()
}

// startEdge joins a node to the hub at hubAddr with token and runs it with
// tight Raft and gossip timings; opts adjust the config.
func startEdge(t *testing.T, hubAddr, token, name string, opts ...func(*node.Config)) *edgeNode {
	t.Helper()
	cfg := joinConfig(t, hubAddr, token, name, "")
	cfg.ShutdownTimeout = 10 * time.Second
	cfg.TuneRaft = func(c *consensus.Config) {
		c.HeartbeatTimeout = 100 * time.Millisecond
		c.ElectionTimeout = 100 * time.Millisecond
		c.LeaderLeaseTimeout = 100 * time.Millisecond
	}
	cfg.TuneGossip = func(c *gossip.Config) {
		c.ProbeInterval = 100 * time.Millisecond
		c.ProbeTimeout = 50 * time.Millisecond
		c.GossipInterval = 20 * time.Millisecond
		c.PushPullInterval = 500 * time.Millisecond
		c.SuspicionMult = 2
	}
	for _, o := range opts {
		o(&cfg)
	}
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	var n *node.Node
	for attempt := 0; ; attempt++ {
		cfg.QUICPort, cfg.GossipPort = freePort(t, false), freePort(t, true)
		if err := node.Join(t.Context(), cfg, logger); err != nil {
			t.Fatalf("join %s: %v", name, err)
		}
		var err error
		if n, err = node.New(cfg, logger); err == nil {
			break
		} else if attempt > 0 {
			t.Fatalf("node.New %s: %v", name, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("%s: Run returned %v", name, err)
			}
		})
	}
	t.Cleanup(stop)
	return &edgeNode{Node: n, stop: stop}
}

// calmRaft sets Raft timings that ride out a loaded machine: elections a
// test does not cause would only make it slower to read.
func calmRaft(c *node.Config) {
	c.TuneRaft = func(c *consensus.Config) {
		c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = 500*time.Millisecond, 500*time.Millisecond, 250*time.Millisecond
	}
}

// leadsVoters returns an error until tn leads a group of n voters.
func leadsVoters(tn *testNode, n int) error {
	g := tn.node.Group()
	voters := 0
	for _, p := range g.Status().Peers {
		if p.Suffrage == "Voter" {
			voters++
		}
	}
	if voters != n || !g.IsLeader() {
		return fmt.Errorf("group %+v, want %s leading %d voters", g.Status().Peers, tn.name, n)
	}
	return nil
}

// siteLeader returns the node of nodes that leads their site's group.
func siteLeader(nodes []*edgeNode) *edgeNode {
	for _, n := range nodes {
		if n.Group().IsLeader() {
			return n
		}
	}
	return nil
}

// suffrage maps server names to their suffrage in the leader's view.
func suffrage(n *edgeNode) map[string]string {
	out := map[string]string{}
	for _, p := range n.Group().Status().Peers {
		out[p.ID] = p.Suffrage
	}
	return out
}

// TestSiteMembership checks that a site's Raft group follows its gossip
// membership: an odd number of voters up to --site-voters (a site of two
// has one voter and a non-voter, which may stop without stopping the
// site), a non-voter beyond, and a voter gone past
// --reap-after replaced by the promoted non-voter.
func TestSiteMembership(t *testing.T) {
	t.Parallel()
	hub := startNode(t)
	addr := hub.hubQUIC(t)
	token := hub.createToken(t, "a", 0, time.Time{})
	var nodes []*edgeNode
	start := func(i int) {
		nodes = append(nodes, startEdge(t, addr, token, fmt.Sprintf("a-%d", i), func(c *node.Config) {
			c.SiteVoters = 3
			c.ReapAfter = time.Second
		}))
	}
	var leader *edgeNode
	group := func(wantVoters, wantNonvoters int) func() error {
		return func() error {
			if leader = siteLeader(nodes); leader == nil {
				return fmt.Errorf("site a has no leader")
			}
			s := suffrage(leader)
			voters, nonvoters := 0, 0
			for _, v := range s {
				switch v {
				case "Voter":
					voters++
				case "Nonvoter":
					nonvoters++
				}
			}
			if voters != wantVoters || nonvoters != wantNonvoters {
				return fmt.Errorf("site a's group is %v, want %d voters and %d non-voters", s, wantVoters, wantNonvoters)
			}
			return nil
		}
	}
	start(0)
	start(1)
	eventually(t, 60*time.Second, group(1, 1))
	start(2)
	start(3)
	eventually(t, 60*time.Second, group(3, 1))
	var victim, spare string
	for name, v := range suffrage(leader) {
		switch {
		case v == "Nonvoter":
			spare = name
		case name != leader.Name() && victim == "":
			victim = name
		}
	}
	i := slices.IndexFunc(nodes, func(n *edgeNode) bool { return n.Name() == victim })
	nodes[i].stop()
	eventually(t, 60*time.Second, func() error {
		l := siteLeader(nodes)
		if l == nil {
			return fmt.Errorf("site a has no leader")
		}
		s := suffrage(l)
		if _, ok := s[victim]; ok {
			return fmt.Errorf("%s still in the group: %v", victim, s)
		}
		if s[spare] != "Voter" {
			return fmt.Errorf("%s not promoted: %v", spare, s)
		}
		return nil
	})
}

// certSerial reads the serial of the node certificate in dataDir.
func certSerial(t *testing.T, dataDir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dataDir, "identity", "node.crt"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert.SerialNumber.Text(16)
}

// TestCertificateRenewal checks that certificates are renewed before they
// expire and that the hub accepts the renewed ones: the site keeps
// reporting across two renewals.
func TestCertificateRenewal(t *testing.T) {
	t.Parallel()
	const validity = 6 * time.Second
	hub := startNode(t, func(c *node.Config) { c.CertValidity = validity })
	token := hub.createToken(t, "r", 0, time.Time{})
	var dir string
	startEdge(t, hub.hubQUIC(t), token, "r-1", func(c *node.Config) {
		c.CertValidity = validity
		dir = c.DataDir
	})
	first := certSerial(t, dir)
	seen := map[string]bool{first: true}
	eventually(t, 60*time.Second, func() error {
		seen[certSerial(t, dir)] = true
		if len(seen) < 3 {
			return fmt.Errorf("%d certificates so far", len(seen))
		}
		return nil
	})
	renewed := time.Now()
	// Each renewal is in the audit log, with the certificate's serial.
	code, b := hub.do(t, call{method: http.MethodGet, path: "/apis/core.outpost.dev/v1alpha1/auditevents"})
	if code != http.StatusOK {
		t.Fatalf("audit events: %d %s", code, b)
	}
	for serial := range seen {
		if serial != first && !bytes.Contains(b, []byte("certificate "+serial+", valid until")) {
			t.Errorf("the renewal to certificate %s is not in the audit log:\n%s", serial, b)
		}
	}
	// The hub persists a reporting site's lastSeen every 30 s.
	eventually(t, 60*time.Second, func() error {
		var site object
		code, b := hub.do(t, call{method: http.MethodGet, path: sitesPath + "/r"})
		if code != http.StatusOK {
			return fmt.Errorf("%d %s", code, b)
		}
		if err := json.Unmarshal(b, &site); err != nil {
			return err
		}
		seenAt, _ := time.Parse(time.RFC3339, fmt.Sprint(site.Status["lastSeen"]))
		if site.Status["connected"] != true || !seenAt.After(renewed) {
			return fmt.Errorf("site r after renewal: %v", site.Status)
		}
		return nil
	})
}
