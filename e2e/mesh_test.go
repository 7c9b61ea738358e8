//go:build e2e

package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// Each test builds its own lab and mesh. They run one after another: eight
// daemons are about what two cores carry with room for the test itself.

// TestMeshForms: a hub of three and sites a (3 nodes) and b (2 nodes) form
// from join tokens alone.
func TestMeshForms(t *testing.T) {
	m := newMesh(t, topology{hubs: 3, sites: []siteSpec{{"a", 3}, {"b", 2}}})

	// newMesh waited for formed through hub-1; every hub member's API must
	// give the same answer.
	for _, hub := range m.siteNodes("hub") {
		m.eventually(waitLong, "the mesh as seen through "+hub.name, func() error { return m.formed(hub) })
	}
	nodes, err := m.getNodes(m.anyHub())
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes) != 8 {
		t.Fatalf("get nodes lists %d nodes; want 8: %v", len(nodes), keys(nodes))
	}
	sites, err := m.getSites(m.anyHub())
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range keys(sites) {
		t.Logf("site %s: %+v", name, sites[name])
	}
	for _, n := range m.nodes {
		st, err := m.status(n)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: site %s role %s raft %s leader %s term %d peers %v", n.name, st.Site, st.Role,
			st.Raft.State, st.Raft.Leader, st.Raft.Term, st.peerIDs())
	}
}

// TestSiteLeaderKilled: kill -9 site a's leader; the two survivors elect a
// new one and the hub sees site a connected again, led by it.
func TestSiteLeaderKilled(t *testing.T) {
	m := newMesh(t, topology{hubs: 1, sites: []siteSpec{{"a", 3}}})
	hub := m.node("hub-1")

	old := m.siteLeader("a")
	m.kill(old)

	var leader string
	m.eventually(waitLong, "a new leader in site a", func() error {
		l, err := m.agreedLeader(up(m.siteNodes("a")))
		if err != nil {
			return err
		}
		if l == old.name {
			return fmt.Errorf("survivors still name %s", old.name)
		}
		leader = l
		return nil
	})
	m.logf("site a elected %s after %s died", leader, old.name)

	m.eventually(waitLong, "the hub sees site a connected, led by "+leader, func() error {
		s, err := m.site(hub, "a")
		if err != nil {
			return err
		}
		if !s.Connected || s.Leader != leader {
			return fmt.Errorf("site a: connected=%v leader=%q", s.Connected, s.Leader)
		}
		return nil
	})
	m.waitNotAlive(hub, old)
}

// TestSiteCutOffFromHub: site b loses the hub for 60 s (iptables on b's
// hosts); b keeps its Raft leader and answers status, the hub marks b
// disconnected and site a connected; after the cut b is connected again.
func TestSiteCutOffFromHub(t *testing.T) {
	m := newMesh(t, topology{hubs: 1, sites: []siteSpec{{"a", 1}, {"b", 2}}})
	hub := m.node("hub-1")
	b := m.siteNodes("b")

	for _, n := range b {
		for _, h := range m.siteNodes("hub") {
			n.host.Block(h.host)
		}
	}
	cut := time.Now()
	m.logf("site b cut off from the hub")

	m.eventually(waitLong, "the hub marks site b disconnected", func() error {
		s, err := m.site(hub, "b")
		if err != nil {
			return err
		}
		if s.Connected {
			return fmt.Errorf("site b still connected")
		}
		return nil
	})
	m.logf("hub marked b disconnected")
	m.eventually(waitLong, "the hub shows b's nodes as unknown", func() error {
		nodes, err := m.getNodes(hub)
		if err != nil {
			return err
		}
		for _, n := range b {
			if got := nodes[n.name].State; got != "unknown" {
				return fmt.Errorf("%s is %q at the hub; want unknown while its site is cut off", n.name, got)
			}
		}
		return nil
	})
	if s, err := m.site(hub, "a"); err != nil || !s.Connected {
		t.Fatalf("site a during b's cut: %+v, %v; want connected", s, err)
	}

	leaderless := 0
	m.hold(time.Until(cut.Add(60*time.Second)), "site b's status during the cut", func() error {
		for _, n := range b {
			st, err := m.status(n)
			if err != nil {
				return err
			}
			if st.Raft.Leader == "" {
				leaderless++
			}
		}
		return nil
	})
	if leaderless > 0 {
		t.Logf("site b had no leader in %d status answers during the cut", leaderless)
	}
	m.eventually(10*time.Second, "site b led from within at the end of the cut", func() error {
		_, err := m.agreedLeader(b)
		return err
	})

	for _, n := range b {
		for _, h := range m.siteNodes("hub") {
			n.host.Unblock(h.host)
		}
	}
	m.logf("cut lifted")
	m.eventually(waitLong, "site b connected again", func() error { return m.formed(hub) })
}

