package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/outpost-mesh/outpost/node"
)

// runBench is `otascale run`.
func runBench(args []string) error {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	sites := fs.Int("sites", 100, "sites (at most 250)")
	perSite := fs.Int("per-site", 100, "nodes per site, the leader included (at most 250)")
	procs := fs.Int("procs", 10, "simulator processes")
	bin := fs.String("outpost", "bin/outpost", "the outpost binary")
	dir := fs.String("dir", "", "working directory (default: a new temporary one, removed at the end)")
	gomaxprocs := fs.Int("gomaxprocs", 1, "GOMAXPROCS of the site leaders and simulators (0: every core); the hub keeps every core")
	settle := fs.Duration("settle", 90*time.Second, "how long the fleet idles at least before the tasks: the gossip of the last joins takes a minute or two to die down")
	settleMax := fs.Duration("settle-max", 5*time.Minute, "how long the fleet idles at most: after -settle it idles on, 15 s at a time, while its CPU still falls")
	repeat := fs.Int("repeat", 3, "runs of the read and of the exec: the first of each, the write, then the others; the table shows each run and the median (on a machine the fleet saturates, a run's time spreads by a second or two), and the hub's memory after the first three tasks and after all")
	hubMemory := fs.String("hub-memory-limit", "640MiB", "the hub's --memory-limit (\"0\": none, Go's default heap growth)")
	profile := fs.String("profiles", "", "directory for profiles: the simulators' heap, and the hub's and a leader's CPU (idle) and heap")
	_ = fs.Parse(args)
	if *sites < 10 || *sites > maxSites || *perSite < 10 || *perSite > maxSites {
		return fmt.Errorf("-sites and -per-site must be between 10 and %d", maxSites)
	}
	if *settleMax < *settle {
		return fmt.Errorf("-settle-max %s must be at least -settle %s", *settleMax, *settle)
	}
	if *repeat < 1 || *repeat > 9 {
		return fmt.Errorf("-repeat must be between 1 and 9")
	}
	if _, err := exec.LookPath("iptables"); err != nil {
		// The write's bytes are counted with it, after ten minutes of
		// bringing up the fleet: say so now.
		return fmt.Errorf("iptables is not installed (apt-get install -y iptables; make bench-ota installs it): it counts the bytes the hub sends")
	}
	if os.Getenv("OTASCALE_NETNS") == "" {
		return inNetns(args)
	}
	raiseOpenFiles()
	outpost, err := filepath.Abs(*bin)
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if *dir == "" {
		d, err := os.MkdirTemp("", "otascale-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		*dir = d
	}
	for _, d := range []string{"logs", "files"} {
		if err := os.MkdirAll(filepath.Join(*dir, d), 0o755); err != nil {
			return err
		}
	}
	if *profile != "" {
		if err := os.MkdirAll(*profile, 0o755); err != nil {
			return fmt.Errorf("-profiles: %w", err)
		}
	}
	f := &fleet{bin: outpost, self: self, dir: *dir, sites: *sites, perSite: *perSite, profile: *profile, gomaxprocs: *gomaxprocs, hubMemory: *hubMemory}
	defer f.stop(context.Background())
	go guardMemory(f)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sigs
		phase("interrupted; stopping the fleet")
		f.stop(context.Background())
		os.Exit(1)
	}()
	total := *sites * *perSite

	t0 := time.Now()
	phase("starting the hub")
	if err := f.startHub(); err != nil {
		return err
	}
	tokens, err := f.tokens()
	if err != nil {
		return err
	}
	tokensFile := filepath.Join(*dir, "tokens.json")
	b, _ := json.Marshal(tokens)
	if err := os.WriteFile(tokensFile, b, 0o600); err != nil {
		return err
	}
	phase("starting %d site leaders", *sites)
	if err := f.startLeaders(tokens); err != nil {
		return err
	}
	if err := f.waitNodes(*sites+1, 5*time.Minute); err != nil {
		return err
	}
	phase("starting %d simulated members in %d processes", total-*sites, *procs)
	if err := f.startSims(*procs, tokensFile); err != nil {
		return err
	}
	if err := f.waitNodes(total+1, 20*time.Minute); err != nil {
		return err
	}
	phase("fleet of %d nodes up in %s; letting it settle for %s or more", total, time.Since(t0).Round(time.Second), *settle)
	idle := f.settle(*settle, *settleMax)
	if f.profile != "" {
		f.saveProfiles("idle-")
	}

	small := filepath.Join(*dir, "files", "small.txt")
	if err := os.WriteFile(small, []byte("outpost scale benchmark: a small file to read\n"), 0o644); err != nil {
		return err
	}
	var allSites []string
	for k := 1; k <= *sites; k++ {
		allSites = append(allSites, siteName(k))
	}
	every := map[string]any{"sites": allSites}
	// The benchmark is one read, one exec and the write; the
	// read's and the exec's further runs (-repeat) come after the write,
	// and the hub's memory is taken after each part.
	timed := []struct {
		name  string
		label string
		step  map[string]any
	}{
		{"scale-read", "read of a small file", map[string]any{"name": "read", "type": "read", "path": small}},
		{"scale-exec", "exec of `true`", map[string]any{"name": "true", "type": "exec", "command": []string{"true"}}},
	}
	runs := make([][]row, len(timed))
	runTimed := func(ti, i int) error {
		tc := timed[ti]
		name := fmt.Sprintf("%s-%d", tc.name, i)
		phase("task %s on %d nodes", name, total)
		r, err := f.runTask(name, every, tc.step, total)
		if err != nil {
			return err
		}
		r.what = fmt.Sprintf("%s, run %d", tc.label, i)
		runs[ti] = append(runs[ti], r)
		return nil
	}
	for ti := range timed {
		if err := runTimed(ti, 1); err != nil {
			return err
		}
	}

	// The write: a 10 MiB file, in the hub's registry (outpost blob
	// push), to 10 nodes in each of 10 sites: each site should fetch it
	// over the WAN once.
	var ten []string
	for k := 1; k <= 10; k++ {
		for j := range 10 {
			ten = append(ten, nodeName(k, j))
		}
	}
	payload := filepath.Join(*dir, "payload.bin")
	content := make([]byte, 10<<20)
	_, _ = rand.Read(content)
	if err := os.WriteFile(payload, content, 0o600); err != nil {
		return err
	}
	out, err := f.cli("blob", "push", payload, "--registry", hubAddr+":5000")
	if err != nil {
		return err
	}
	var pushed struct {
		ContentFrom map[string]any `json:"contentFrom"`
	}
	if err := yaml.Unmarshal(out, &pushed); err != nil || pushed.ContentFrom == nil {
		return fmt.Errorf("outpost blob push printed %q: %v", out, err)
	}
	if err := countHubBytes(); err != nil {
		return err
	}
	idleStart, _ := hubBytes()
	time.Sleep(10 * time.Second)
	idleEnd, _ := hubBytes()
	idleRate := float64(idleEnd-idleStart) / 10
	phase("task scale-write (10 MiB contentFrom to 10 nodes in 10 sites); idle hub traffic %.0f B/s", idleRate)
	before, err := hubBytes()
	if err != nil {
		return err
	}
	w, err := f.runTask("scale-write", map[string]any{"nodes": ten},
		map[string]any{"name": "write", "type": "write", "path": filepath.Join(*dir, "files", "written.bin"), "contentFrom": pushed.ContentFrom}, len(ten))
	if err != nil {
		return err
	}
	after, _ := hubBytes()
	sent := float64(after-before) - idleRate*w.elapsed.Seconds()
	memFirst := f.memory()

	for ti := range timed {
		for i := 2; i <= *repeat; i++ {
			time.Sleep(repeatPause) // the last reports and acknowledgements
			if err := runTimed(ti, i); err != nil {
				return err
			}
		}
	}
	var rows []row
	for ti, tc := range timed {
		rows = append(rows, runs[ti]...)
		if len(runs[ti]) > 1 {
			m := median(runs[ti])
			m.what = fmt.Sprintf("%s, **median of %d**", tc.label, len(runs[ti]))
			rows = append(rows, m)
		}
	}
	mem := f.memory()
	if f.profile != "" {
		f.saveProfiles("")
	}
	printTable(os.Stdout, tableInput{idle: idle, rows: rows, write: w, sent: sent, raw: float64(after - before), memFirst: memFirst, mem: mem, tasks: 1 + len(timed)*(*repeat), total: total, sites: *sites, perSite: *perSite, procs: *procs, hubLimit: *hubMemory})
	return nil
}

