//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outpost-mesh/outpost/e2e/netlab"
)

// The install guide, walked as a test. docs/install.md marks the blocks a
// test runs with an HTML comment before a ```sh block:
//
//	<!-- e2e: hosts=hub-2,hub-3 capture=VAR copy=HOST:FILE -->  run in the walk, on each host in turn
//	<!-- e2e: block=NAME -->                                   run only when a test asks for NAME
//
// hosts names lab hosts; "site" is every host of the guide's site. capture
// keeps the block's stdout, trimmed, as $VAR for later blocks; copy puts
// FILE from HOST's working directory into this host's first (what an
// operator does with scp). A block runs as written with `sh -e`, in the
// host's network namespace and a UTS namespace whose host name is the
// host's, with /var/lib/outpost, /etc/outpost, /etc/nftables.d and
// /usr/local/bin bind-mounted from the host's own directory, so every host
// has its own copy of the paths the guide names (and its own nftables, with
// its network namespace). `systemctl` lines are not shell: there is no
// systemd here, so the test does what systemd would with
// deploy/systemd/outpost.service (start: its ExecStart with its
// EnvironmentFile's variables; stop: SIGTERM, which must end in exit 0).

const (
	guidePath = "../docs/install.md"
	unitPath  = "../deploy/systemd/outpost.service"
	// guideSite is the site the guide joins; its hosts are guideSite-1, ...
	guideSite = "berlin"
	// guideScriptTimeout bounds one shell part of a block (the guide's
	// `until ...; do sleep 1; done` waits included).
	guideScriptTimeout = 2 * time.Minute
	// guidePATH is systemd's PATH for services, and the blocks' PATH.
	guidePATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// guideMounts are the host paths each lab host has a copy of, in its
// directory (the key without its leading slash).
var guideMounts = []string{"/var/lib/outpost", "/etc/outpost", "/etc/nftables.d", "/usr/local/bin"}

// guidePrologue runs before every command on a host: name the host, mount
// its own copies of guideMounts (the mount namespace is the one `ip netns
// exec` made for this command alone), change to a directory and exec the
// command. Arguments: host name, the mount sources in guideMounts order,
// the directory, the command.
const guidePrologue = `set -e
hostname "$1"
mount --bind "$2" /var/lib/outpost
mount --bind "$3" /etc/outpost
mount --bind "$4" /etc/nftables.d
mount --bind "$5" /usr/local/bin
cd "$6"
shift 6
exec "$@"`

// TestInstallGuide walks docs/install.md on a lab of six hosts (hub-1..3,
// berlin-1..2 and the operator's ctl): every marked block, as written. At
// the end all five nodes are alive at the hub, the hub's Raft group has its
// three members as voters, the site is connected with its two nodes and a
// leader, operator access works with the token the guide made, and the
// backup file is there.
func TestInstallGuide(t *testing.T) {
	g := newGuideLab(t, 2)
	g.walk(outpostBin)
	m := g.mesh
	m.waitFormed()
	m.logf("the guide's mesh formed")

	for _, hub := range m.siteNodes("hub") {
		st, err := m.status(hub)
		if err != nil {
			t.Fatal(err)
		}
		var voters []string
		for _, p := range st.Raft.Peers {
			if p.Suffrage == "Voter" {
				voters = append(voters, p.ID)
			}
		}
		slices.Sort(voters)
		if want := names(m.siteNodes("hub")); !slices.Equal(voters, want) {
			t.Errorf("%s: the hub's voters are %v; want %v (peers %+v)", hub.name, voters, want, st.Raft.Peers)
		}
	}
	s, err := m.site(m.node("hub-1"), guideSite)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Connected || s.NodeCount != 2 {
		t.Errorf("site %s: %+v; want connected with 2 nodes", guideSite, s)
	}
	// The operator's token has the role the guide gave it: reads work,
	// token management is refused.
	if _, err := m.adminCLI(m.node("hub-1"), "access", "ls"); err == nil || !strings.Contains(err.Error(), "403") && !strings.Contains(strings.ToLower(err.Error()), "forbidden") {
		t.Errorf("access ls with the guide's operator token: %v; want a 403", err)
	}
	g.checkFirewall() // guide_firewall_test.go
	// Figures for the guide's sizing notes (printed, not asserted).
	for _, n := range m.nodes {
		m.logf("%s: %s", n.name, procMemory(n.proc.PID()))
	}
	backups, _ := filepath.Glob(filepath.Join(g.workDir("hub-1"), "outpost-backup-*.db"))
	if len(backups) != 1 {
		t.Fatalf("backups in hub-1's directory: %v; want one", backups)
	}
	if fi, err := os.Stat(backups[0]); err != nil || fi.Size() == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("backup %s: %v, %v; want a non-empty file of mode 0600", backups[0], fi, err)
	}
}

