package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// udpCounters reads the namespace's UDP counters (the Udp lines of
// /proc/net/snmp), by name; nil when they cannot be read.
func udpCounters() map[string]int64 {
	b, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		return nil
	}
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
		out := map[string]int64{}
		for i, f := range fields {
			if i < len(names) {
				out[names[i]], _ = strconv.ParseInt(f, 10, 64)
			}
		}
		return out
	}
	return nil
}

// udpSince says how many datagrams the fleet sent during a task, per
// device, and how many the kernel dropped for a full receive buffer: a
// process starved of CPU long enough drops, and QUIC sends again.
func udpSince(before map[string]int64, devices int) string {
	after := udpCounters()
	if before == nil || after == nil || devices == 0 {
		return "UDP counters not readable"
	}
	d := func(k string) int64 { return after[k] - before[k] }
	return fmt.Sprintf("UDP datagrams sent %d (%.1f a device), receive-buffer drops %d, send-buffer errors %d",
		d("OutDatagrams"), float64(d("OutDatagrams"))/float64(devices), d("RcvbufErrors"), d("SndbufErrors"))
}
