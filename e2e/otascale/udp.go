package main

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
)

// udpPorts are the fleet's UDP ports whose datagrams each task counts, by
// the name of the iptables rule that counts them.
var udpPorts = map[string]string{"otascale-quic": "7443", "otascale-gossip": strconv.Itoa(gossipPort)}

var countOnce sync.Once

// udpCounters returns the datagrams the fleet's QUIC and gossip ports
// have sent (iptables rules in this namespace, added on the first call)
// and the namespace's UDP counters (the Udp lines of /proc/net/snmp), by
// name; nil when they cannot be read.
func udpCounters() map[string]int64 {
	countOnce.Do(func() {
		for rule, port := range udpPorts {
			if out, err := exec.Command("iptables", "-w", "-A", "OUTPUT", "-p", "udp", "--sport", port, "-m", "comment", "--comment", rule).CombinedOutput(); err != nil {
				fmt.Fprintf(os.Stderr, "otascale: iptables: %v: %s\n", err, out)
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
			for rule := range udpPorts {
				if fields := strings.Fields(line); strings.Contains(line, rule) && len(fields) > 0 {
					out[rule], _ = strconv.ParseInt(fields[0], 10, 64)
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
func udpSince(before map[string]int64, devices int) string {
	after := udpCounters()
	if before == nil || after == nil || devices == 0 {
		return "UDP counters not readable"
	}
	d := func(k string) int64 { return after[k] - before[k] }
	per := func(k string) float64 { return float64(d(k)) / float64(devices) }
	return fmt.Sprintf("UDP datagrams sent %d (%.1f a device: QUIC %.1f, gossip %.1f), receive-buffer drops %d",
		d("OutDatagrams"), per("OutDatagrams"), per("otascale-quic"), per("otascale-gossip"), d("RcvbufErrors"))
}
