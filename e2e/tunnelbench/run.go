package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/outpost-mesh/outpost/internal/kubetest"
)

// options are the flags of `tunnelbench run`.
type options struct {
	paths, tunnels []string
	secs           float64
	mbit, streams  int
	rdpeer, rdsrc  string
	kube           bool
}

// result is one tunnel's measurements on one path.
type result struct {
	path, tunnel string
	err          error
	// Bulk download.
	mbps, tunnelCPU, totalCPU float64 // MB/s, cpu-s/GiB
	// Round trips, µs.
	p50, p99 float64
	// Per-stream MB/s without and with a stalled reader.
	base, slow []float64
	// Kubernetes API GET and LIST, µs (zero: not measured).
	getP50, getP99, listP50, listP99 float64
}

// gib is what cpu-s/GiB divides by.
const gib = 1 << 30

func runBench(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	var o options
	paths := fs.String("paths", "loopback,link", "loopback and/or link (namespaces joined by a tbf-limited veth; root)")
	tunnels := fs.String("tunnels", "direct,outpost,ssh,remotedialer", "what carries the connections")
	fs.Float64Var(&o.secs, "secs", 3, "length of each measurement, seconds")
	fs.IntVar(&o.mbit, "mbit", 100, "the link's rate, Mbit/s")
	fs.IntVar(&o.streams, "streams", 16, "concurrent streams in the stalled-reader measurement")
	fs.StringVar(&o.rdpeer, "rdpeer", "", "a built remotedialer peer (default: build it from -rdpeer-src with GOTOOLCHAIN=go1.27.3)")
	fs.StringVar(&o.rdsrc, "rdpeer-src", "e2e/tunnelbench/rdpeer", "the remotedialer peer's module")
	noKube := fs.Bool("no-kube", false, "skip the Kubernetes API measurement")
	_ = fs.Parse(args)
	o.paths, o.tunnels = strings.Split(*paths, ","), strings.Split(*tunnels, ",")
	self, err := os.Executable()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "tunnelbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	notes := []string{}
	o.kube = !*noKube
	if _, _, _, err := kubetest.Binaries(); o.kube && err != nil {
		notes = append(notes, "Kubernetes API not measured: "+err.Error())
		o.kube = false
	}
	if slices.Contains(o.tunnels, "remotedialer") && o.rdpeer == "" {
		o.rdpeer = filepath.Join(dir, "rdpeer")
		fmt.Fprintln(os.Stderr, "building the remotedialer peer (GOTOOLCHAIN=go1.27.3)...")
		build := exec.CommandContext(ctx, "go", "build", "-o", o.rdpeer, ".")
		build.Dir = o.rdsrc
		build.Env = append(os.Environ(), "GOTOOLCHAIN=go1.27.3", "GOWORK=off")
		if out, err := build.CombinedOutput(); err != nil {
			notes = append(notes, fmt.Sprintf("remotedialer skipped: its build failed: %v: %s", err, lastLine(string(out))))
			o.tunnels = slices.DeleteFunc(o.tunnels, func(t string) bool { return t == "remotedialer" })
		}
	}
	var results []result
	for _, path := range o.paths {
		rs, err := benchPath(ctx, self, dir, path, o)
		results = append(results, rs...)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	printTables(os.Stdout, results, o, notes)
	return nil
}

// where are the addresses and namespaces of one path.
type where struct {
	hubNS, edgeNS string
	hubIP         string     // where the hub side's QUIC, sshd and websocket listen
	backend       string     // the backend as the hub side reaches it directly
	backendLocal  string     // the backend as the edge side reaches it
	kube          string     // the kube-apiserver as the hub side reaches it directly ("": none)
	kubeLocal     string     // the kube-apiserver as the edge side reaches it
	kubeInfo      string     // the file `tunnelbench kube` wrote
	ports         func() int // a free port
	pair          func() int // a free port whose next port is free too
}

// benchPath measures every tunnel on one path.
func benchPath(ctx context.Context, self, dir, path string, o options) ([]result, error) {
	var w where
	switch path {
	case "loopback":
		w = where{hubIP: "127.0.0.1", ports: freePort, pair: freePortPair}
		p := freePort()
		w.backend = net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
		w.backendLocal = w.backend
	case "link":
		l, err := newLink(strconv.Itoa(os.Getpid()), o.mbit)
		if err != nil {
			return nil, err
		}
		defer l.close()
		next := 17000
		w = where{hubNS: l.hub, edgeNS: l.edge, hubIP: l.hubIP, ports: func() int { next++; return next }}
		w.pair = func() int { next += 2; return next - 1 }
		w.backend = net.JoinHostPort(l.edgeIP, "9000")
		w.backendLocal = "127.0.0.1:9000"
	default:
		return nil, fmt.Errorf("unknown path %q (loopback or link)", path)
	}
	listen := w.backend
	if w.edgeNS != "" {
		listen = "0.0.0.0:9000"
	}
	backend, err := startProc(dir, w.edgeNS, path+"-backend", self, "backend", "-listen", listen)
	if err != nil {
		return nil, err
	}
	defer backend.stop()
	if _, _, err := runClient(ctx, self, w.hubNS, "wait", w.backend, 20); err != nil {
		return nil, fmt.Errorf("backend: %w (%s)", err, backend.tail())
	}
	if o.kube {
		w.kubeInfo = filepath.Join(dir, path+"-kube.json")
		args := []string{"kube", "-info", w.kubeInfo}
		if w.edgeNS != "" {
			args = append(args, "-forward", "0.0.0.0:9443")
		}
		kube, err := startProc(dir, w.edgeNS, path+"-kube", self, args...)
		if err != nil {
			return nil, err
		}
		defer kube.stop()
		b, err := waitFile(ctx, w.kubeInfo, 150*time.Second)
		if err != nil {
			return nil, fmt.Errorf("kube-apiserver: %w (%s)", err, kube.tail())
		}
		var info kubeInfo
		if err := json.Unmarshal([]byte(b), &info); err != nil {
			return nil, err
		}
		w.kubeLocal, w.kube = info.Addr, info.Addr
		if w.edgeNS != "" {
			w.kube = net.JoinHostPort(linkEdgeIP, "9443") // through kube's -forward
		}
	}
	var out []result
	for _, t := range o.tunnels {
		fmt.Fprintf(os.Stderr, "%s: %s...\n", path, t)
		r := result{path: path, tunnel: t}
		procs, addr, kubeAddr, err := startTunnel(ctx, self, dir, t, w, o)
		if err == nil {
			err = measure(ctx, self, w, addr, kubeAddr, procs, backend, o, &r)
		}
		r.err = err
		for _, p := range procs {
			p.stop()
		}
		out = append(out, r)
		if ctx.Err() != nil {
			return out, ctx.Err()
		}
	}
	return out, nil
}

// startTunnel starts tunnel t's processes and returns them and the
// addresses on the hub side that lead to the backend and to the
// kube-apiserver ("" when not measured). Each tunnel forwards two ports,
// as a cluster's tunnel does: port to the backend, port+1 to the API
// server.
func startTunnel(ctx context.Context, self, dir, t string, w where, o options) (procs []*proc, addr, kubeAddr string, err error) {
	start := func(ns, label, name string, args ...string) error {
		p, err := startProc(dir, ns, label, name, args...)
		if err == nil {
			procs = append(procs, p)
		}
		return err
	}
	fail := func(err error) ([]*proc, string, string, error) {
		var tails []string
		for _, p := range procs {
			tails = append(tails, p.name+": "+p.tail())
		}
		return procs, "", "", fmt.Errorf("%w; logs: %s", err, strings.Join(tails, " | "))
	}
	port := w.pair()
	addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	kubeLocal := w.kubeLocal
	if kubeLocal == "" {
		kubeLocal = w.backendLocal // something to forward to; not measured
	}
	switch t {
	case "direct":
		return nil, w.backend, w.kube, nil
	case "outpost":
		quic := net.JoinHostPort(w.hubIP, strconv.Itoa(freeUDPPort(w)))
		hubDir, err := os.MkdirTemp(dir, "hub-")
		if err != nil {
			return nil, "", "", err
		}
		if err := start(w.hubNS, "outpost-hub", self, "hub", "-quic", quic, "-port", strconv.Itoa(port), "-dir", hubDir); err != nil {
			return fail(err)
		}
		fp, err := waitFile(ctx, filepath.Join(hubDir, "fingerprint"), 20*time.Second)
		if err != nil {
			return fail(err)
		}
		if err := start(w.edgeNS, "outpost-agent", self, "agent", "-hub", quic, "-fingerprint", fp, "-target", w.backendLocal, "-platform", kubeLocal); err != nil {
			return fail(err)
		}
	case "ssh":
		sshDir, err := os.MkdirTemp(dir, "ssh-")
		if err != nil {
			return nil, "", "", err
		}
		if err := sshKeys(sshDir); err != nil {
			return nil, "", "", err
		}
		sshPort := w.ports()
		conf, err := sshdConfig(sshDir, w.hubIP, sshPort)
		if err != nil {
			return nil, "", "", err
		}
		if err := start(w.hubNS, "sshd", "/usr/sbin/sshd", "-D", "-e", "-f", conf); err != nil {
			return fail(err)
		}
		if _, _, err := runClient(ctx, self, w.hubNS, "wait-tcp", net.JoinHostPort(w.hubIP, strconv.Itoa(sshPort)), 20); err != nil {
			return fail(err)
		}
		forwards := []string{fmt.Sprintf("127.0.0.1:%d:%s", port, w.backendLocal), fmt.Sprintf("127.0.0.1:%d:%s", port+1, kubeLocal)}
		if err := start(w.edgeNS, "ssh", "ssh", sshArgs(sshDir, w.hubIP, sshPort, forwards)...); err != nil {
			return fail(err)
		}
	case "remotedialer":
		ws := net.JoinHostPort(w.hubIP, strconv.Itoa(w.ports()))
		if err := start(w.hubNS, "rd-server", o.rdpeer, "server", "-ws", ws,
			"-forward", addr+"="+w.backendLocal, "-forward", net.JoinHostPort("127.0.0.1", strconv.Itoa(port+1))+"="+kubeLocal); err != nil {
			return fail(err)
		}
		if err := start(w.edgeNS, "rd-client", o.rdpeer, "client", "-url", "ws://"+ws+"/connect"); err != nil {
			return fail(err)
		}
	default:
		return nil, "", "", fmt.Errorf("unknown tunnel %q", t)
	}
	if _, _, err := runClient(ctx, self, w.hubNS, "wait", addr, 20); err != nil {
		return fail(err)
	}
	if w.kube != "" {
		kubeAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port+1))
	}
	return procs, addr, kubeAddr, nil
}