// TestSiteNodeRestarts: a site node stopped with SIGTERM and started again
// without --join or --token comes back under the same name.
func TestSiteNodeRestarts(t *testing.T) {
	m := newMesh(t, topology{hubs: 1, sites: []siteSpec{{"a", 3}}})
	hub := m.node("hub-1")

	leader := m.siteLeader("a")
	var n *meshNode
	for _, c := range m.siteNodes("a") {
		if c != leader {
			n = c
			break
		}
	}
	n.down = true
	if err := n.proc.Stop(); err != nil {
		t.Errorf("SIGTERM of %s: %v; want a clean exit", n.name, err)
	}
	m.logf("stopped %s", n.name)
	m.waitNotAlive(hub, n)

	m.startNode(n, nil)
	m.logf("started %s again without --join/--token", n.name)
	m.eventually(waitLong, n.name+" back in its site", func() error {
		st, err := m.status(n)
		if err != nil {
			return err
		}
		if st.Name != n.name || st.Site != "a" || st.Raft.Leader == "" {
			return fmt.Errorf("status: name %q site %q leader %q", st.Name, st.Site, st.Raft.Leader)
		}
		return nil
	})
	m.waitAlive(n)
	m.eventually(waitLong, "the mesh as before the restart", func() error { return m.formed(hub) })
}

// TestHubLeaderKilled: kill -9 the hub's Raft leader; the other two hub
// members still answer the admin API and the sites reconnect to them.
func TestHubLeaderKilled(t *testing.T) {
	m := newMesh(t, topology{hubs: 3, sites: []siteSpec{{"a", 2}, {"b", 1}}})

	old := m.siteLeader("hub")
	m.kill(old)
	killed := time.Now()

	survivors := up(m.siteNodes("hub"))
	m.eventually(waitLong, "a new hub leader", func() error {
		l, err := m.agreedLeader(survivors)
		if err == nil && l == old.name {
			err = fmt.Errorf("survivors still name %s", old.name)
		}
		return err
	})
	for _, hub := range survivors {
		m.eventually(waitLong, "the admin API of "+hub.name, func() error {
			nodes, err := m.getNodes(hub)
			if err != nil {
				return err
			}
			if got, want := keys(nodes), names(m.nodes); !slices.Equal(got, want) {
				return fmt.Errorf("get nodes lists %v; want %v", got, want)
			}
			return nil
		})
		m.eventually(waitLong, "sites connected, seen through "+hub.name, func() error { return m.formed(hub) })
		// connected may be a value written before the kill: a report the
		// hub received after it shows that the site leaders reconnected.
		for _, site := range []string{"a", "b"} {
			m.eventually(waitLong, "a report of site "+site+" after the kill, seen through "+hub.name, func() error {
				s, err := m.site(hub, site)
				if err != nil {
					return err
				}
				if !s.Connected || !s.LastSeen.After(killed.Add(2*time.Second)) {
					return fmt.Errorf("site %s: connected=%v lastSeen=%s; want connected, seen 2 s after the kill at %s",
						site, s.Connected, s.LastSeen.Format(time.RFC3339), killed.Format(time.RFC3339))
				}
				return nil
			})
		}
		m.logf("sites a and b reported through %s after the kill", hub.name)
	}
	m.waitNotAlive(survivors[0], old)
}

