//go:build e2e

package e2e

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const (
	// upgradeFrom and upgradeTo are the versions TestUpgrade builds.
	upgradeFrom = "v0.0.1-e2e"
	upgradeTo   = "v0.0.2-e2e"
	// upgradeStepSecs is how long each of a device's two steps sleeps.
	upgradeStepSecs = 4
)

// TestUpgrade: the guide's hub of three and a site of three, installed with
// a build of version upgradeFrom; a task of two sleeping steps runs one
// device at a time on the site while the site's nodes are upgraded one
// after the other with the guide's upgrade block (systemctl stop, install
// the build of upgradeTo, systemctl start). A node is stopped only while
// its own device is not running (the guide says why: a running step dies
// with the node and is never re-run). The task still succeeds with exactly
// one result per device and every step started once, and the hub shows the
// new version on every site node and the old one on the hub members.
func TestUpgrade(t *testing.T) {
	g := newGuideLab(t, 3)
	dir := t.TempDir()
	oldBin := buildOutpost(t, filepath.Join(dir, "old"), upgradeFrom)
	newBin := buildOutpost(t, filepath.Join(dir, "new"), upgradeTo)
	g.walk(oldBin)
	m := g.mesh
	m.waitFormed()
	hub := m.node("hub-1")
	site := m.siteNodes(guideSite)
	devices := names(site)
	m.eventually(waitLong, "every node at "+upgradeFrom, func() error { return m.wantVersions(hub, m.nodes, upgradeFrom) })

	steps := []string{"step1", "step2", "end"}
	spec := otaSpec{Concurrency: 1, DeviceTimeout: "120s",
		Steps: append(otaSleepSteps(m.otaCountDir(), upgradeStepSecs, "step1", "step2"), otaSleepSteps(m.otaCountDir(), 0, "end")...)}
	task := newOTATask("upgrade", spec)
	task.Spec.Targets.Sites = []string{guideSite}
	name := task.Metadata.Name
	m.otaApply(hub, task)
	watch := m.otaStartWatch(hub, name)

	for i, n := range site {
		m.upgradeWhenIdle(name, n)
		if i == 0 {
			v, err := m.otaGetTask(hub, name)
			if err != nil {
				t.Fatal(err)
			}
			if v.ended() {
				t.Fatalf("task %s ended (%s) before the first node was upgraded; the test must upgrade during the task", name, v.Status.Phase)
			}
			m.logf("upgrading %s while task %s is %s, counts %+v", n.name, name, v.Status.Phase, v.Status.Counts)
		}
		g.putBinary(n.name, newBin)
		g.runNamed("upgrade", n.name)
		m.eventually(waitLong, n.name+" alive at "+upgradeTo, func() error {
			return m.wantVersions(hub, []*meshNode{n}, upgradeTo)
		})
		// Its site's Raft has it back before the next one stops: a site of
		// three keeps quorum with one node down, not two.
		m.eventually(waitLong, n.name+" back in site "+guideSite+"'s Raft", func() error {
			_, err := m.agreedLeader(site)
			return err
		})
		m.logf("%s upgraded", n.name)
	}

	if code, out := m.otaWaitWatch(watch, otaWait); code != 0 {
		t.Errorf("task watch exited %d; want 0; output:\n%s", code, out)
	}
	m.otaWantTask(hub, name, "Succeeded", otaCounts{Total: 3, Succeeded: 3})
	m.otaWantSucceeded(m.otaResultsOf(hub, name, devices), name, devices, steps...)
	if err := m.wantVersions(hub, site, upgradeTo); err != nil {
		t.Error(err)
	}
	if err := m.wantVersions(hub, m.siteNodes("hub"), upgradeFrom); err != nil {
		t.Error(err)
	}
	m.waitFormed()
}

// upgradeWhenIdle waits until n's device of task is not running and will
// not start soon: it has finished (its last step, "end", started), or it
// has not started while another device is in its first step (concurrency
// 1: that one has a whole step to go before the next device starts).
func (m *mesh) upgradeWhenIdle(task string, n *meshNode) {
	m.t.Helper()
	m.eventually(otaWait, n.name+"'s device not running", func() error {
		lines, err := m.otaLines(task)
		if err != nil {
			return err
		}
		if lines[n.name]["end"] > 0 {
			return nil
		}
		if len(lines[n.name]) > 0 {
			return fmt.Errorf("its device runs: %v", lines[n.name])
		}
		for other, l := range lines {
			if other != n.name && l["step1"] > 0 && l["step2"] == 0 {
				return nil
			}
		}
		return fmt.Errorf("its device may start any moment: %v", lines)
	})
}

// wantVersions checks that via's API shows each of nodes alive at version.
func (m *mesh) wantVersions(via *meshNode, nodes []*meshNode, version string) error {
	all, err := m.getNodes(via)
	if err != nil {
		return err
	}
	for _, n := range nodes {
		got := all[n.name].State + " " + all[n.name].Version
		if want := "alive " + version; got != want {
			return fmt.Errorf("%s is %q at the hub; want %q", n.name, got, want)
		}
	}
	return nil
}

// buildOutpost builds cmd/outpost into dir with node.Version set.
func buildOutpost(t *testing.T, dir, version string) string {
	t.Helper()
	bin := filepath.Join(dir, "outpost")
	start := time.Now()
	cmd := exec.CommandContext(t.Context(), "go", "build", "-o", bin,
		"-ldflags", "-X github.com/outpost-mesh/outpost/node.Version="+version,
		"github.com/outpost-mesh/outpost/cmd/outpost")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", version, err, strings.TrimSpace(string(out)))
	}
	t.Logf("built outpost %s in %s", version, time.Since(start).Round(time.Second))
	return bin
}
