//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/outpost-mesh/outpost/e2e/netlab"
)

const (
	quicPort = 7443
	apiPort  = 7080
	// waitLong bounds every wait for the mesh to converge.
	waitLong = 60 * time.Second
	// poll is how often eventually looks again.
	poll = 250 * time.Millisecond
	// cliTimeout bounds one CLI call; a daemon that refuses to join must
	// also exit within it.
	cliTimeout = 30 * time.Second
	// heartbeat keeps node status fresh enough for minute-long tests.
	heartbeat = "1s"
)

// topology is the mesh a test starts: a hub of hubs members and the sites
// in order, each site's nodes named <site>-1, <site>-2, ...
type topology struct {
	hubs  int
	sites []siteSpec
}

type siteSpec struct {
	name  string
	nodes int
}

// mesh is a running Outpost mesh in a lab: one outpost process per host,
// and a host "ctl" for the operator's CLI calls, so both ends of every
// connection are in the lab.
type mesh struct {
	t     *testing.T
	lab   *netlab.Lab
	ctl   *netlab.Host
	dir   string
	nodes []*meshNode
	// admin maps each hub member to a copy of admin.yaml whose server is
	// that member's API.
	admin map[string]string
	start time.Time
}

// meshNode is one outpost node and the host it runs on.
type meshNode struct {
	name    string
	site    string
	host    *netlab.Host
	dataDir string
	proc    *netlab.Proc
	// down says the test stopped or killed it on purpose.
	down bool
	// args are extra flags of every start (a test sets them before
	// bootstrap).
	args []string
}

func (n *meshNode) hub() bool { return n.site == "hub" }

// quicAddr is the node's mesh address, what --join takes.
func (n *meshNode) quicAddr() string {
	return net.JoinHostPort(n.host.IP(), strconv.Itoa(quicPort))
}

// apiURL is a hub member's admin API.
func (n *meshNode) apiURL() string {
	return "https://" + net.JoinHostPort(n.host.IP(), strconv.Itoa(apiPort))
}

// newMesh builds a lab for topo, starts hub-1, joins the other hub members
// and then every site node with tokens from `outpost token create`, one
// node at a time, and waits until the whole mesh reports itself formed.
func newMesh(t *testing.T, topo topology) *mesh {
	t.Helper()
	m := newLab(t, topo)
	m.bootstrap()
	m.waitFormed()
	m.logf("mesh formed")
	return m
}

// newLab makes the lab and its hosts, and starts nothing.
func newLab(t *testing.T, topo topology) *mesh {
	t.Helper()
	lab := netlab.New(t, t.Name())
	if outpostBin == "" {
		t.Fatal("no outpost binary: TestMain did not build one")
	}
	m := &mesh{t: t, lab: lab, dir: t.TempDir(), admin: map[string]string{}, start: time.Now()}
	m.ctl = lab.AddHost("ctl")
	for i := 1; i <= topo.hubs; i++ {
		m.addNode(fmt.Sprintf("hub-%d", i), "hub")
	}
	for _, s := range topo.sites {
		for i := 1; i <= s.nodes; i++ {
			m.addNode(fmt.Sprintf("%s-%d", s.name, i), s.name)
		}
	}
	return m
}

// sub returns m for a subtest: the same mesh, failing t.
func (m *mesh) sub(t *testing.T) *mesh {
	c := *m
	c.t = t
	return &c
}

func (m *mesh) addNode(name, site string) *meshNode {
	n := &meshNode{name: name, site: site, host: m.lab.AddHost(name), dataDir: filepath.Join(m.dir, name)}
	m.nodes = append(m.nodes, n)
	return n
}

func (m *mesh) logf(format string, args ...any) {
	m.t.Helper()
	m.t.Logf("[%5.1fs] %s", time.Since(m.start).Seconds(), fmt.Sprintf(format, args...))
}