// TestJoinSecurity: bad, used-up and expired tokens are refused with a
// message that says why; a deleted node stays out of the mesh.
func TestJoinSecurity(t *testing.T) {
	m := newMesh(t, topology{hubs: 1})
	for _, name := range []string{"mal", "wrong", "once-1", "once-2", "expired", "del-1"} {
		m.addNode(name, "x")
	}
	hub := m.node("hub-1")
	refused := []string{"mal", "wrong", "once-2", "expired"}

	t.Run("malformed", func(t *testing.T) {
		m := m.sub(t)
		out := m.joinMustFail(m.node("mal"), "not-a-token")
		if !strings.Contains(out, "malformed") {
			t.Errorf("refusal does not say malformed: %s", out)
		}
	})

	t.Run("wrong secret", func(t *testing.T) {
		m := m.sub(t)
		token := tamper(t, m.tokenCreate("x"))
		out := m.joinMustFail(m.node("wrong"), token)
		if !strings.Contains(out, "wrong") {
			t.Errorf("refusal does not say wrong: %s", out)
		}
	})

	t.Run("used up", func(t *testing.T) {
		m := m.sub(t)
		token := m.tokenCreate("x", "--uses", "1")
		first := m.node("once-1")
		m.startNode(first, m.joinArgs(hub, token))
		m.waitAlive(first)
		out := m.joinMustFail(m.node("once-2"), token)
		if !strings.Contains(out, "used up") {
			t.Errorf("refusal does not say used up: %s", out)
		}
	})

	t.Run("expired", func(t *testing.T) {
		m := m.sub(t)
		token := m.tokenCreate("x", "--ttl", "1s")
		// The point is that time passes: the token is dead 1 s after
		// creation, and 2 s leaves room for clock granularity.
		time.Sleep(2 * time.Second)
		out := m.joinMustFail(m.node("expired"), token)
		if !strings.Contains(out, "expired") {
			t.Errorf("refusal does not say expired: %s", out)
		}
	})

	t.Run("refused nodes are not members", func(t *testing.T) {
		m := m.sub(t)
		nodes, err := m.getNodes(hub)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range refused {
			if _, ok := nodes[name]; ok {
				t.Errorf("refused node %s is listed: %+v", name, nodes[name])
			}
		}
	})

	t.Run("deleted node stays out", func(t *testing.T) {
		m := m.sub(t)
		n := m.node("del-1")
		m.startNode(n, m.joinArgs(hub, m.tokenCreate("x")))
		m.waitAlive(n)
		if _, err := m.adminCLI(hub, "delete", "node", n.name); err != nil {
			t.Fatal(err)
		}
		m.logf("deleted node %s", n.name)
		n.down = true // whether it exits on its own is not part of the contract
		gone := func() error {
			nodes, err := m.getNodes(hub)
			if err != nil {
				return err
			}
			if got, ok := nodes[n.name]; ok {
				return fmt.Errorf("%s is listed: %+v", n.name, got)
			}
			return nil
		}
		m.eventually(waitLong, n.name+" gone from get nodes", gone)
		// The deleted node still runs and keeps trying: it must not come
		// back through heartbeats or a rejoin. 30 s covers many heartbeats
		// (1 s) and gossip rounds.
		m.hold(30*time.Second, n.name+" staying gone", gone)
		if n.proc.Running() {
			t.Logf("%s still runs after its deletion; its last lines:\n%s", n.name, n.proc.Tail(10))
		} else {
			t.Logf("%s exited after its deletion: %v", n.name, n.proc.Wait())
		}
	})
}

// tamper changes one character of the secret in a join token of the form
// <id>.<secret>.<CA fingerprint>, keeping it well formed (base64url
// alphabet, same length), so that only the secret is wrong.
func tamper(t *testing.T, token string) string {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 || len(parts[1]) < 2 {
		t.Fatalf("token %q is not <id>.<secret>.<fingerprint>; update tamper to the new format", token)
	}
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	secret := []byte(parts[1])
	i := len(secret) / 2
	pos := strings.IndexByte(alphabet, secret[i])
	if pos < 0 {
		t.Fatalf("secret of token %q is not base64url", token)
	}
	secret[i] = alphabet[(pos+1)%len(alphabet)]
	parts[1] = string(secret)
	return strings.Join(parts, ".")
}