// repeatPause separates the runs of a task.
const repeatPause = 15 * time.Second

// median returns the run of median time (the faster of the two middle
// ones for an even count).
func median(runs []row) row {
	sorted := slices.Clone(runs)
	slices.SortFunc(sorted, func(a, b row) int { return cmp.Compare(a.elapsed, b.elapsed) })
	return sorted[(len(sorted)-1)/2]
}

// row is one timed task.
type row struct {
	what     string
	elapsed  time.Duration
	counts   map[string]int
	cpu      [3]float64 // seconds: hub, leaders, simulators
	phase    string
	failures string
	spread   string
}

// runTask applies a task and waits for it to end, timing it from the
// apply to the completion the hub reports.
func (f *fleet) runTask(name string, targets map[string]any, step map[string]any, want int) (row, error) {
	task := map[string]any{
		"apiVersion": "ota.outpost.dev/v1alpha1", "kind": "Task",
		"metadata": map[string]any{"name": name},
		"spec": map[string]any{
			"targets": targets, "steps": []any{step},
			"concurrency": "100%", "deviceTimeout": "10m", "deliveryDeadline": "10m",
		},
	}
	b, err := yaml.Marshal(task)
	if err != nil {
		return row{}, err
	}
	path := filepath.Join(f.dir, name+".yaml")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return row{}, err
	}
	phase("task %s: the simulators collected their garbage first, in %.1f s", name, f.collectSims().Seconds())
	cpu0 := f.fleetCPU()
	udp0 := udpCounters(f.sites)
	start := time.Now()
	if _, err := f.cli("apply", "-f", path); err != nil {
		return row{}, err
	}
	if f.profile != "" {
		// CPU profiles of the hub, a leader and the simulators while the
		// task runs, and where their goroutines wait 3 s in.
		go f.saveProfiles(name + "-")
		f.signalSims(syscall.SIGUSR1)
		go func() {
			time.Sleep(3 * time.Second)
			f.saveGoroutines(name + "-")
		}()
	}
	ended, counts, err := f.waitTask(name, 15*time.Minute)
	if err != nil {
		return row{}, err
	}
	r := row{elapsed: time.Since(start), counts: counts, phase: ended}
	for i, v := range f.fleetCPU() {
		r.cpu[i] = v - cpu0[i]
	}
	r.spread = f.spread(name, start) + "; " + udpSince(udp0, f.sites, want)
	if r.counts["succeeded"] != want {
		r.failures = f.failures(name)
		phase("task %s ended %s with %v; failures:\n%s", name, r.phase, r.counts, r.failures)
	}
	phase("task %s: %s in %.2fs, %v; %s", name, r.phase, r.elapsed.Seconds(), r.counts, r.spread)
	return r, nil
}

