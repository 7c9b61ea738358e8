package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is a process the bench started, in a namespace or not.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// command returns a command that runs name with args in namespace ns ("":
// this one). `ip netns exec` execs name, so the process is name itself.
func command(ctx context.Context, ns, name string, args ...string) *exec.Cmd {
	if ns == "" {
		return exec.CommandContext(ctx, name, args...)
	}
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

// startProc starts a long-running process whose output goes to a log file
// in dir.
func startProc(dir, ns, label, name string, args ...string) (*proc, error) {
	logPath := filepath.Join(dir, label+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := command(context.Background(), ns, name, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", label, err)
	}
	p := &proc{name: label, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); f.Close(); close(p.done) }() // reaps the process; stop waits for it
	return p, nil
}

// stop ends the process (SIGTERM, then SIGKILL after 5 s) and its
// descendants, and waits for it.
func (p *proc) stop() {
	kids := descendants(p.cmd.Process.Pid)
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	for _, k := range kids {
		_ = syscall.Kill(k, syscall.SIGKILL)
	}
}

// tail is the end of the process's log, for errors.
func (p *proc) tail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(bytes.TrimSpace(b))
}

// clkTck is the kernel's clock ticks per second in /proc/PID/stat.
const clkTck = 100

// procStat reads a process's parent and user+system CPU seconds.
func procStat(pid int) (ppid int, cpu float64, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')') // the command name may hold spaces
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3 (state)
	if len(f) < 13 {
		return 0, 0, false
	}
	ppid, _ = strconv.Atoi(f[1])
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return ppid, (ut + st) / clkTck, true
}

// allProcs maps every pid to its parent and CPU seconds.
func allProcs() map[int][2]float64 {
	out := map[int][2]float64{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, cpu, ok := procStat(pid); ok {
			out[pid] = [2]float64{float64(ppid), cpu}
		}
	}
	return out
}

// descendants lists the pids below pid.
func descendants(pid int) []int {
	all := allProcs()
	var out []int
	frontier := []int{pid}
	for len(frontier) > 0 {
		p := frontier[0]
		frontier = frontier[1:]
		for c, v := range all {
			if int(v[0]) == p {
				out = append(out, c)
				frontier = append(frontier, c)
			}
		}
	}
	return out
}

// treeCPU sums the CPU seconds of each process in procs and its
// descendants (sshd forks one per connection).
func treeCPU(procs ...*proc) float64 {
	all := allProcs()
	var sum float64
	for _, p := range procs {
		if p == nil {
			continue
		}
		pids := append([]int{p.cmd.Process.Pid}, descendants(p.cmd.Process.Pid)...)
		for _, pid := range pids {
			sum += all[pid][1]
		}
	}
	return sum
}