// guideLab is a mesh whose hosts are set up by the guide's blocks.
type guideLab struct {
	*mesh
	unit   *guideUnit
	blocks []guideBlock
	// vars are the blocks' variables: HUB1_IP and what capture kept;
	// hostVars those that differ by host (the firewall's networks,
	// guide_firewall_test.go).
	vars     map[string]string
	hostVars map[string]map[string]string
}

// newGuideLab parses the guide and the unit and makes a lab with a hub of
// three, siteNodes hosts of the guide's site and ctl. It starts nothing.
func newGuideLab(t *testing.T, siteNodes int) *guideLab {
	t.Helper()
	blocks, err := parseGuide(guidePath)
	if err != nil {
		t.Fatal(err)
	}
	unit, err := parseUnit(unitPath)
	if err != nil {
		t.Fatal(err)
	}
	m := newLab(t, topology{hubs: 3, sites: []siteSpec{{guideSite, siteNodes}}})
	g := &guideLab{mesh: m, unit: unit, blocks: blocks, vars: map[string]string{"HUB1_IP": m.node("hub-1").host.IP()}}
	g.firewallVars() // guide_firewall_test.go
	guideMountPoints(t)
	for _, h := range m.lab.Hosts() {
		for _, d := range append(slices.Clone(guideMounts), "work", "home") {
			if err := os.MkdirAll(g.hostPath(h.Name(), d), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, n := range m.nodes {
		n.dataDir = g.hostPath(n.name, unit.dataDir)
	}
	return g
}

// guideMountPoints makes the guide's paths exist as mount points in the
// root namespace, empty, and removes those it made at the end. Nothing is
// ever written to them: blocks only see them with a host's copy mounted.
func guideMountPoints(t *testing.T) {
	t.Helper()
	for _, p := range guideMounts {
		if _, err := os.Stat(p); err == nil {
			continue
		}
		if err := os.Mkdir(p, 0o700); err != nil {
			t.Fatalf("mount point %s: %v", p, err)
		}
		t.Cleanup(func() { os.Remove(p) })
	}
}

// hostPath is where host's copy of the absolute path p is (p under one of
// guideMounts), or a directory of the host's own ("work", "home").
func (g *guideLab) hostPath(host, p string) string {
	return filepath.Join(g.dir, "hosts", host, strings.TrimPrefix(p, "/"))
}

// workDir is the host's working directory: blocks run there, the binary
// to install is put there, copy= reads and writes there.
func (g *guideLab) workDir(host string) string { return g.hostPath(host, "work") }

// guestPath maps an absolute path of the guide to the host's copy; it fails
// for a path outside guideMounts.
func (g *guideLab) guestPath(host, p string) (string, error) {
	for _, mnt := range guideMounts {
		if p == mnt || strings.HasPrefix(p, mnt+"/") {
			return g.hostPath(host, p), nil
		}
	}
	return "", fmt.Errorf("%s is outside what the test gives each host (%v)", p, guideMounts)
}

// prologueArgs are the arguments of `unshare` that run argv on host.
func (g *guideLab) prologueArgs(host, dir string, argv ...string) []string {
	args := []string{"--uts", "sh", "-c", guidePrologue, "guide-host", host}
	for _, mnt := range guideMounts {
		args = append(args, g.hostPath(host, mnt))
	}
	return append(append(args, dir), argv...)
}

// walk runs every block marked hosts=, in order, after putting bin into
// every host's working directory as ./outpost.
func (g *guideLab) walk(bin string) {
	g.t.Helper()
	for _, h := range g.lab.Hosts() {
		g.putBinary(h.Name(), bin)
	}
	for _, b := range g.blocks {
		if len(b.hosts) == 0 {
			continue
		}
		hosts := g.expandHosts(b)
		if b.capture != "" && len(hosts) != 1 {
			g.t.Fatalf("%s:%d: capture=%s on %d hosts; want one", guidePath, b.line, b.capture, len(hosts))
		}
		for _, host := range hosts {
			out := g.runBlock(b, host)
			if b.capture != "" {
				v := strings.TrimSpace(out)
				if v == "" || strings.ContainsAny(v, " \t\n") {
					g.t.Fatalf("%s:%d: capture=%s: the block printed %q; want one word", guidePath, b.line, b.capture, out)
				}
				g.vars[b.capture] = v
			}
		}
	}
	// The operator's credential the guide installed on ctl is how the
	// test's checks reach the hub.
	g.admin["hub-1"] = filepath.Join(g.hostPath("ctl", "home"), ".config", "outpost", "admin.yaml")
	g.logf("walked the guide: %d blocks", len(g.blocks))
}

// runNamed runs the block named name on host.
func (g *guideLab) runNamed(name, host string) string {
	g.t.Helper()
	for _, b := range g.blocks {
		if b.name == name {
			return g.runBlock(b, host)
		}
	}
	g.t.Fatalf("%s has no block=%s", guidePath, name)
	return ""
}

func (g *guideLab) expandHosts(b guideBlock) []string {
	var hosts []string
	for _, h := range b.hosts {
		if h == "site" {
			hosts = append(hosts, names(g.siteNodes(guideSite))...)
			continue
		}
		g.node0(h)
		hosts = append(hosts, h)
	}
	return hosts
}

// node0 returns the lab host of that name.
func (g *guideLab) node0(name string) *netlab.Host {
	g.t.Helper()
	for _, h := range g.lab.Hosts() {
		if h.Name() == name {
			return h
		}
	}
	g.t.Fatalf("%s: no host %q in the lab", guidePath, name)
	return nil
}

// putBinary places bin as ./outpost in host's working directory (a hard
// link where it can).
func (g *guideLab) putBinary(host, bin string) {
	g.t.Helper()
	dst := filepath.Join(g.workDir(host), "outpost")
	os.Remove(dst)
	if os.Link(bin, dst) == nil {
		return
	}
	if err := copyFile(bin, dst, 0o755); err != nil {
		g.t.Fatal(err)
	}
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// runBlock runs block b on host and returns what its shell parts printed.
func (g *guideLab) runBlock(b guideBlock, host string) string {
	g.t.Helper()
	where := fmt.Sprintf("%s:%d on %s", guidePath, b.line, host)
	if b.copyFrom != "" {
		from, file, _ := strings.Cut(b.copyFrom, ":")
		if err := copyFile(filepath.Join(g.workDir(from), file), filepath.Join(g.workDir(host), file), 0o600); err != nil {
			g.t.Fatalf("%s: copy=%s: %v", where, b.copyFrom, err)
		}
	}
	var stdout strings.Builder
	for _, part := range guideParts(b.script) {
		if part.systemctl != "" {
			if err := g.systemctl(host, part.systemctl); err != nil {
				g.t.Fatalf("%s: %s: %v", where, part.systemctl, err)
			}
			g.logf("%s: %s", where, part.systemctl)
			continue
		}
		out, err := g.sh(host, part.script)
		stdout.WriteString(out)
		if err != nil {
			g.t.Fatalf("%s: %v\nthe script:\n%s", where, err, part.script)
		}
	}
	return stdout.String()
}

// sh runs script with `sh -e` on host in its working directory, with the
// guide's variables, and returns its stdout.
func (g *guideLab) sh(host, script string) (string, error) {
	ctx, cancel := context.WithTimeout(g.t.Context(), guideScriptTimeout)
	defer cancel()
	cmd := g.node0(host).Command(ctx, "unshare", g.prologueArgs(host, g.workDir(host), "sh", "-e", "-c", script)...)
	cmd.Env = []string{"PATH=" + guidePATH, "HOME=" + g.hostPath(host, "home"), "HOST_IP=" + g.node0(host).IP()}
	for _, k := range keys(g.vars) {
		cmd.Env = append(cmd.Env, k+"="+g.vars[k])
	}
	for _, k := range keys(g.hostVars[host]) {
		cmd.Env = append(cmd.Env, k+"="+g.hostVars[host][k])
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := g.runWatched(cmd, cancel)
	g.logf("%s$ %s\n%s%s", host, strings.ReplaceAll(strings.TrimSpace(script), "\n", "\n  "), stdout.String(), stderr.String())
	if err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			err = fmt.Errorf("not done within %s: %w", guideScriptTimeout, err)
		}
		return stdout.String(), fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// runWatched runs cmd, and ends it early (with cancel) if a daemon that
// should run exits meanwhile: the guide's `until ...` waits would otherwise
// spin until their timeout.
func (g *guideLab) runWatched(cmd *exec.Cmd, cancel context.CancelFunc) error {
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	tick := time.NewTicker(poll)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			return err
		case <-tick.C:
			for _, n := range g.nodes {
				if n.proc != nil && !n.down && !n.proc.Running() {
					cancel()
					return fmt.Errorf("%s's daemon exited: %v (its log follows at the end); script: %v", n.name, n.proc.Wait(), <-done)
				}
			}
		}
	}
}

// systemctl does what systemd would for one `systemctl` line of a block.
func (g *guideLab) systemctl(host, line string) error {
	n := g.node(host)
	var verb string
	now := false
	for _, f := range strings.Fields(line)[1:] {
		switch {
		case f == "--now":
			now = true
		case strings.HasPrefix(f, "-"):
			return fmt.Errorf("option %s is not something the test knows systemd to do", f)
		case verb == "":
			verb = f
		case f != "outpost" && f != "outpost.service":
			return fmt.Errorf("unit %s: the test only knows outpost.service", f)
		}
	}
	running := n.proc != nil && n.proc.Running()
	switch {
	case verb == "daemon-reload" || verb == "enable" && !now:
		return nil
	case verb == "enable" || verb == "start":
		if running {
			return nil
		}
		return g.startUnit(n)
	case verb == "stop":
		return g.stopUnit(n)
	case verb == "restart":
		if err := g.stopUnit(n); err != nil {
			return err
		}
		return g.startUnit(n)
	case verb == "status" || verb == "is-active":
		if !running {
			return errors.New("outpost.service is not active")
		}
		return nil
	}
	return fmt.Errorf("systemctl %s: not something the test knows systemd to do", verb)
}

// startUnit starts the unit's ExecStart on n's host with the environment
// systemd would give it: PATH, the unit's Environment= and the variables of
// its EnvironmentFile= files, read from the host's copy; nothing else.
func (g *guideLab) startUnit(n *meshNode) error {
	env := []string{"PATH=" + guidePATH}
	env = append(env, g.unit.env...)
	for _, f := range g.unit.envFiles {
		optional := strings.HasPrefix(f, "-")
		path, err := g.guestPath(n.name, strings.TrimPrefix(f, "-"))
		if err != nil {
			return fmt.Errorf("EnvironmentFile: %w", err)
		}
		vars, err := readEnvFile(path)
		if errors.Is(err, os.ErrNotExist) && optional {
			continue
		}
		if err != nil {
			return fmt.Errorf("EnvironmentFile=%s: %w", f, err)
		}
		env = append(env, vars...)
	}
	argv := append(append([]string{"env", "-i"}, env...), g.unit.execStart...)
	// systemd runs services in /.
	n.proc = n.host.Start("unshare", g.prologueArgs(n.name, "/", argv...)...)
	n.down = false
	return nil
}

// stopUnit sends SIGTERM (KillMode=mixed: the daemon alone); the daemon
// must exit 0.
func (g *guideLab) stopUnit(n *meshNode) error {
	if n.proc == nil || !n.proc.Running() {
		return nil
	}
	n.down = true
	if err := n.proc.Stop(); err != nil {
		return fmt.Errorf("the daemon did not stop cleanly on SIGTERM: %w", err)
	}
	return nil
}

// guidePart is a systemctl line, or a run of shell lines between them.
type guidePart struct {
	systemctl string
	script    string
}

// heredoc matches the start of a here-document and captures its delimiter.
var heredoc = regexp.MustCompile(`<<-?\s*['"]?([A-Za-z_][A-Za-z0-9_]*)['"]?`)

// guideParts splits a block at its systemctl lines, keeping here-documents
// and continued lines whole.
func guideParts(script string) []guidePart {
	var parts []guidePart
	var cur []string
	flush := func() {
		if s := strings.TrimSpace(strings.Join(cur, "\n")); s != "" {
			parts = append(parts, guidePart{script: s + "\n"})
		}
		cur = nil
	}
	delim, continued := "", false
	for _, line := range strings.Split(script, "\n") {
		switch {
		case delim != "":
			if strings.TrimLeft(line, "\t") == delim {
				delim = ""
			}
		case !continued && strings.HasPrefix(strings.TrimSpace(line), "systemctl "):
			flush()
			parts = append(parts, guidePart{systemctl: strings.TrimSpace(line)})
			continue
		default:
			if m := heredoc.FindStringSubmatch(line); m != nil {
				delim = m[1]
			}
		}
		continued = delim == "" && strings.HasSuffix(line, "\\")
		cur = append(cur, line)
	}
	flush()
	return parts
}

// guideBlock is one marked block of the guide.
type guideBlock struct {
	line     int // of the marker
	hosts    []string
	name     string
	capture  string
	copyFrom string
	script   string
}

var guideMarker = regexp.MustCompile(`^<!--\s*e2e:(.*)-->\s*$`)

// parseGuide reads the marked blocks of the guide. A marker must be
// followed by a ```sh block; its keys are hosts, block, capture and copy.
func parseGuide(path string) ([]guideBlock, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	lines := strings.Split(string(b), "\n")
	var blocks []guideBlock
	for i := 0; i < len(lines); i++ {
		m := guideMarker.FindStringSubmatch(lines[i])
		if m == nil {
			continue
		}
		blk := guideBlock{line: i + 1}
		for _, kv := range strings.Fields(m[1]) {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || v == "" {
				return nil, fmt.Errorf("%s:%d: %q: want key=value", path, i+1, kv)
			}
			switch k {
			case "hosts":
				blk.hosts = strings.Split(v, ",")
			case "block":
				blk.name = v
			case "capture":
				blk.capture = v
			case "copy":
				if from, file, ok := strings.Cut(v, ":"); !ok || from == "" || file == "" || strings.Contains(file, "/") {
					return nil, fmt.Errorf("%s:%d: copy=%s: want HOST:FILE", path, i+1, v)
				}
				blk.copyFrom = v
			default:
				return nil, fmt.Errorf("%s:%d: unknown key %q (hosts, block, capture, copy)", path, i+1, k)
			}
		}
		if (len(blk.hosts) == 0) == (blk.name == "") {
			return nil, fmt.Errorf("%s:%d: a marker needs hosts= or block=, not both", path, i+1)
		}
		j := i + 1
		for j < len(lines) && strings.TrimSpace(lines[j]) == "" {
			j++
		}
		if j == len(lines) || strings.TrimSpace(lines[j]) != "```sh" {
			return nil, fmt.Errorf("%s:%d: the marker is not followed by a ```sh block", path, i+1)
		}
		var body []string
		for j++; j < len(lines) && strings.TrimSpace(lines[j]) != "```"; j++ {
			body = append(body, lines[j])
		}
		if j == len(lines) {
			return nil, fmt.Errorf("%s:%d: the block does not end", path, i+1)
		}
		blk.script = strings.Join(body, "\n")
		blocks = append(blocks, blk)
		i = j
	}
	if len(blocks) == 0 {
		return nil, fmt.Errorf("%s: no block marked <!-- e2e: ... -->", path)
	}
	return blocks, nil
}

// guideUnit is what the test takes from the systemd unit.
type guideUnit struct {
	execStart []string
	envFiles  []string
	env       []string
	// dataDir is ExecStart's --data-dir.
	dataDir string
}

// parseUnit reads the [Service] section of a unit file. ExecStart must be
// one plain command line: no prefixes, specifiers or $VARs, which the test
// would have to expand as systemd does.
func parseUnit(path string) (*guideUnit, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	u := &guideUnit{}
	section := ""
	sc := bufio.NewScanner(f)
	for ln := 1; sc.Scan(); ln++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if strings.HasPrefix(line, "[") {
			section = line
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("%s:%d: %q is not key=value", path, ln, line)
		}
		if section != "[Service]" {
			continue
		}
		switch strings.TrimSpace(k) {
		case "ExecStart":
			if u.execStart != nil {
				return nil, fmt.Errorf("%s:%d: a second ExecStart", path, ln)
			}
			if v == "" || strings.ContainsAny(v, "%$\\\"'") || strings.ContainsAny(v[:1], "-@+!:") {
				return nil, fmt.Errorf("%s:%d: ExecStart=%s: keep it a plain command line (no specifiers, variables, quotes or prefixes)", path, ln, v)
			}
			u.execStart = strings.Fields(v)
		case "EnvironmentFile":
			u.envFiles = append(u.envFiles, strings.TrimSpace(v))
		case "Environment":
			if strings.ContainsAny(v, "\"'%$") {
				return nil, fmt.Errorf("%s:%d: Environment=%s: the test takes only plain KEY=VALUE words", path, ln, v)
			}
			u.env = append(u.env, strings.Fields(v)...)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(u.execStart) < 2 || u.execStart[1] != "node" {
		return nil, fmt.Errorf("%s: ExecStart %q does not run `outpost node`", path, u.execStart)
	}
	for i, a := range u.execStart {
		if a == "--data-dir" && i+1 < len(u.execStart) {
			u.dataDir = u.execStart[i+1]
		}
	}
	if !strings.HasPrefix(u.dataDir, "/") {
		return nil, fmt.Errorf("%s: ExecStart has no absolute --data-dir", path)
	}
	return u, nil
}

// readEnvFile reads a systemd environment file: KEY=VALUE lines, # and ;
// comments, values optionally in quotes.
func readEnvFile(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var env []string
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || strings.TrimSpace(k) == "" {
			return nil, fmt.Errorf("%s:%d: %q is not KEY=VALUE", path, i+1, line)
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		env = append(env, strings.TrimSpace(k)+"="+v)
	}
	return env, nil
}

// procMemory is a process's resident memory and its peak, from /proc.
func procMemory(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return err.Error()
	}
	var fields []string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") || strings.HasPrefix(line, "VmHWM:") {
			fields = append(fields, strings.Join(strings.Fields(line), " "))
		}
	}
	return strings.Join(fields, ", ")
}
