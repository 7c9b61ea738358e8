//go:build e2e

package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// OTA tasks on a real mesh while part of it fails. Every step of every task
// appends one line "<task> <step>" to <dir>/<node>.count before it does
// anything else (the nodes are separate processes in separate namespaces,
// but they share the filesystem), so the test can count how often each step
// started on each node: a step that ran twice shows as two lines.

// TestOTASiteLeaderKilled: kill -9 the site's leader while every device of
// a two-step task is in its first step, and start it again once the other
// two have a new leader. The new leader picks up the running devices: they
// succeed with each step run exactly once. The killed node's own device
// was cut mid-step; its journal says the step started and never finished,
// so it is not run again: the device fails as Interrupted with step 1 run
// once and step 2 never (at most once, ota/DESIGN.md), and the task ends
// Failed. `task retry --failed` then runs that device alone again, as
// attempt 2, and the task ends Succeeded with one result per device.
func TestOTASiteLeaderKilled(t *testing.T) {
	m := newMesh(t, topology{hubs: 1, sites: []siteSpec{{"a", 3}}})
	hub := m.node("hub-1")
	dir := m.otaCountDir()
	devices := names(m.siteNodes("a"))
	steps := []string{"step1", "step2"}
	task := newOTATask("leader-killed", otaSpec{Concurrency: 3, DeviceTimeout: "60s", Steps: otaSleepSteps(dir, 3, steps...)})
	name := task.Metadata.Name

	leader := m.siteLeader("a")
	m.logf("site a is led by %s", leader.name)
	m.otaApply(hub, task)
	watch := m.otaStartWatch(hub, name)
	m.otaWaitStarted(name, "step1", devices)
	m.kill(leader)
	m.otaNewLeader("a", leader)
	m.startNode(leader, nil)
	m.logf("started %s again", leader.name)

	if code, out := m.otaWaitWatch(watch, otaWait); code == 0 {
		t.Errorf("task watch exited 0 for a task with a failed device; output:\n%s", out)
	}
	m.otaWantTask(hub, name, "Failed", otaCounts{Total: 3, Succeeded: 2, Failed: 1})
	results := m.otaResultsOf(hub, name, devices)
	survivors := slices.DeleteFunc(slices.Clone(devices), func(n string) bool { return n == leader.name })
	m.otaWantSucceeded(results, name, survivors, steps...)
	killed := results[leader.name]
	if killed.Status.Phase != "Failed" || len(killed.Status.Steps) != 2 ||
		killed.Status.Steps[0].Reason != "Interrupted" || killed.Status.Steps[1].Phase != "Skipped" {
		t.Errorf("device %s (killed in step1, then restarted): %s; want Failed with step1 Interrupted and step2 Skipped", leader.name, killed)
	}
	m.otaCheckLines(name, leader.name, map[string]int{"step1": 1, "step2": 0})
	if t.Failed() {
		t.FailNow()
	}

	// Retry the interrupted device: a new attempt, a new journal.
	if _, err := m.adminCLI(hub, "task", "retry", name, "--failed"); err != nil {
		t.Fatal(err)
	}
	m.logf("retried the failed devices")
	// Until the hub takes up the retry, the task still shows attempt 1's
	// end, and a watch would exit at once.
	m.eventually(waitLong, "the hub starts attempt 2", func() error {
		v, err := m.otaGetTask(hub, name)
		if err == nil && (v.Status.Attempt != 2 || v.ended()) {
			err = fmt.Errorf("attempt %d phase %q", v.Status.Attempt, v.Status.Phase)
		}
		return err
	})
	watch = m.otaStartWatch(hub, name)
	if code, out := m.otaWaitWatch(watch, otaWait); code != 0 {
		t.Errorf("task watch after the retry exited %d; want 0; output:\n%s", code, out)
	}
	m.otaWantTask(hub, name, "Succeeded", otaCounts{Total: 3, Succeeded: 3})
	results = m.otaResultsOf(hub, name, devices)
	m.otaWantSucceeded(results, name, survivors, steps...)
	if r := results[leader.name]; r.Status.Phase != "Succeeded" || r.Status.Attempt != 2 {
		t.Errorf("device %s after the retry: %s; want Succeeded at attempt 2", leader.name, r)
	}
	// Attempt 1 ran step1 only; attempt 2 ran both.
	m.otaCheckLines(name, leader.name, map[string]int{"step1": 2, "step2": 1})
}

