package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// memStats are peak resident sets (VmHWM) and peaks of the anonymous part
// of it (RssAnon, sampled each second: the process's own memory, without
// the pages of the binary that every process maps and the kernel shares),
// in MiB; for the hub also the peak of its mapped files' pages (RssFile:
// the binary and the tables of its Badger stores, page cache the kernel
// takes back when it needs the memory).
type memStats struct {
	hub, hubAnon, hubFile         float64
	leaderMax, leaderMean         float64
	leaderAnonMax, leaderAnonMean float64
	simTotal, simPerMember        float64
}

// procStatus reads a field of a process's status in MiB.
func procStatus(pid int, field string) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}

// vmHWM reads a process's peak resident set in MiB.
func vmHWM(pid int) float64 { return procStatus(pid, "VmHWM") }

// sampleAnon records the peak RssAnon of the hub and the leaders, and the
// hub's peak RssFile.
func (f *fleet) sampleAnon() {
	f.mu.Lock()
	hub := f.hub
	f.mu.Unlock()
	for _, c := range f.leadersAndHub() {
		v := procStatus(c.Process.Pid, "RssAnon")
		var file float64
		if c == hub {
			file = procStatus(c.Process.Pid, "RssFile")
		}
		f.mu.Lock()
		if f.anonPeak == nil {
			f.anonPeak = map[int]float64{}
		}
		f.anonPeak[c.Process.Pid] = max(f.anonPeak[c.Process.Pid], v)
		f.filePeak = max(f.filePeak, file)
		f.mu.Unlock()
	}
}

// leadersAndHub lists the started hub and leaders.
func (f *fleet) leadersAndHub() []*exec.Cmd {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*exec.Cmd
	for _, c := range append([]*exec.Cmd{f.hub}, f.leaders...) {
		if c != nil && c.Process != nil {
			out = append(out, c)
		}
	}
	return out
}

func (f *fleet) memory() memStats {
	m := memStats{hub: vmHWM(f.hub.Process.Pid)}
	f.mu.Lock()
	m.hubAnon, m.hubFile = f.anonPeak[f.hub.Process.Pid], f.filePeak
	for _, c := range f.leaders {
		v := f.anonPeak[c.Process.Pid]
		m.leaderAnonMax = max(m.leaderAnonMax, v)
		m.leaderAnonMean += v / float64(len(f.leaders))
	}
	f.mu.Unlock()
	pids := func(cmds []*exec.Cmd) []float64 {
		var out []float64
		for _, c := range cmds {
			out = append(out, vmHWM(c.Process.Pid))
		}
		return out
	}
	for _, v := range pids(f.leaders) {
		m.leaderMax = max(m.leaderMax, v)
		m.leaderMean += v / float64(len(f.leaders))
	}
	for _, v := range pids(f.sims) {
		m.simTotal += v
	}
	if members := f.sites * (f.perSite - 1); members > 0 {
		m.simPerMember = m.simTotal / float64(members)
	}
	return m
}

type tableInput struct {
	rows      []row
	write     row
	sent, raw float64
	// memFirst is taken after the first read, exec and write, mem after
	// every task (tasks of them).
	memFirst, mem         memStats
	tasks                 int
	total, sites, perSite int
	procs                 int
	idle                  [3]float64 // cores: hub, leaders, simulators
	hubLimit              string     // the hub's --memory-limit
}

// printTable prints the README's table.
func printTable(w io.Writer, in tableInput) {
	fmt.Fprintf(w, "\n%d nodes in %d sites (%d per site: an `outpost node` leading each site and %d stateless members, hosted %d processes to the machine), one hub.\n\n",
		in.total, in.sites, in.perSite, in.perSite-1, in.procs)
	fmt.Fprintln(w, "| task | nodes | succeeded | time to complete | results/s | CPU-s: hub / site leaders / simulated members |")
	fmt.Fprintln(w, "|---|--:|--:|--:|--:|--:|")
	for _, r := range in.rows {
		fmt.Fprintf(w, "| %s | %d | %d | %.2f s | %.0f | %s |\n", r.what, in.total, r.counts["succeeded"], r.elapsed.Seconds(),
			float64(r.counts["succeeded"])/r.elapsed.Seconds(), r.cpuText())
	}
	fmt.Fprintf(w, "| write of a 10 MiB file (contentFrom) to 10 nodes × 10 sites | 100 | %d | %.2f s | %.0f | %s |\n",
		in.write.counts["succeeded"], in.write.elapsed.Seconds(), float64(in.write.counts["succeeded"])/in.write.elapsed.Seconds(), in.write.cpuText())
	const mib = 1 << 20
	fmt.Fprintf(w, "\n| measure | value |\n|---|--:|\n")
	fmt.Fprintf(w, "| bytes the hub sent during the write (idle traffic taken off) | %.1f MiB (%.2f× the 100 MiB of once per site; 1,000 MiB if sent per node) |\n", in.sent/mib, in.sent/(100*mib))
	fmt.Fprintf(w, "| the same, raw | %.1f MiB |\n", in.raw/mib)
	fmt.Fprintf(w, "| CPU of the idle fleet: hub / site leaders / simulated members | %.2f / %.2f / %.2f cores |\n", in.idle[0], in.idle[1], in.idle[2])
	fmt.Fprintf(w, "| hub peak memory after the first read, exec and write: own (RssAnon, --memory-limit %s) / mapped files (RssFile) / VmHWM | %.0f / %.0f / %.0f MiB |\n", in.hubLimit, in.memFirst.hubAnon, in.memFirst.hubFile, in.memFirst.hub)
	fmt.Fprintf(w, "| ↳ after all %d tasks | %.0f / %.0f / %.0f MiB |\n", in.tasks, in.mem.hubAnon, in.mem.hubFile, in.mem.hub)
	fmt.Fprintf(w, "| site leader peak memory, max / mean: VmHWM | %.0f / %.0f MiB |\n", in.mem.leaderMax, in.mem.leaderMean)
	fmt.Fprintf(w, "| ↳ own (RssAnon: the binary's shared pages left out) | %.0f / %.0f MiB |\n", in.mem.leaderAnonMax, in.mem.leaderAnonMean)
	fmt.Fprintf(w, "| simulated members, all processes / per member | %.0f MiB / %.2f MiB |\n", in.mem.simTotal, in.mem.simPerMember)
	fmt.Fprintf(w, "\nAnchors: Choria, 50,000 nodes in about 16 s on 4 vCPU (about 3,100 nodes/s); Salt, about 15,000 minions on a 12-core master; `/bin/true` forks at about 2,000/s here, so exec's floor for 10,000 nodes is about 5 s.\n")
}

// cpuText is a task's CPU seconds by part of the fleet.
func (r row) cpuText() string {
	return fmt.Sprintf("%.1f / %.1f / %.1f", r.cpu[0], r.cpu[1], r.cpu[2])
}
