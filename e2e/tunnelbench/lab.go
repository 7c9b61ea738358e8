package main

import (
	"fmt"
	"os/exec"
	"strconv"
	"strings"
)

// link is two network namespaces, hub and edge, joined by a veth pair
// capped at mbit Mbit/s each way by tbf. Nothing is added to the root
// namespace, and the namespaces get no default route: traffic stays
// between them.
type link struct {
	hub, edge     string // namespace names
	hubIP, edgeIP string
}

// The link's subnet, reachable only inside its two namespaces.
const (
	linkHubIP  = "10.214.77.1"
	linkEdgeIP = "10.214.77.2"
)

// newLink creates the namespaces, the veth pair and the rate limit. On
// error it deletes what it made.
func newLink(tag string, mbit int) (l *link, err error) {
	l = &link{hub: "tbhub-" + tag, edge: "tbedge-" + tag, hubIP: linkHubIP, edgeIP: linkEdgeIP}
	defer func() {
		if err != nil {
			l.close()
		}
	}()
	burst := strconv.Itoa(max(mbit*1_000_000/8/100, 32*1024)) // one 10 ms tick of traffic, or a few packets
	steps := [][]string{
		{"ip", "netns", "add", l.hub},
		{"ip", "netns", "add", l.edge},
		{"ip", "-n", l.hub, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", l.edge},
		{"ip", "-n", l.hub, "addr", "add", l.hubIP + "/24", "dev", "eth0"},
		{"ip", "-n", l.edge, "addr", "add", l.edgeIP + "/24", "dev", "eth0"},
	}
	for _, ns := range []string{l.hub, l.edge} {
		steps = append(steps,
			[]string{"ip", "-n", ns, "link", "set", "lo", "up"},
			[]string{"ip", "-n", ns, "link", "set", "eth0", "up"},
			[]string{"ip", "netns", "exec", ns, "tc", "qdisc", "replace", "dev", "eth0", "root", "tbf",
				"rate", strconv.Itoa(mbit) + "mbit", "burst", burst, "latency", "50ms"})
	}
	for _, s := range steps {
		if out, err := exec.Command(s[0], s[1:]...).CombinedOutput(); err != nil {
			return l, fmt.Errorf("%s: %v: %s", strings.Join(s, " "), err, out)
		}
	}
	return l, nil
}

// close deletes both namespaces (and with them the veth pair).
func (l *link) close() {
	for _, ns := range []string{l.hub, l.edge} {
		_ = exec.Command("ip", "netns", "del", ns).Run()
	}
}
