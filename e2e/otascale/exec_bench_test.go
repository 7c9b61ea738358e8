package main

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/outpost-mesh/outpost/ota"
	"github.com/outpost-mesh/outpost/ota/agent"
)

// BenchmarkExecOpenFiles runs the agent's exec step (`true`, 100 at once,
// as a site's window does) from a process holding as few open files as a
// node's daemon, and from one holding as many as a simulator of 990
// members: a QUIC socket and two gossip sockets each, and, as each member
// had until it took no lock of its own, a locked data-dir file. Every
// fork copies the parent's table of open files and the exec closes each
// copy (a locked file costs more: the kernel looks for its POSIX locks),
// so the simulated fleet's execs pay for their co-hosting. execs/s is
// the machine's rate.
func BenchmarkExecOpenFiles(b *testing.B) {
	raiseOpenFiles() // bench.go
	for _, c := range []struct {
		name           string
		sockets, locks int
	}{
		{"node", 16, 0},
		{"simulator", 2970, 0},
		{"simulator-with-locks", 2970, 990},
	} {
		b.Run(c.name, func(b *testing.B) {
			var open []io.Closer
			defer func() {
				for _, f := range open {
					f.Close()
				}
			}()
			for range c.sockets {
				s, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
				if err != nil {
					b.Fatalf("open %d sockets: %v (raise the hard limit, ulimit -Hn)", c.sockets, err)
				}
				open = append(open, s)
			}
			dir := b.TempDir()
			for i := range c.locks {
				f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(i)), os.O_CREATE|os.O_RDWR, 0o600)
				if err != nil {
					b.Fatal(err)
				}
				open = append(open, f)
				if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
					b.Fatal(err)
				}
			}
			step := ota.Step{Name: "true", Type: ota.StepExec, Command: []string{"true"}}
			b.SetParallelism(50) // 100 goroutines on 2 cores
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					r := agent.RunStep(context.Background(), step, agent.Env{Node: "n", Site: "s", Task: "t"}, agent.Policy{}, nil, "")
					if r.Phase != ota.StepSucceeded {
						b.Errorf("exec true: %s %s", r.Reason, r.Error)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "execs/s")
		})
	}
}
