package node_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outpost-mesh/outpost/consensus"
	"github.com/outpost-mesh/outpost/node"
	"github.com/outpost-mesh/outpost/ota"
	"github.com/outpost-mesh/outpost/ota/control"
	"github.com/outpost-mesh/outpost/ota/grant"
)

// refusedCount reads how many requests an audited refusal counts.
var refusedCount = regexp.MustCompile(`refused (\d+) run requests?`)

// TestForgedRunSentToAgentIsAudited: a member of a site sends run
// requests straight to another member's agent, past the site's store and
// dispatcher: one without a grant, one with a grant signed by a key of its
// own, and a flood of 300 without. Each is refused, no step runs, and the
// hub's audit log counts every one of them (in far fewer events than
// requests: the same refusal is counted, not repeated), with the caller
// and its address; the site keeps nothing once the hub has them.
func TestForgedRunSentToAgentIsAudited(t *testing.T) {
	t.Parallel()
	hub := startNode(t)
	token := hub.createToken(t, "a", 0, time.Time{})
	addr := hub.hubQUIC(t)
	nodes := []*edgeNode{startEdge(t, addr, token, "a-0"), startEdge(t, addr, token, "a-1")}
	var forger, victim *edgeNode
	eventually(t, 60*time.Second, func() error {
		if forger = siteLeader(nodes); forger == nil {
			return fmt.Errorf("site a has no leader")
		}
		if len(forger.Group().Status().Peers) != 2 {
			return fmt.Errorf("site a's group is %v, want both nodes", forger.Group().Status().Peers)
		}
		return nil
	})
	victim = nodes[0]
	if victim == forger {
		victim = nodes[1]
	}

	mark := filepath.Join(t.TempDir(), "pwned")
	steps := []ota.Step{{Name: "pwn", Type: ota.StepExec, Command: []string{"touch", mark}}}
	forge := func(task string, g *grant.Grant) ota.DeviceResultStatus {
		t.Helper()
		req := control.RunRequest{Task: task, UID: task + "-uid", Attempt: 1, Node: victim.Name(), Site: "a", Steps: steps, DeviceTimeout: 10000, Grant: g}
		var st ota.DeviceResultStatus
		eventually(t, 30*time.Second, func() (err error) { // the first call may find the peer not yet dialable
			st, err = node.SendRun(t.Context(), forger.Node, victim.Name(), req)
			return err
		})
		if st.Phase != ota.DeviceFailed || st.Reason != grant.Reason {
			t.Fatalf("forged run %s: %s %s %q; want Failed %s", task, st.Phase, st.Reason, st.Message, grant.Reason)
		}
		return st
	}
	if st := forge("forged-none", nil); !strings.Contains(st.Message, "no grant") {
		t.Errorf("run without a grant refused with %q; want it to say there is no grant", st.Message)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	own, err := grant.New(key, grant.Request{Task: "forged-key", UID: "forged-key-uid", Attempt: 1, Site: "a",
		Steps: steps, TimeoutMillis: 10000}, []string{victim.Name()}, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if st := forge("forged-key", &own[0]); !strings.Contains(st.Message, "not signed by the hub") {
		t.Errorf("run with a grant of another key refused with %q; want it to say the hub did not sign it", st.Message)
	}
	const flood = 300
	for i := range flood {
		forge(fmt.Sprintf("flood-%d", i), nil)
	}
	if _, err := os.Stat(mark); err == nil {
		t.Fatal("a forged run's step ran")
	}

	// Every refusal reaches the hub's audit log, and the site lets go of
	// them once it has.
	audited := func() (total, events int, named map[string]bool, err error) {
		named = map[string]bool{}
		for _, e := range hub.auditEvents(t) {
			if e.User != "site/a" || e.Verb != "run" {
				continue
			}
			events++
			m := refusedCount.FindStringSubmatch(e.Message)
			if e.Code != 403 || m == nil || e.Source != "127.0.0.1" || !strings.Contains(e.Message, "from a/"+forger.Name()) || !strings.Contains(e.Message, "node "+victim.Name()) {
				return 0, 0, nil, fmt.Errorf("refusal event %+v: want 403 from a/%s at 127.0.0.1, refused by %s, with its count", e, forger.Name(), victim.Name())
			}
			c, _ := strconv.Atoi(m[1])
			total += c
			named[e.Name] = true
		}
		return total, events, named, nil
	}
	eventually(t, 60*time.Second, func() error {
		total, events, named, err := audited()
		if err != nil {
			return err
		}
		if total < flood+2 || !named["forged-none"] || !named["forged-key"] {
			return fmt.Errorf("the audit log counts %d refused requests in %d events (forged-none %v, forged-key %v); want %d", total, events, named["forged-none"], named["forged-key"], flood+2)
		}
		list, err := forger.Group().Store().List(t.Context(), &node.GrantRefusalKind, "", nil, consensus.ReadOptions{Stale: true})
		if err != nil {
			return err
		}
		if len(list.Items) != 0 {
			return fmt.Errorf("site a still holds %d refusals for the hub", len(list.Items))
		}
		return nil
	})
	// Nothing is left to come: the count is exact (each refusal once).
	total, events, _, err := audited()
	if err != nil || total != flood+2 {
		t.Fatalf("the audit log counts %d refused requests (%v); want exactly %d", total, err, flood+2)
	}
	t.Logf("%d refused requests audited in %d events", total, events)
}

// TestForgedRunSentToStatelessAgentIsAudited: a stateless member, which
// holds no site store, hands its refusals to a member of its site's Raft
// group (callRefusals), and they reach the hub's audit log like any
// node's.
func TestForgedRunSentToStatelessAgentIsAudited(t *testing.T) {
	t.Parallel()
	hub := startNode(t)
	addr := hub.hubQUIC(t)
	token := hub.createToken(t, "sr", 0, time.Time{})
	leader := startEdge(t, addr, token, "sr-0")
	startAgent(t, addr, token, "sr-agent")
	mark := filepath.Join(t.TempDir(), "pwned")
	req := control.RunRequest{Task: "forged-stateless", UID: "forged-stateless-uid", Attempt: 1, Node: "sr-agent", Site: "sr",
		Steps: []ota.Step{{Name: "pwn", Type: ota.StepExec, Command: []string{"touch", mark}}}, DeviceTimeout: 10000}
	var st ota.DeviceResultStatus
	eventually(t, 60*time.Second, func() (err error) { // until sr-agent is a member sr-0 can call
		st, err = node.SendRun(t.Context(), leader.Node, "sr-agent", req)
		return err
	})
	if st.Phase != ota.DeviceFailed || st.Reason != grant.Reason {
		t.Fatalf("forged run: %s %s %q; want Failed %s", st.Phase, st.Reason, st.Message, grant.Reason)
	}
	if _, err := os.Stat(mark); err == nil {
		t.Fatal("the forged run's step ran")
	}
	eventually(t, 60*time.Second, func() error {
		for _, e := range hub.auditEvents(t) {
			if e.User == "site/sr" && e.Verb == "run" && e.Name == "forged-stateless" && e.Code == 403 && strings.Contains(e.Message, "node sr-agent") {
				return nil
			}
		}
		return fmt.Errorf("the hub's audit log has no refusal by sr-agent of forged-stateless")
	})
}