// bootstrap starts hub-1 and joins every other node.
func (m *mesh) bootstrap() {
	m.t.Helper()
	hub1 := m.node("hub-1")
	m.startNode(hub1, nil)
	m.waitAdmin(hub1)
	m.waitAlive(hub1)
	m.logf("hub-1 is up, admin API %s", hub1.apiURL())

	bySite := map[string][]*meshNode{}
	var order []string
	for _, n := range m.nodes {
		if n == hub1 {
			continue
		}
		if _, ok := bySite[n.site]; !ok {
			order = append(order, n.site)
		}
		bySite[n.site] = append(bySite[n.site], n)
	}
	for _, site := range order {
		nodes := bySite[site]
		token := m.tokenCreate(site, "--uses", strconv.Itoa(len(nodes)))
		for _, n := range nodes {
			m.startNode(n, m.joinArgs(hub1, token))
			m.waitAlive(n)
			if n.hub() {
				m.writeAdmin(n)
			}
			m.logf("%s joined site %s", n.name, site)
		}
	}
}

// joinArgs are the first-start flags of a node that joins through hub.
func (m *mesh) joinArgs(hub *meshNode, token string) []string {
	return []string{"--join", hub.quicAddr(), "--token", token}
}

// nodeArgs are the flags of every start of n.
func (m *mesh) nodeArgs(n *meshNode) []string {
	args := []string{"node", "--name", n.name, "--data-dir", n.dataDir, "--bind-addr", n.host.IP(),
		"--heartbeat-interval", heartbeat}
	if n.name != "hub-1" {
		args = append(args, "--site", n.site)
	}
	if n.hub() {
		args = append(args, "--api-addr", net.JoinHostPort(n.host.IP(), strconv.Itoa(apiPort)))
	}
	return append(args, n.args...)
}

// startNode starts `outpost node` for n, with extra flags (--join, --token)
// on top of nodeArgs.
func (m *mesh) startNode(n *meshNode, extra []string) {
	m.t.Helper()
	n.proc = n.host.Start(outpostBin, append(m.nodeArgs(n), extra...)...)
	n.down = false
}

// kill ends n with SIGKILL.
func (m *mesh) kill(n *meshNode) {
	m.t.Helper()
	n.down = true
	n.proc.Kill()
	m.logf("killed %s (SIGKILL)", n.name)
}

func (m *mesh) node(name string) *meshNode {
	m.t.Helper()
	for _, n := range m.nodes {
		if n.name == name {
			return n
		}
	}
	m.t.Fatalf("no node %q in the mesh", name)
	return nil
}

// siteNodes returns the nodes of site, the down ones too.
func (m *mesh) siteNodes(site string) []*meshNode {
	var ns []*meshNode
	for _, n := range m.nodes {
		if n.site == site {
			ns = append(ns, n)
		}
	}
	return ns
}

func up(nodes []*meshNode) []*meshNode {
	var ns []*meshNode
	for _, n := range nodes {
		if !n.down {
			ns = append(ns, n)
		}
	}
	return ns
}

func names(nodes []*meshNode) []string {
	var s []string
	for _, n := range nodes {
		s = append(s, n.name)
	}
	slices.Sort(s)
	return s
}

// eventually polls cond every 250 ms until it returns nil, and fails the
// test with cond's last error after timeout. It fails at once if a node
// that should run has exited (the lab prints its log).
func (m *mesh) eventually(timeout time.Duration, what string, cond func() error) {
	m.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for _, n := range m.nodes {
			if n.proc != nil && !n.down && !n.proc.Running() {
				m.t.Fatalf("while waiting for %s: %s exited: %v (its log follows at the end)", what, n.name, n.proc.Wait())
			}
		}
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("not within %s: %s: %v", timeout, what, err)
		}
		select {
		case <-m.t.Context().Done():
			m.t.Fatalf("test ended while waiting for %s: %v", what, err)
		case <-time.After(poll):
		}
	}
}