// TestOTASiteCutOff: the site's hosts lose the hub (iptables) while its
// devices run. The site finishes the task on its own while the hub still
// shows it unfinished; once the link returns, the results arrive and the
// task ends Succeeded.
func TestOTASiteCutOff(t *testing.T) {
	m := newMesh(t, topology{hubs: 1, sites: []siteSpec{{"a", 3}}})
	hub := m.node("hub-1")
	dir := m.otaCountDir()
	devices := names(m.siteNodes("a"))
	steps := []string{"step1", "step2"}
	task := newOTATask("cut-off", otaSpec{Concurrency: 3, DeviceTimeout: "60s", Steps: otaSleepSteps(dir, 4, steps...)})
	name := task.Metadata.Name

	m.otaApply(hub, task)
	watch := m.otaStartWatch(hub, name)
	m.otaWaitStarted(name, "step1", devices)
	// Each device has more than 7 s of its task ahead: no result of it can
	// have reached the hub before the cut.
	for _, n := range m.siteNodes("a") {
		n.host.Block(hub.host)
	}
	cut := time.Now()
	m.logf("site a cut off from the hub")

	m.otaWaitStarted(name, "step2", devices)
	m.logf("site a started step2 on every device during the cut")
	m.hold(time.Until(cut.Add(otaCut)), "the hub's view of the cut-off task", func() error {
		if watch.exited() {
			return errors.New("task watch exited during the cut")
		}
		v, err := m.otaGetTask(hub, name)
		if err == nil && (v.ended() || v.Status.Counts.Succeeded > 0) {
			err = fmt.Errorf("the hub shows phase %q counts %+v while the site cannot reach it", v.Status.Phase, v.Status.Counts)
		}
		return err
	})
	for _, n := range m.siteNodes("a") {
		n.host.Unblock(hub.host)
	}
	lifted := time.Now()
	m.logf("cut lifted")

	// The link backs off up to 30 s between attempts.
	if code, out := m.otaWaitWatch(watch, waitLong+30*time.Second); code != 0 {
		t.Errorf("task watch exited %d; want 0; output:\n%s", code, out)
	}
	m.otaWantTask(hub, name, "Succeeded", otaCounts{Total: 3, Succeeded: 3})
	results := m.otaResultsOf(hub, name, devices)
	m.otaWantSucceeded(results, name, devices, steps...)
	for _, n := range devices {
		// The site finished the device during the cut.
		if c := results[n].Status.CompletionTime; c == nil || !c.Before(lifted) {
			t.Errorf("device %s completed at %v; want before the cut was lifted at %s", n, c, lifted.Format(time.RFC3339))
		}
	}
}

