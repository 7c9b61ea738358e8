package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/outpost-mesh/outpost/gossip"
	"github.com/outpost-mesh/outpost/node"
)

// Fleet layout: site k (from 1) is "s%03d"; its node j (from 0; node 0 is
// the site's leader, an `outpost node`) is "s%03d-n%02d" at 127.1.k.(j+1),
// every node on ports quicPort and gossipPort of its own address.
const (
	quicPort   = 7443
	gossipPort = 7946
	// maxSites bounds -sites and -per-site: a site's and a node's
	// numbers are octets of their addresses (nodeIP).
	maxSites = 250
	hubAddr  = "127.0.0.1"
)

func siteName(k int) string    { return fmt.Sprintf("s%03d", k) }
func nodeName(k, j int) string { return fmt.Sprintf("s%03d-n%02d", k, j) }
func nodeIP(k, j int) string   { return fmt.Sprintf("127.1.%d.%d", k, j+1) }

// slowGossip is the simulated members' gossip timing: one machine hosts
// 10,000 memberlists, so each probes and pushes its state less often than
// a real host would. Their site leaders run with --gossip-profile wan.
func slowGossip(c *gossip.Config) {
	c.ProbeInterval = time.Minute
	c.ProbeTimeout = 5 * time.Second
	c.SuspicionMult = 8
	c.GossipInterval = 2 * time.Second
	c.PushPullInterval = 10 * time.Minute
}

// runSim hosts the stateless members of some sites until SIGTERM.
func runSim(args []string) error {
	fs := flag.NewFlagSet("sim", flag.ExitOnError)
	hub := fs.String("hub", hubAddr+":7443", "QUIC address of the hub")
	tokensFile := fs.String("tokens", "", "JSON file mapping site names to join tokens")
	sites := fs.String("sites", "", "site numbers to host, comma-separated")
	perSite := fs.Int("per-site", 100, "nodes per site, the leader included")
	dir := fs.String("dir", "", "directory for the members' data")
	parallel := fs.Int("join-parallel", 8, "joins in flight")
	heapProfile := fs.String("heap-profile", "", "write a heap profile here a minute after all members run, and a CPU profile of the 15 s before it")
	_ = fs.Parse(args)
	if *tokensFile == "" || *sites == "" || *dir == "" {
		return fmt.Errorf("sim needs -tokens, -sites and -dir")
	}
	var tokens map[string]string
	b, err := os.ReadFile(*tokensFile)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, &tokens); err != nil {
		return fmt.Errorf("%s: %w", *tokensFile, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	db, err := openRunsDB(filepath.Join(*dir, "runs"))
	if err != nil {
		return err
	}
	defer db.Close()

	var cfgs []node.Config
	for _, s := range strings.Split(*sites, ",") {
		k, err := strconv.Atoi(s)
		if err != nil {
			return fmt.Errorf("-sites %q: %w", s, err)
		}
		for j := 1; j < *perSite; j++ {
			c := node.DefaultConfig()
			c.Name, c.NameSet = nodeName(k, j), true
			c.Site, c.SiteSet = siteName(k), true
			c.DataDir = filepath.Join(*dir, c.Name)
			c.JoinAddr, c.Token = *hub, tokens[c.Site]
			c.BindAddr, c.AdvertiseAddr = nodeIP(k, j), nodeIP(k, j)
			c.QUICPort, c.GossipPort = quicPort, gossipPort
			c.GossipProfile, c.TuneGossip = "wan", slowGossip
			cfgs = append(cfgs, c)
		}
	}

	start := time.Now()
	joinEG, joinCtx := errgroup.WithContext(ctx)
	joinEG.SetLimit(*parallel)
	for _, c := range cfgs {
		joinEG.Go(func() error {
			if err := node.Join(joinCtx, c, logger); err != nil {
				return fmt.Errorf("join %s: %w", c.Name, err)
			}
			return nil
		})
	}
	if err := joinEG.Wait(); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "sim: %d members joined in %s\n", len(cfgs), time.Since(start).Round(time.Millisecond))

	// The members take no lock of their own on their data dirs (a store
	// is given): the runs Badger, opened above in the same directory,
	// keeps a second simulator out of them.
	agents := make([]*node.Agent, 0, len(cfgs))
	for _, c := range cfgs {
		a, err := node.NewAgent(c, badgerRuns{db: db, node: c.Name}, logger)
		if err != nil {
			return fmt.Errorf("member %s: %w", c.Name, err)
		}
		agents = append(agents, a)
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(agents))
	for _, a := range agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.Run(ctx); err != nil {
				errs <- fmt.Errorf("member %s: %w", a.Name(), err)
			}
		}()
	}
	fmt.Println("ready", len(agents))
	go collectOnSignal(ctx, filepath.Join(*dir, collectedFile))
	if *heapProfile != "" {
		go writeHeapProfile(ctx, *heapProfile)
		go cpuProfileOnSignal(ctx, *heapProfile)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		return err
	}
	return nil
}

// collectedFile, in a simulator's directory, counts the collections it
// made on SIGUSR2 (collectOnSignal).
const collectedFile = "collected"

// collectOnSignal collects garbage on each SIGUSR2 (run sends one before
// each task) and then writes the count of such collections to path. The
// simulator's 990 members share one heap, which it collects only at 1 MiB
// of Go memory a member (simGC): a collection that a task set off marked
// the whole heap, 400 MiB and more, on the simulator's one core for 8 to
// 12 s and held its members' devices back meanwhile, a pause no real
// host, collecting its own few MiB, has.
func collectOnSignal(ctx context.Context, path string) {
	onSignal(ctx, syscall.SIGUSR2, func(n int) {
		runtime.GC()
		tmp := path + ".tmp"
		if os.WriteFile(tmp, []byte(strconv.Itoa(n)), 0o644) == nil {
			_ = os.Rename(tmp, path)
		}
	})
}

// onSignal calls fn with 1, 2, ... on each sig, one call at a time, until
// ctx ends.
func onSignal(ctx context.Context, sig os.Signal, fn func(n int)) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, sig)
	defer signal.Stop(ch)
	for n := 1; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-ch:
		}
		fn(n)
	}
}

// cpuProfileOnSignal writes a 15 s CPU profile to path.task-N.cpu on each
// SIGUSR1 (run sends one when a task starts), and the goroutines 3 s in to
// path.task-N.goroutines.txt.
func cpuProfileOnSignal(ctx context.Context, path string) {
	onSignal(ctx, syscall.SIGUSR1, func(n int) {
		go func() {
			time.Sleep(3 * time.Second)
			if gf, err := os.Create(fmt.Sprintf("%s.task-%d.goroutines.txt", path, n)); err == nil {
				_ = pprof.Lookup("goroutine").WriteTo(gf, 1)
				gf.Close()
			}
		}()
		cf, err := os.Create(fmt.Sprintf("%s.task-%d.cpu", path, n))
		if err != nil {
			return
		}
		if pprof.StartCPUProfile(cf) == nil {
			time.Sleep(15 * time.Second)
			pprof.StopCPUProfile()
		}
		cf.Close()
	})
}

func writeHeapProfile(ctx context.Context, path string) {
	select {
	case <-ctx.Done():
		return
	case <-time.After(45 * time.Second):
	}
	if cf, err := os.Create(path + ".cpu"); err == nil {
		_ = pprof.StartCPUProfile(cf)
		time.Sleep(15 * time.Second)
		pprof.StopCPUProfile()
		cf.Close()
	}
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "heap profile:", err)
		return
	}
	defer f.Close()
	runtime.GC()
	_ = pprof.WriteHeapProfile(f)
}