// waitTask follows task name through a watch until it ends, and returns
// its phase and counts. The watch costs the hub an encoding of the task per
// status write (every 500 ms while it runs, at once when it ends); polling
// a task that lists ten thousand targets ten times a second cost the hub
// about 60 ms of CPU a second, on the machine being measured.
func (f *fleet) waitTask(name string, timeout time.Duration) (string, map[string]int, error) {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		phase, counts, err := f.watchTask(name)
		if phase != "" {
			return phase, counts, nil
		}
		last = err // the watch ended (its timeout, a hub restart): watch again
		time.Sleep(100 * time.Millisecond)
	}
	return "", nil, fmt.Errorf("task %s: not ended within %s (last error: %v)", name, timeout, last)
}

// watchTask reads one watch of task name until the task ends (its phase
// and counts) or the watch does (an empty phase).
func (f *fleet) watchTask(name string) (string, map[string]int, error) {
	resp, err := f.apiRequest("/apis/ota.outpost.dev/v1alpha1/tasks?watch=true&timeoutSeconds=20&fieldSelector=" + url.QueryEscape("metadata.name="+name))
	if err != nil {
		return "", nil, err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	for {
		var ev struct {
			Object struct {
				Status struct {
					Phase  string         `json:"phase"`
					Counts map[string]int `json:"counts"`
				} `json:"status"`
			} `json:"object"`
		}
		if err := dec.Decode(&ev); err != nil {
			return "", nil, err
		}
		switch st := ev.Object.Status; st.Phase {
		case "Succeeded", "Failed", "Halted", "Canceled":
			return st.Phase, st.Counts, nil
		}
	}
}

// failures summarizes a task's failed results, grouped by reason.
func (f *fleet) failures(task string) string {
	out, err := f.cli("get", "deviceresults", "-l", "ota.outpost.dev/task="+task, "-o", "json")
	if err != nil {
		return err.Error()
	}
	var list struct {
		Items []struct {
			Spec struct {
				Node string `json:"node"`
			} `json:"spec"`
			Status struct {
				Phase   string `json:"phase"`
				Reason  string `json:"reason"`
				Message string `json:"message"`
			} `json:"status"`
		} `json:"items"`
	}
	if err := json.Unmarshal(out, &list); err != nil {
		return err.Error()
	}
	groups := map[string][]string{}
	for _, it := range list.Items {
		if it.Status.Phase != "Succeeded" {
			k := it.Status.Phase + " " + it.Status.Reason + ": " + it.Status.Message
			groups[k] = append(groups[k], it.Spec.Node)
		}
	}
	var b strings.Builder
	for k, nodes := range groups {
		fmt.Fprintf(&b, "  %d × %s (e.g. %s)\n", len(nodes), k, nodes[0])
	}
	return b.String()
}

// cpuSeconds is a process's user+system CPU time.
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(fields) < 13 {
		return 0
	}
	u, _ := strconv.ParseFloat(fields[11], 64)
	st, _ := strconv.ParseFloat(fields[12], 64)
	return (u + st) / 100 // USER_HZ
}