// measure runs the bulk, round-trip and stream measurements through addr.
func measure(ctx context.Context, self string, w where, addr, kubeAddr string, procs []*proc, backend *proc, o options, r *result) error {
	t0, b0 := treeCPU(procs...), treeCPU(backend)
	res, cpu, err := runClient(ctx, self, w.hubNS, "bulk", addr, o.secs)
	if err != nil {
		return fmt.Errorf("bulk: %w", err)
	}
	t1, b1 := treeCPU(procs...), treeCPU(backend)
	g := float64(res.Bytes) / gib
	r.mbps = float64(res.Bytes) / res.Seconds / 1e6
	if len(procs) > 0 {
		r.tunnelCPU = (t1 - t0) / g
	}
	r.totalCPU = (t1 - t0 + b1 - b0 + cpu) / g
	if res, _, err = runClient(ctx, self, w.hubNS, "rtt", addr, min(o.secs, 2)); err != nil {
		return fmt.Errorf("round trips: %w", err)
	}
	r.p50, r.p99 = res.RTTP50us, res.RTTP99us
	if res, _, err = runClient(ctx, self, w.hubNS, "streams", addr, o.secs, "-n", strconv.Itoa(o.streams)); err != nil {
		return fmt.Errorf("streams: %w", err)
	}
	r.base = res.StreamMBps
	if res, _, err = runClient(ctx, self, w.hubNS, "streams", addr, o.secs, "-n", strconv.Itoa(o.streams), "-slow"); err != nil {
		return fmt.Errorf("streams with a stalled reader: %w", err)
	}
	r.slow = res.StreamMBps
	if kubeAddr != "" {
		if res, _, err = runClient(ctx, self, w.hubNS, "kube", kubeAddr, min(o.secs, 2), "-kube-info", w.kubeInfo); err != nil {
			return fmt.Errorf("kubernetes API: %w", err)
		}
		r.getP50, r.getP99, r.listP50, r.listP99 = res.GetP50us, res.GetP99us, res.ListP50us, res.ListP99us
	}
	return nil
}

