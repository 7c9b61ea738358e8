package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/outpost-mesh/outpost/node"
)

// fleet is the hub, the site leaders and the simulator processes.
type fleet struct {
	bin     string // the outpost binary
	self    string // this binary, for sim
	dir     string
	sites   int
	perSite int
	hub     *exec.Cmd
	leaders []*exec.Cmd
	sims    []*exec.Cmd
	profile string // directory for the simulators' heap profiles, if any
	// gomaxprocs is the site leaders' and simulators' GOMAXPROCS (0: Go's
	// default, every core).
	gomaxprocs int
	// hubMemory is the hub's --memory-limit.
	hubMemory string

	mu       sync.Mutex      // guards the process lists for guardMemory, and the peaks
	anonPeak map[int]float64 // pid → peak RssAnon seen, MiB
	filePeak float64         // the hub's peak RssFile seen, MiB

	apiOnce sync.Once
	api     *http.Client
	creds   *node.Credentials
	apiErr  error
}

// apiRequest sends a GET of path to the hub's admin API, over one
// kept-alive connection (the CLI would start a process and a TLS handshake
// each time, on the machine being measured); the caller closes the body of
// the response, whose status is 200.
func (f *fleet) apiRequest(path string) (*http.Response, error) {
	f.apiOnce.Do(func() {
		f.creds, f.apiErr = node.LoadCredentials(filepath.Join(f.dir, "hub", "admin.yaml"))
		if f.apiErr != nil {
			return
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM([]byte(f.creds.CA))
		f.api = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	})
	if f.apiErr != nil {
		return nil, f.apiErr
	}
	req, err := http.NewRequest(http.MethodGet, f.creds.Server+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+f.creds.Token)
	resp, err := f.api.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s: %s: %s", path, resp.Status, b)
	}
	return resp, nil
}

// procs lists every process started, the simulators first.
func (f *fleet) procs() []*exec.Cmd {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append(append(append([]*exec.Cmd{}, f.sims...), f.leaders...), f.hub)
}