// TestOTAHubLeaderKilled: kill -9 the hub's leader while a task runs one
// device at a time on a site. The site's link reaches the new hub leader,
// the task goes on, and a watch through a surviving hub member sees it end
// Succeeded.
func TestOTAHubLeaderKilled(t *testing.T) {
	m := newMesh(t, topology{hubs: 3, sites: []siteSpec{{"a", 3}}})
	dir := m.otaCountDir()
	devices := names(m.siteNodes("a"))
	steps := []string{"step1", "step2"}
	task := newOTATask("hub-killed", otaSpec{Concurrency: 1, DeviceTimeout: "60s", Steps: otaSleepSteps(dir, 2, steps...)})
	name := task.Metadata.Name

	old := m.siteLeader("hub")
	via := up(m.siteNodes("hub"))[0]
	if via == old {
		via = up(m.siteNodes("hub"))[1]
	}
	m.logf("the hub is led by %s; the operator uses %s", old.name, via.name)
	m.otaApply(via, task)
	watch := m.otaStartWatch(via, name)
	m.eventually(waitLong, "the first device started", func() error {
		lines, err := m.otaLines(name)
		if err == nil && len(lines) == 0 {
			err = errors.New("no step started yet")
		}
		return err
	})
	m.kill(old)
	killed := time.Now()

	leader := m.otaNewLeader("hub", old)
	// Results travel on the site's link: it must reach the new leader.
	m.eventually(waitLong, "a report of site a to the new hub leader "+leader.name, func() error {
		s, err := m.site(leader, "a")
		if err == nil && (!s.Connected || !s.LastSeen.After(killed.Add(2*time.Second))) {
			err = fmt.Errorf("site a: connected=%v lastSeen=%s; want connected, seen 2 s after the kill at %s",
				s.Connected, s.LastSeen.Format(time.RFC3339), killed.Format(time.RFC3339))
		}
		return err
	})
	if code, out := m.otaWaitWatch(watch, otaWait); code != 0 {
		t.Errorf("task watch through %s exited %d; want 0; output:\n%s", via.name, code, out)
	}
	for _, hub := range up(m.siteNodes("hub")) {
		m.otaWantTask(hub, name, "Succeeded", otaCounts{Total: 3, Succeeded: 3})
		m.otaWantSucceeded(m.otaResultsOf(hub, name, devices), name, devices, steps...)
	}
}

// TestOTANodeKilledDuringExec: kill -9 a node while its exec step sleeps.
// With deviceTimeout 20s its device ends TimedOut, with a reason that says
// so; the other devices succeed, the task fails and watch exits non-zero.
func TestOTANodeKilledDuringExec(t *testing.T) {
	m := newMesh(t, topology{hubs: 1, sites: []siteSpec{{"a", 3}}})
	hub := m.node("hub-1")
	dir := m.otaCountDir()
	devices := names(m.siteNodes("a"))
	victim := m.otaFollower("a")
	pgidFile := filepath.Join(dir, victim.name+".pgid")
	// The victim's step sleeps well past the device timeout; the others'
	// sleep 1 s. The step's shell leads its process group, which survives
	// the daemon's kill (see otaKillOrphan).
	long := fmt.Sprintf("case \"$OUTPOST_NODE\" in\n%s) echo $$ > %q; sleep 45;;\n*) sleep 1;;\nesac\n", victim.name, pgidFile)
	steps := []otaStep{
		{Name: "step1", Type: "exec", Script: otaMark(dir, "step1") + long},
		{Name: "step2", Type: "exec", Script: otaMark(dir, "step2") + "sleep 1\n"},
	}
	task := newOTATask("node-killed", otaSpec{Concurrency: 3, DeviceTimeout: "20s", Steps: steps})
	name := task.Metadata.Name
	t.Cleanup(func() { otaKillOrphan(t, pgidFile, name) })

	m.otaApply(hub, task)
	watch := m.otaStartWatch(hub, name)
	m.otaWaitStarted(name, "step1", []string{victim.name})
	m.kill(victim)

	if code, out := m.otaWaitWatch(watch, otaWait); code == 0 {
		t.Errorf("task watch exited 0 for a task with a timed-out device; output:\n%s", out)
	}
	m.otaWantTask(hub, name, "Failed", otaCounts{Total: 3, Succeeded: 2, Failed: 1})
	results := m.otaResultsOf(hub, name, devices)
	others := slices.DeleteFunc(slices.Clone(devices), func(n string) bool { return n == victim.name })
	m.otaWantSucceeded(results, name, others, "step1", "step2")
	r := results[victim.name]
	why := strings.ToLower(r.Status.Reason + " " + r.Status.Message)
	if (r.Status.Phase != "TimedOut" && r.Status.Phase != "Failed") ||
		!strings.Contains(why, "timeout") && !strings.Contains(why, "offline") {
		t.Errorf("device %s (killed during its exec): %s; want TimedOut or Failed with a reason naming the timeout or the node offline", victim.name, r)
	}
	m.otaCheckLines(name, victim.name, map[string]int{"step1": 1, "step2": 0})
}