// countHubBytes adds an iptables rule in this namespace that counts what
// the hub's QUIC port sends.
func countHubBytes() error {
	out, err := exec.Command("iptables", "-w", "-A", "OUTPUT", "-p", "udp", "-s", hubAddr, "--sport", "7443", "-m", "comment", "--comment", "otascale-hub").CombinedOutput()
	if err != nil {
		return fmt.Errorf("iptables: %v: %s", err, out)
	}
	return nil
}

// hubBytes reads that counter.
func hubBytes() (int64, error) {
	out, err := exec.Command("iptables", "-w", "-L", "OUTPUT", "-v", "-x", "-n").Output()
	if err != nil {
		return 0, fmt.Errorf("iptables -L: %w", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "otascale-hub") {
			fields := strings.Fields(line)
			if len(fields) > 1 {
				return strconv.ParseInt(fields[1], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("iptables: the otascale-hub rule is gone")
}

// saveProfiles fetches profiles of the hub and every site leader from
// their control sockets: heap profiles, or with a prefix ("idle-", a
// task's name) 15 s CPU profiles (taken together). The leaders' are
// leader-sNNN.pprof; `go tool pprof` merges them when given them all.
func (f *fleet) saveProfiles(prefix string) {
	path := "/debug/pprof/heap"
	if prefix != "" {
		path = "/debug/pprof/profile?seconds=15"
	}
	dirs := map[string]string{"hub": filepath.Join(f.dir, "hub")}
	for k := 1; k <= f.sites; k++ {
		dirs["leader-"+siteName(k)] = filepath.Join(f.dir, "leaders", siteName(k))
	}
	var wg sync.WaitGroup
	for name, dataDir := range dirs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sock := filepath.Join(dataDir, node.SocketName)
			c := http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "unix", sock)
			}}}
			resp, err := c.Get("http://outpost" + path)
			if err != nil {
				fmt.Fprintln(os.Stderr, "otascale: profile of", name+":", err)
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err := os.WriteFile(filepath.Join(f.profile, prefix+name+".pprof"), b, 0o644); err != nil {
				fmt.Fprintln(os.Stderr, "otascale: profile of", name+":", err)
			}
		}()
	}
	wg.Wait()
}

