//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// firewallVars sets the networks the guide's firewall block (step 3)
// fills its sets with, as an operator would for this lab: the hub
// members' addresses; on hub members, the sites' hosts as the sites'
// links and ctl as the operators; on a site host, its site for every set
// but the hub's, as the guide says.
func (g *guideLab) firewallVars() {
	ips := func(nodes []*meshNode) string {
		var out []string
		for _, n := range nodes {
			out = append(out, n.host.IP())
		}
		return strings.Join(out, ", ")
	}
	hub, site := ips(g.siteNodes("hub")), ips(g.siteNodes(guideSite))
	g.vars["HUB_IPS"] = hub
	g.hostVars = map[string]map[string]string{}
	for _, n := range g.siteNodes("hub") {
		g.hostVars[n.name] = map[string]string{"SITE_LAN": hub, "SITE_NETS": site, "OPERATOR_NETS": g.node0("ctl").IP()}
	}
	for _, n := range g.siteNodes(guideSite) {
		g.hostVars[n.name] = map[string]string{"SITE_LAN": site, "SITE_NETS": site, "OPERATOR_NETS": site}
	}
}

// checkFirewall checks that the guide's firewall, which the mesh formed
// through, drops what it should: a site host reaching hub-1's admin API
// or its gossip port is dropped by the rules that count what they drop.
func (g *guideLab) checkFirewall() {
	g.t.Helper()
	hub, site := g.node0("hub-1"), g.node0(guideSite+"-1")
	for _, tc := range []struct {
		port int
		rule string
	}{
		{7080, "tcp dport 7080"},
		{7946, "th dport 7946"},
	} {
		before := g.dropped(hub.Name(), tc.rule)
		ctx, cancel := context.WithTimeout(g.t.Context(), 30*time.Second)
		// A dropped SYN is never answered: the connect gives up after 2 s.
		out, err := site.Command(ctx, "timeout", "2", "bash", "-c", fmt.Sprintf("exec 3<>/dev/tcp/%s/%d", hub.IP(), tc.port)).CombinedOutput()
		cancel()
		if err == nil {
			g.t.Errorf("%s reached %s:%d through the guide's firewall (%s)", site.Name(), hub.Name(), tc.port, out)
			continue
		}
		if after := g.dropped(hub.Name(), tc.rule); after <= before {
			g.t.Errorf("%s's rule %q dropped %d packets before and %d after %s tried port %d; want more", hub.Name(), tc.rule, before, after, site.Name(), tc.port)
		}
	}
}

// dropCounter reads a drop rule's packet count from `nft list table`.
var dropCounter = regexp.MustCompile(`counter packets (\d+) bytes \d+ drop`)

// dropped is the packet count of the guide's drop rule that matches rule
// on host.
func (g *guideLab) dropped(host, rule string) int {
	g.t.Helper()
	ctx, cancel := context.WithTimeout(g.t.Context(), 30*time.Second)
	defer cancel()
	out, err := g.node0(host).Command(ctx, "nft", "list", "table", "inet", "outpost").Output()
	if err != nil {
		g.t.Fatalf("%s: nft list table inet outpost: %v", host, err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if m := dropCounter.FindStringSubmatch(line); m != nil && strings.Contains(line, rule) {
			n, _ := strconv.Atoi(m[1])
			return n
		}
	}
	g.t.Fatalf("%s: no drop rule with %q in:\n%s", host, rule, out)
	return 0
}
