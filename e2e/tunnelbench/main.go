package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	sub, args := "run", os.Args[1:]
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		sub, args = args[0], args[1:]
	}
	if dir := os.Getenv("TUNNELBENCH_CPUPROFILE_DIR"); dir != "" && (sub == "hub" || sub == "agent") {
		f, err := os.Create(filepath.Join(dir, sub+".prof"))
		if err == nil && pprof.StartCPUProfile(f) == nil {
			defer pprof.StopCPUProfile()
		}
	}
	var err error
	switch sub {
	case "run":
		err = runBench(ctx, args)
	case "backend":
		err = backendMain(ctx, args)
	case "client":
		err = clientMain(ctx, args)
	case "hub":
		err = hubMain(ctx, args)
	case "agent":
		err = agentMain(ctx, args)
	case "kube":
		err = kubeMain(ctx, args)
	default:
		err = fmt.Errorf("unknown subcommand %q (run, backend, client, hub, agent, kube)", sub)
	}
	if err != nil && ctx.Err() == nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "tunnelbench:", err)
		os.Exit(1)
	}
}
