package main

import (
	"context"
	"fmt"
	"net"
	"syscall"
	"testing"

	"github.com/outpost-mesh/outpost/ota"
	"github.com/outpost-mesh/outpost/ota/agent"
)

// BenchmarkExecOpenFiles runs the agent's exec step (`true`, 100 at once,
// as a site's window does) from a process holding few open files, as a
// node's daemon does, and from one holding as many as a simulator of
// 1,000 members (a QUIC socket, two gossip sockets and a data-dir lock
// each): every fork copies the parent's file table and the exec closes
// each copy, so the simulated fleet's execs pay for their co-hosting. The
// figure is per exec; execs/s is the machine's rate.
func BenchmarkExecOpenFiles(b *testing.B) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err == nil {
		rl.Cur = rl.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
	}
	for _, files := range []int{16, 4000} {
		b.Run(fmt.Sprintf("files=%d", files), func(b *testing.B) {
			var open []*net.UDPConn
			defer func() {
				for _, c := range open {
					c.Close()
				}
			}()
			for range files {
				c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
				if err != nil {
					b.Fatalf("open %d sockets: %v (raise the hard limit, ulimit -Hn)", files, err)
				}
				open = append(open, c)
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