// saveGoroutines writes the goroutines of the hub and the first site's
// leader, grouped by stack, for seeing what a task waits on.
func (f *fleet) saveGoroutines(prefix string) {
	for name, dataDir := range map[string]string{"hub": filepath.Join(f.dir, "hub"), "leader": filepath.Join(f.dir, "leaders", siteName(1))} {
		sock := filepath.Join(dataDir, node.SocketName)
		c := http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}}}
		resp, err := c.Get("http://outpost/debug/pprof/goroutine?debug=1")
		if err != nil {
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err := os.WriteFile(filepath.Join(f.profile, prefix+name+".goroutines.txt"), b, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "otascale: goroutines of", name+":", err)
		}
	}
}

// guardMemory samples the processes' own memory each second (sampleAnon)
// and stops the benchmark before the machine runs out of memory:
// below 1 GiB available it kills the fleet and exits.
func guardMemory(f *fleet) {
	for range time.Tick(time.Second) {
		f.sampleAnon()
		b, err := os.ReadFile("/proc/meminfo")
		if err != nil {
			return
		}
		for _, line := range strings.Split(string(b), "\n") {
			if rest, ok := strings.CutPrefix(line, "MemAvailable:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
				if kb < 1<<20 {
					phase("only %d MiB of memory left; stopping the fleet (use fewer -sites or -per-site)", kb>>10)
					for _, c := range f.procs() {
						if c != nil && c.Process != nil {
							_ = c.Process.Kill()
						}
					}
					os.Exit(1)
				}
			}
		}
	}
}

// spread says when the devices of a task started and ended, in seconds
// after the apply (the API's times have one-second resolution).
func (f *fleet) spread(task string, applied time.Time) string {
	out, err := f.cli("get", "deviceresults", "-l", "ota.outpost.dev/task="+task, "-o", "json")
	if err != nil {
		return err.Error()
	}
	var list struct {
		Items []struct {
			Status struct {
				StartTime      *time.Time `json:"startTime"`
				CompletionTime *time.Time `json:"completionTime"`
			} `json:"status"`
		} `json:"items"`
	}
	if err := json.Unmarshal(out, &list); err != nil {
		return err.Error()
	}
	var starts, ends []float64
	for _, it := range list.Items {
		if t := it.Status.StartTime; t != nil {
			starts = append(starts, t.Sub(applied.Truncate(time.Second)).Seconds())
		}
		if t := it.Status.CompletionTime; t != nil {
			ends = append(ends, t.Sub(applied.Truncate(time.Second)).Seconds())
		}
	}
	q := func(v []float64, p float64) float64 {
		if len(v) == 0 {
			return -1
		}
		slices.Sort(v)
		return v[int(p*float64(len(v)-1))]
	}
	return fmt.Sprintf("started at %.0f/%.0f/%.0f s, completed at %.0f/%.0f/%.0f s (min/median/max)",
		q(starts, 0), q(starts, 0.5), q(starts, 1), q(ends, 0), q(ends, 0.5), q(ends, 1))
}

// raiseOpenFiles raises this process's limit of open files to its hard
// limit: a simulator holds thousands.
func raiseOpenFiles() {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err == nil {
		rl.Cur = rl.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
	}
}