// otaKillOrphan ends the process group whose leader's pid is in pgidFile,
// if it still runs a step of task: a daemon killed with SIGKILL leaves its
// step's process group behind (it is not the daemon's group).
func otaKillOrphan(t *testing.T, pgidFile, task string) {
	b, err := os.ReadFile(pgidFile)
	if err != nil {
		return
	}
	pgid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pgid <= 1 {
		return
	}
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pgid))
	if err != nil || !bytes.Contains(env, []byte("OUTPOST_TASK="+task+"\x00")) {
		return // gone, or no longer the step's shell
	}
	t.Logf("the step of task %s outlived its killed daemon (process group %d); killing it", task, pgid)
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

// TestOTADeliveryDeadline: a node that is down when its device is
// dispatched runs it when it returns within spec.deliveryDeadline; one
// that does not return is Unreachable, and the others are not held up.
func TestOTADeliveryDeadline(t *testing.T) {
	m := newMesh(t, topology{hubs: 1, sites: []siteSpec{{"a", 3}}})
	hub := m.node("hub-1")
	dir := m.otaCountDir()
	devices := names(m.siteNodes("a"))

	t.Run("back in time", func(t *testing.T) {
		m := m.sub(t)
		late := m.otaFollower("a")
		m.otaStop(late)
		m.waitNotAlive(hub, late)
		task := newOTATask("late-node", otaSpec{Concurrency: 3, DeliveryDeadline: "40s", Steps: otaSleepSteps(dir, 1, "step1")})
		name := task.Metadata.Name
		m.otaApply(hub, task)
		watch := m.otaStartWatch(hub, name)
		// The others finish while the node is down; its device waits.
		m.eventually(waitLong, "the running devices succeed, "+late.name+"'s waits", func() error {
			results, err := m.otaResults(hub, name)
			if err != nil {
				return err
			}
			for _, n := range devices {
				want := "Succeeded"
				if n == late.name {
					want = "Queued"
				}
				if r, ok := results[n]; !ok || r.Status.Phase != want {
					return fmt.Errorf("device %s: %s; want %s", n, r, want)
				}
			}
			return nil
		})
		m.startNode(late, nil)
		m.logf("started %s again", late.name)

		if code, out := m.otaWaitWatch(watch, otaWait); code != 0 {
			t.Errorf("task watch exited %d; want 0; output:\n%s", code, out)
		}
		m.otaWantTask(hub, name, "Succeeded", otaCounts{Total: 3, Succeeded: 3})
		m.otaWantSucceeded(m.otaResultsOf(hub, name, devices), name, devices, "step1")
		m.waitAlive(late)
	})

	t.Run("not back", func(t *testing.T) {
		m := m.sub(t)
		gone := m.otaFollower("a")
		m.otaStop(gone)
		m.waitNotAlive(hub, gone)
		task := newOTATask("gone-node", otaSpec{Concurrency: 3, DeliveryDeadline: "10s", Steps: otaSleepSteps(dir, 1, "step1")})
		name := task.Metadata.Name
		m.otaApply(hub, task)
		watch := m.otaStartWatch(hub, name)
		if code, out := m.otaWaitWatch(watch, otaWait); code == 0 {
			t.Errorf("task watch exited 0 for a task with an unreachable device; output:\n%s", out)
		}
		m.otaWantTask(hub, name, "Failed", otaCounts{Total: 3, Succeeded: 2, Unreachable: 1})
		results := m.otaResultsOf(hub, name, devices)
		others := slices.DeleteFunc(slices.Clone(devices), func(n string) bool { return n == gone.name })
		m.otaWantSucceeded(results, name, others, "step1")
		if r := results[gone.name]; r.Status.Phase != "Unreachable" || r.Status.Reason != "Unreachable" {
			t.Errorf("device %s (down for the whole deadline): %s; want Unreachable", gone.name, r)
		}
		m.otaCheckLines(name, gone.name, map[string]int{"step1": 0})
	})
}
