package main

import (
	"fmt"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// udpPorts are the fleet's UDP ports whose datagrams each task counts, by
// the name of the iptables rule that counts them.
var udpPorts = map[string]string{"otascale-quic": "7443", "otascale-gossip": strconv.Itoa(gossipPort)}

// leaderGossipRule names the rules that count the site leaders' gossip.
const leaderGossipRule = "otascale-leader-gossip"

var countOnce sync.Once

// udpCounters returns, by name, the datagrams the fleet's QUIC and gossip
// ports have sent, the gossip of the leaders of its sites apart (iptables
// rules in this namespace, added on the first call), and the namespace's
// UDP counters (the Udp lines of /proc/net/snmp); nil when they cannot be
// read.
func udpCounters(sites int) map[string]int64 {
	countOnce.Do(func() {
		rules := [][]string{}
		for rule, port := range udpPorts {
			rules = append(rules, []string{"--sport", port, "-m", "comment", "--comment", rule})
		}
		// The site leaders' gossip apart (127.1.K.1): it tells their
		// probes and suspicions from the members'.
		for k := 1; k <= sites; k++ {
			rules = append(rules, []string{"-s", nodeIP(k, 0), "--sport", strconv.Itoa(gossipPort), "-m", "comment", "--comment", leaderGossipRule})
		}
		for _, r := range rules {
			if out, err := exec.Command("iptables", append([]string{"-w", "-A", "OUTPUT", "-p", "udp"}, r...)...).CombinedOutput(); err != nil {
				fmt.Fprintf(os.Stderr, "otascale: iptables: %v: %s\n", err, out)
				return
			}
		}
	})
	b, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		return nil
	}
	out := map[string]int64{}
	var names []string
	for _, line := range strings.Split(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, "Udp: ")
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if names == nil {
			names = fields
			continue
		}
		for i, f := range fields {
			if i < len(names) {
				out[names[i]], _ = strconv.ParseInt(f, 10, 64)
			}
		}
		break
	}
	if rules, err := exec.Command("iptables", "-w", "-L", "OUTPUT", "-v", "-x", "-n").Output(); err == nil {
		for _, line := range strings.Split(string(rules), "\n") {
			fields := strings.Fields(line)
			if len(fields) == 0 {
				continue
			}
			n, _ := strconv.ParseInt(fields[0], 10, 64)
			for _, rule := range append(slices.Collect(maps.Keys(udpPorts)), leaderGossipRule) {
				if strings.Contains(line, "/* "+rule+" */") {
					out[rule] += n
				}
			}
		}
	}
	return out
}

// udpSince says how many datagrams the fleet sent during a task, per
// device, on its QUIC and its gossip ports, and how many the kernel
// dropped for a full receive buffer: a fleet starved of CPU sends more
// (QUIC's probes, gossip's suspicions and their refutations).
func udpSince(before map[string]int64, sites, devices int) string {
	after := udpCounters(sites)
	if before == nil || after == nil || devices == 0 {
		return "UDP counters not readable"
	}
	d := func(k string) int64 { return after[k] - before[k] }
	per := func(k string) float64 { return float64(d(k)) / float64(devices) }
	return fmt.Sprintf("UDP datagrams sent %d (%.1f a device: QUIC %.1f, gossip %.1f, of which the site leaders' %.1f), receive-buffer drops %d",
		d("OutDatagrams"), per("OutDatagrams"), per("otascale-quic"), per("otascale-gossip"), per(leaderGossipRule), d("RcvbufErrors"))
}