// runClient runs one client measurement in ns and returns its result and
// CPU seconds.
func runClient(ctx context.Context, self, ns, mode, addr string, secs float64, extra ...string) (clientResult, float64, error) {
	args := append([]string{"client", mode, "-addr", addr, "-secs", strconv.FormatFloat(secs, 'f', -1, 64)}, extra...)
	ctx, cancel := context.WithTimeout(ctx, time.Duration(secs+30)*time.Second)
	defer cancel()
	cmd := command(ctx, ns, self, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return clientResult{}, 0, fmt.Errorf("client %s: %v: %s", mode, err, lastLine(stderr.String()))
	}
	var res clientResult
	if mode != "wait" {
		if err := json.Unmarshal(out, &res); err != nil {
			return clientResult{}, 0, fmt.Errorf("client %s: %w", mode, err)
		}
	}
	st := cmd.ProcessState
	return res, (st.UserTime() + st.SystemTime()).Seconds(), nil
}

// waitFile waits for path to exist and returns its content.
func waitFile(ctx context.Context, path string, d time.Duration) (string, error) {
	end := time.Now().Add(d)
	for time.Now().Before(end) && ctx.Err() == nil {
		if b, err := os.ReadFile(path); err == nil && len(b) > 0 {
			return string(b), nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return "", fmt.Errorf("%s did not appear within %s", path, d)
}

// freePort is a loopback TCP port free a moment ago.
func freePort() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// freePortPair is a loopback TCP port free a moment ago whose next port
// was free too (a tunnel binds both), or 0.
func freePortPair() int {
	for range 1000 {
		p := freePort()
		if ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p+1))); err == nil {
			ln.Close()
			return p
		}
	}
	return 0
}

// freeUDPPort is a UDP port for the hub's QUIC endpoint: any free one on
// loopback, 7443 in a namespace of the bench's own.
func freeUDPPort(w where) int {
	if w.hubNS != "" {
		return 7443
	}
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return 0
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