// run runs the outpost CLI on host h and returns its stdout; an error
// carries stderr.
func (m *mesh) run(h *netlab.Host, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(m.t.Context(), cliTimeout)
	defer cancel()
	cmd := h.Command(ctx, outpostBin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("no exit within %s: %w", cliTimeout, err)
		}
		return stdout.String(), fmt.Errorf("outpost %s (on %s): %w: %s", strings.Join(args, " "), h.Name(), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// adminCLI runs an admin verb on ctl against the API of hub member via.
func (m *mesh) adminCLI(via *meshNode, args ...string) (string, error) {
	cfg, ok := m.admin[via.name]
	if !ok {
		return "", fmt.Errorf("no admin.yaml for %s", via.name)
	}
	return m.run(m.ctl, append([]string{"--config", cfg}, args...)...)
}

// anyHub is a hub member that runs, hub-1 first.
func (m *mesh) anyHub() *meshNode {
	m.t.Helper()
	for _, n := range m.siteNodes("hub") {
		if !n.down && m.admin[n.name] != "" {
			return n
		}
	}
	m.t.Fatal("no hub member runs")
	return nil
}

// waitAdmin waits for hub-1 to write admin.yaml and keeps a copy.
func (m *mesh) waitAdmin(hub *meshNode) {
	m.t.Helper()
	path := filepath.Join(hub.dataDir, "admin.yaml")
	m.eventually(waitLong, "admin.yaml written by "+hub.name, func() error {
		cfg, err := readYAML(path)
		if err != nil {
			return err
		}
		if s, _ := cfg["server"].(string); s == "" {
			return fmt.Errorf("%s has no server", path)
		}
		return nil
	})
	m.writeAdmin(hub)
}

// writeAdmin writes a copy of hub-1's admin.yaml whose server is hub's API.
func (m *mesh) writeAdmin(hub *meshNode) {
	m.t.Helper()
	cfg, err := readYAML(filepath.Join(m.node("hub-1").dataDir, "admin.yaml"))
	if err != nil {
		m.t.Fatal(err)
	}
	cfg["server"] = hub.apiURL()
	b, err := yaml.Marshal(cfg)
	if err != nil {
		m.t.Fatal(err)
	}
	path := filepath.Join(m.dir, "admin-"+hub.name+".yaml")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		m.t.Fatal(err)
	}
	m.admin[hub.name] = path
}

func readYAML(path string) (map[string]any, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	cfg := map[string]any{}
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// tokenCreate runs `token create --site site extra...` and returns the
// token, which must be all that stdout holds.
func (m *mesh) tokenCreate(site string, extra ...string) string {
	m.t.Helper()
	out, err := m.adminCLI(m.anyHub(), append([]string{"token", "create", "--site", site}, extra...)...)
	if err != nil {
		m.t.Fatal(err)
	}
	token := strings.TrimSpace(out)
	if token == "" || strings.ContainsAny(token, " \t\n") {
		m.t.Fatalf("token create printed %q; want only the token", out)
	}
	return token
}

// nodeInfo is what the tests read of a Node object.
type nodeInfo struct {
	Name    string
	Site    string
	State   string
	Version string
}

// siteInfo is what the tests read of a Site object.
type siteInfo struct {
	Name      string
	Connected bool
	Leader    string
	NodeCount int
	// LastSeen is when the hub last heard from the site's leader.
	LastSeen time.Time
}

// getNodes lists the nodes of every site through via's API.
func (m *mesh) getNodes(via *meshNode) (map[string]nodeInfo, error) {
	out, err := m.adminCLI(via, "get", "nodes", "-o", "json")
	if err != nil {
		return nil, err
	}
	var list struct {
		Items []struct {
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
			Status struct {
				Site    string `json:"site"`
				State   string `json:"state"`
				Version string `json:"version"`
			} `json:"status"`
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		return nil, fmt.Errorf("get nodes -o json: %w: %.300s", err, out)
	}
	nodes := map[string]nodeInfo{}
	for _, it := range list.Items {
		if _, dup := nodes[it.Metadata.Name]; dup {
			return nil, fmt.Errorf("get nodes lists %s twice", it.Metadata.Name)
		}
		nodes[it.Metadata.Name] = nodeInfo{Name: it.Metadata.Name, Site: it.Status.Site, State: it.Status.State, Version: it.Status.Version}
	}
	return nodes, nil
}

// getSites lists the sites through via's API.
func (m *mesh) getSites(via *meshNode) (map[string]siteInfo, error) {
	out, err := m.adminCLI(via, "get", "sites", "-o", "json")
	if err != nil {
		return nil, err
	}
	var list struct {
		Items []struct {
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
			Status struct {
				Connected bool      `json:"connected"`
				Leader    string    `json:"leader"`
				NodeCount int       `json:"nodeCount"`
				LastSeen  time.Time `json:"lastSeen"`
			} `json:"status"`
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		return nil, fmt.Errorf("get sites -o json: %w: %.300s", err, out)
	}
	sites := map[string]siteInfo{}
	for _, it := range list.Items {
		sites[it.Metadata.Name] = siteInfo{Name: it.Metadata.Name, Connected: it.Status.Connected,
			Leader: it.Status.Leader, NodeCount: it.Status.NodeCount, LastSeen: it.Status.LastSeen}
	}
	return sites, nil
}

// site returns one site of getSites.
func (m *mesh) site(via *meshNode, name string) (siteInfo, error) {
	sites, err := m.getSites(via)
	if err != nil {
		return siteInfo{}, err
	}
	s, ok := sites[name]
	if !ok {
		return siteInfo{}, fmt.Errorf("get sites via %s has no site %q (has %v)", via.name, name, keys(sites))
	}
	return s, nil
}

// localStatus is what the tests read of `outpost status -o json`.
type localStatus struct {
	Name string `json:"name"`
	Site string `json:"site"`
	Role string `json:"role"`
	Raft struct {
		State       string `json:"state"`
		Leader      string `json:"leader"`
		Term        uint64 `json:"term"`
		CommitIndex uint64 `json:"commitIndex"`
		Peers       []struct {
			ID       string `json:"id"`
			Address  string `json:"address"`
			Suffrage string `json:"suffrage"`
		} `json:"peers"`
	} `json:"raft"`
}

func (s *localStatus) peerIDs() []string {
	var ids []string
	for _, p := range s.Raft.Peers {
		ids = append(ids, p.ID)
	}
	slices.Sort(ids)
	return ids
}

// status asks n's daemon through its control socket, from n's host.
func (m *mesh) status(n *meshNode) (*localStatus, error) {
	out, err := m.run(n.host, "status", "--data-dir", n.dataDir, "-o", "json")
	if err != nil {
		return nil, err
	}
	var st localStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return nil, fmt.Errorf("status -o json of %s: %w: %.300s", n.name, err, out)
	}
	return &st, nil
}

// agreedLeader returns the Raft leader that every node of nodes names, and
// that is one of them.
func (m *mesh) agreedLeader(nodes []*meshNode) (string, error) {
	leader := ""
	for _, n := range nodes {
		st, err := m.status(n)
		if err != nil {
			return "", err
		}
		if st.Raft.Leader == "" {
			return "", fmt.Errorf("%s knows no leader (raft state %s, term %d)", n.name, st.Raft.State, st.Raft.Term)
		}
		if leader != "" && st.Raft.Leader != leader {
			return "", fmt.Errorf("leaders disagree: %s says %s, another says %s", n.name, st.Raft.Leader, leader)
		}
		leader = st.Raft.Leader
	}
	if !slices.Contains(names(nodes), leader) {
		return "", fmt.Errorf("leader %q is not one of %v", leader, names(nodes))
	}
	return leader, nil
}

// siteLeader waits until the running nodes of site agree on a leader.
func (m *mesh) siteLeader(site string) *meshNode {
	m.t.Helper()
	var leader string
	m.eventually(waitLong, "a leader of site "+site, func() error {
		var err error
		leader, err = m.agreedLeader(up(m.siteNodes(site)))
		return err
	})
	return m.node(leader)
}

// waitAlive waits until the hub lists n, in its site, as alive.
func (m *mesh) waitAlive(n *meshNode) {
	m.t.Helper()
	m.eventually(waitLong, n.name+" alive in get nodes", func() error {
		nodes, err := m.getNodes(m.anyHub())
		if err != nil {
			return err
		}
		got, ok := nodes[n.name]
		if !ok {
			return fmt.Errorf("not listed (listed: %v)", keys(nodes))
		}
		if got.State != "alive" || got.Site != n.site {
			return fmt.Errorf("%s is %q in site %q; want alive in %q", n.name, got.State, got.Site, n.site)
		}
		return nil
	})
}

// waitNotAlive waits until the hub lists n as anything but alive.
func (m *mesh) waitNotAlive(via, n *meshNode) {
	m.t.Helper()
	m.eventually(waitLong, n.name+" no longer alive in get nodes", func() error {
		nodes, err := m.getNodes(via)
		if err != nil {
			return err
		}
		if got := nodes[n.name]; got.State == "alive" {
			return fmt.Errorf("%s is still alive", n.name)
		}
		return nil
	})
}

// formed checks the whole mesh once: exactly the running nodes alive in
// get nodes (down ones listed as not alive), every site connected with
// its node count, and in every site one leader, known to all its running
// nodes, whose Raft configuration is the site's nodes.
func (m *mesh) formed(via *meshNode) error {
	nodes, err := m.getNodes(via)
	if err != nil {
		return err
	}
	want := names(m.nodes)
	if got := keys(nodes); !slices.Equal(got, want) {
		return fmt.Errorf("get nodes lists %v; want %v", got, want)
	}
	for _, n := range m.nodes {
		got := nodes[n.name]
		if got.Site != n.site {
			return fmt.Errorf("%s is in site %q; want %q", n.name, got.Site, n.site)
		}
		if !n.down && got.State != "alive" {
			return fmt.Errorf("%s is %q; want alive", n.name, got.State)
		}
	}
	sites, err := m.getSites(via)
	if err != nil {
		return err
	}
	for _, site := range m.siteNamesOf() {
		members := m.siteNodes(site)
		if site != "hub" {
			s, ok := sites[site]
			if !ok {
				return fmt.Errorf("get sites has no %q (has %v)", site, keys(sites))
			}
			if !s.Connected || s.NodeCount != len(members) || !slices.Contains(names(members), s.Leader) {
				return fmt.Errorf("site %s: connected=%v nodeCount=%d leader=%q; want connected, %d nodes, leader in %v",
					site, s.Connected, s.NodeCount, s.Leader, len(members), names(members))
			}
		}
		if _, err := m.agreedLeader(up(members)); err != nil {
			return fmt.Errorf("site %s: %w", site, err)
		}
		for _, n := range up(members) {
			st, err := m.status(n)
			if err != nil {
				return err
			}
			if st.Name != n.name || st.Site != site {
				return fmt.Errorf("status of %s says name %q site %q", n.name, st.Name, st.Site)
			}
			if got := st.peerIDs(); !slices.Equal(got, names(members)) {
				return fmt.Errorf("site %s: %s's raft peers are %v; want %v", site, n.name, got, names(members))
			}
		}
	}
	return nil
}

// waitFormed waits until formed holds through a running hub member.
func (m *mesh) waitFormed() {
	m.t.Helper()
	m.eventually(waitLong, "the mesh formed", func() error { return m.formed(m.anyHub()) })
}

// siteNamesOf returns the sites of the mesh, hub first.
func (m *mesh) siteNamesOf() []string {
	var sites []string
	for _, n := range m.nodes {
		if !slices.Contains(sites, n.site) {
			sites = append(sites, n.site)
		}
	}
	return sites
}

// joinMustFail runs a first start of `outpost node` for n that joins with
// token, and returns its output once it has exited with an error. It fails
// the test if the node exits 0 or does not exit within cliTimeout.
func (m *mesh) joinMustFail(n *meshNode, token string) string {
	m.t.Helper()
	args := append(m.nodeArgs(n), m.joinArgs(m.node("hub-1"), token)...)
	out, err := m.run(n.host, args...)
	if err == nil {
		m.t.Fatalf("%s joined with token %q; want a refusal", n.name, token)
	}
	m.logf("%s refused as expected: %v", n.name, err)
	return strings.ToLower(out + " " + err.Error())
}

// hold calls check every second for d and fails the test on its first
// error. It is the opposite of eventually: something must stay true.
func (m *mesh) hold(d time.Duration, what string, check func() error) {
	m.t.Helper()
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if err := check(); err != nil {
			m.t.Fatalf("%s stopped holding after %s: %v", what, d-time.Until(end).Round(time.Second), err)
		}
		select {
		case <-m.t.Context().Done():
			return
		case <-time.After(time.Second):
		}
	}
}

func keys[V any](mp map[string]V) []string {
	ks := make([]string, 0, len(mp))
	for k := range mp {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