// start runs a process with its output in dir/logs/name.log, with env
// added to this process's environment; it is killed if this process dies.
func (f *fleet) start(name string, env []string, bin string, args ...string) (*exec.Cmd, error) {
	logf, err := os.Create(filepath.Join(f.dir, "logs", name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() { _ = cmd.Wait(); logf.Close() }()
	return cmd, nil
}

// cli runs the outpost CLI against the hub.
func (f *fleet) cli(args ...string) ([]byte, error) {
	cmd := exec.Command(f.bin, args...)
	cmd.Env = append(os.Environ(), "OUTPOST_CONFIG="+filepath.Join(f.dir, "hub", "admin.yaml"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("outpost %s: %v: %s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return out, nil
}

// waitFor polls cond every interval until it holds or timeout passes.
func waitFor(what string, timeout, interval time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		ok, err := cond()
		if ok {
			return nil
		}
		last = err
		time.Sleep(interval)
	}
	return fmt.Errorf("%s: not within %s (last error: %v)", what, timeout, last)
}

func (f *fleet) startHub() error {
	hub, err := f.start("hub", nil, f.bin, "node", "--name", "hub-1", "--site", "hub",
		"--data-dir", filepath.Join(f.dir, "hub"), "--bind-addr", hubAddr, "--advertise-addr", hubAddr,
		"--api-addr", hubAddr+":7080", "--registry-addr", hubAddr+":5000", "--registry-push", "--log-level", "warn",
		"--memory-limit", f.hubMemory)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.hub = hub
	f.mu.Unlock()
	return waitFor("hub API", time.Minute, 200*time.Millisecond, func() (bool, error) {
		_, err := f.cli("get", "sites")
		return err == nil, err
	})
}

// tokens creates one join token per site, for its perSite nodes.
func (f *fleet) tokens() (map[string]string, error) {
	out := map[string]string{}
	for k := 1; k <= f.sites; k++ {
		b, err := f.cli("token", "create", "--site", siteName(k), "--uses", strconv.Itoa(f.perSite), "--ttl", "6h")
		if err != nil {
			return nil, err
		}
		out[siteName(k)] = strings.TrimSpace(string(b))
	}
	return out, nil
}

func (f *fleet) startLeaders(tokens map[string]string) error {
	for k := 1; k <= f.sites; k++ {
		ip := nodeIP(k, 0)
		cmd, err := f.start(nodeName(k, 0), f.hostEnv(), f.bin, "node", "--name", nodeName(k, 0), "--site", siteName(k),
			"--data-dir", filepath.Join(f.dir, "leaders", siteName(k)), "--join", hubAddr+":7443", "--token", tokens[siteName(k)],
			"--bind-addr", ip, "--advertise-addr", ip, "--log-level", "warn", "--gossip-profile", "wan",
			"--registry-addr", ip+":5000")
		if err != nil {
			return err
		}
		f.mu.Lock()
		f.leaders = append(f.leaders, cmd)
		f.mu.Unlock()
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

// startSims spreads the sites over procs simulator processes and starts
// them one at a time, each once the previous one's members are alive at
// the hub: on one machine, 10,000 members joining at once starve each
// other's gossip of CPU.
func (f *fleet) startSims(procs int, tokensFile string) error {
	groups := make([][]string, procs)
	for k := 1; k <= f.sites; k++ {
		groups[(k-1)%procs] = append(groups[(k-1)%procs], strconv.Itoa(k))
	}
	alive := f.sites + 1
	for i, g := range groups {
		if len(g) == 0 {
			continue
		}
		if err := f.startSim(simName(i), g, tokensFile); err != nil {
			return err
		}
		alive += len(g) * (f.perSite - 1)
		if err := f.waitNodes(alive, 10*time.Minute); err != nil {
			return err
		}
	}
	return nil
}

// startSim starts one simulator process and waits until all its members
// run.
func (f *fleet) startSim(name string, sites []string, tokensFile string) error {
	cmd := exec.Command(f.self, "sim", "-hub", hubAddr+":7443", "-tokens", tokensFile, "-sites", strings.Join(sites, ","),
		"-per-site", strconv.Itoa(f.perSite), "-dir", filepath.Join(f.dir, name))
	if f.profile != "" {
		cmd.Args = append(cmd.Args, "-heap-profile", filepath.Join(f.profile, name+".pprof"))
	}
	logf, err := os.Create(filepath.Join(f.dir, "logs", name+".log"))
	if err != nil {
		return err
	}
	cmd.Stderr = logf
	cmd.Env = append(append(os.Environ(), simGC(len(sites)*(f.perSite-1))...), f.hostEnv()...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	f.mu.Lock()
	f.sims = append(f.sims, cmd)
	f.mu.Unlock()
	ready := make(chan error, 1)
	go func() {
		defer logf.Close()
		sc := bufio.NewScanner(stdout)
		ok := false
		for sc.Scan() {
			if !ok && strings.HasPrefix(sc.Text(), "ready") {
				ok = true
				ready <- nil
			}
		}
		_ = cmd.Wait()
		if !ok {
			ready <- fmt.Errorf("%s exited before it was ready; see %s", name, logf.Name())
		}
	}()
	select {
	case err := <-ready:
		return err
	case <-time.After(10 * time.Minute):
		return fmt.Errorf("%s not ready in 10 minutes; see %s", name, logf.Name())
	}
}

// fleetCPU is the CPU seconds used so far by the hub, the site leaders
// and the simulators.
func (f *fleet) fleetCPU() [3]float64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out [3]float64
	for i, cmds := range [][]*exec.Cmd{{f.hub}, f.leaders, f.sims} {
		for _, c := range cmds {
			if c != nil && c.Process != nil {
				out[i] += cpuSeconds(c.Process.Pid)
			}
		}
	}
	return out
}

// nodeStates counts the hub's Node objects by state.
func (f *fleet) nodeStates() (map[string]int, error) {
	out, err := f.cli("get", "nodes", "-o", "json")
	if err != nil {
		return nil, err
	}
	var list struct {
		Items []struct {
			Status struct {
				State string `json:"state"`
			} `json:"status"`
		} `json:"items"`
	}
	if err := json.Unmarshal(out, &list); err != nil {
		return nil, err
	}
	states := map[string]int{}
	for _, it := range list.Items {
		states[it.Status.State]++
	}
	return states, nil
}

// waitNodes waits until the hub sees want nodes alive.
func (f *fleet) waitNodes(want int, timeout time.Duration) error {
	start := time.Now()
	last := -1
	return waitFor(fmt.Sprintf("%d nodes alive at the hub", want), timeout, 3*time.Second, func() (bool, error) {
		st, err := f.nodeStates()
		if err != nil {
			return false, err
		}
		if st["alive"] != last {
			last = st["alive"]
			fmt.Fprintf(os.Stderr, "  %6.1fs  nodes alive at the hub: %d/%d %v\n", time.Since(start).Seconds(), last, want, st)
		}
		return st["alive"] >= want, nil
	})
}

// stop ends every process, the simulators first.
func (f *fleet) stop(ctx context.Context) {
	all := f.procs()
	for _, c := range all {
		if c != nil && c.Process != nil {
			_ = c.Process.Signal(syscall.SIGTERM)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, c := range all {
		if c == nil || c.Process == nil {
			continue
		}
		for time.Now().Before(deadline) && syscall.Kill(c.Process.Pid, 0) == nil && ctx.Err() == nil {
			time.Sleep(100 * time.Millisecond)
		}
		_ = c.Process.Kill()
	}
}

// collectSims has every simulator collect its garbage (collectOnSignal)
// and waits for all of them, at most a minute; it returns how long that
// took. A simulator that does not answer in time is left to it.
func (f *fleet) collectSims() time.Duration {
	f.mu.Lock()
	n := len(f.sims)
	f.mu.Unlock()
	count := func(i int) string {
		b, _ := os.ReadFile(filepath.Join(f.dir, simName(i), collectedFile))
		return string(b)
	}
	before := make([]string, n)
	for i := range before {
		before[i] = count(i)
	}
	start := time.Now()
	f.signalSims(syscall.SIGUSR2)
	for i := 0; i < n && time.Since(start) < time.Minute; {
		if count(i) != before[i] {
			i++
			continue
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start)
}

// simName names simulator process i, its log and its directory.
func simName(i int) string { return fmt.Sprintf("sim-%02d", i) }

// signalSims sends sig to every simulator process.
func (f *fleet) signalSims(sig syscall.Signal) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.sims {
		if c != nil && c.Process != nil {
			_ = c.Process.Signal(sig)
		}
	}
}

// simGC is a simulator's garbage collection: none until its Go memory
// reaches 1 MiB per member it hosts (GOGC=off, GOMEMLIMIT), whatever
// GOGC the environment has. A simulator keeps its members' state in one
// heap (about 410 MiB for 990 members, 110 KiB of each in quic-go's
// listener queues), and every collection, forced every 2 minutes or set
// off by any member's allocations, marks all of it: about 0.4 CPU-s
// each, work a real host does over its own few MiB. At 1 MiB a member a
// simulator collects every few tasks rather than every 2 minutes.
func simGC(members int) []string {
	return []string{"GOGC=off", fmt.Sprintf("GOMEMLIMIT=%dMiB", max(members, 256))}
}

// hostEnv is the environment of the processes that stand for the fleet's
// hosts (site leaders, simulators). Each would have a machine of its own;
// here a hundred Go runtimes share two cores, and each one's scheduler
// spinning on both cores for work costs more than the work when idle.
func (f *fleet) hostEnv() []string {
	if f.gomaxprocs <= 0 {
		return nil
	}
	return []string{"GOMAXPROCS=" + strconv.Itoa(f.gomaxprocs)}
}

// settleWindow is how long each measure of the idle fleet's CPU lasts.
const settleWindow = 15 * time.Second

// settle lets the fleet idle for at least least and at most most, and
// returns the cores it used in its last settleWindow, by hub, leaders
// and simulators. Past least it idles on while a window's CPU is more
// than a tenth below the one before: ten thousand joins on one machine
// leave gossip (suspicions, refutations, roster updates to the hub) that
// dies down over minutes, not always within the first one or two, and a
// task run in it measured that too (reads of 9.3 s after an idle fleet of
// 0.31 cores, 11.4 s after one of 0.57).
func (f *fleet) settle(least, most time.Duration) [3]float64 {
	start := time.Now()
	time.Sleep(max(least-2*settleWindow, 0))
	var idle [3]float64
	prev := -1.0
	for {
		cpu0 := f.fleetCPU()
		time.Sleep(settleWindow)
		cpu1 := f.fleetCPU()
		sum := 0.0
		for i := range idle {
			idle[i] = (cpu1[i] - cpu0[i]) / settleWindow.Seconds()
			sum += idle[i]
		}
		phase("%6s  the idle fleet uses %.2f cores (hub, leaders, simulated members: %.2f)", time.Since(start).Round(time.Second), sum, idle)
		falling := prev < 0 || sum < 0.9*prev
		if (!falling && time.Since(start) >= least) || time.Since(start)+settleWindow > most {
			return idle
		}
		prev = sum
	}
}
