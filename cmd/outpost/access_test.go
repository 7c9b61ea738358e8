package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-mesh/outpost/node"
)

// withToken writes a copy of d's credential file that carries token.
func withToken(t *testing.T, d *daemon, token string) string {
	t.Helper()
	creds, err := node.LoadCredentials(d.config())
	if err != nil {
		t.Fatal(err)
	}
	creds.Token = token
	path := filepath.Join(t.TempDir(), "admin.yaml")
	if err := creds.Write(path); err != nil {
		t.Fatal(err)
	}
	return path
}

// tokenLine is what `outpost access create` prints on stdout: the token
// alone.
var tokenLine = regexp.MustCompile(`^([a-z0-9-]+)\.[A-Za-z0-9_-]{43}\n$`)

// TestAccessAndAuditCLI: `outpost access create` prints the token alone
// on stdout; the token works with its role, a call beyond the role fails
// with the permission missing and what to do; `access ls` lists tokens
// (never secrets) in every -o form; a revoked token is refused at once;
// `outpost audit` shows what each did, filtered by --user and --since, as
// a table and as JSON.
func TestAccessAndAuditCLI(t *testing.T) {
	t.Parallel()
	bin := outpostBinary(t)
	d := startDaemon(t, bin, t.TempDir())
	as := func(config string, args ...string) result {
		t.Helper()
		return runCLI(t, bin, "", append(args, "--config", config)...)
	}

	r := runCLI(t, bin, "", "access", "create", "ci", "--role", "operator", "--ttl", "1h", "--config", d.config())
	if r.code != 0 || !tokenLine.MatchString(r.stdout) || !strings.HasPrefix(r.stdout, "ci.") {
		t.Fatalf("access create: exit %d, stdout %q; want the token alone on one line", r.code, r.stdout)
	}
	if !strings.Contains(r.stderr, "role operator") || strings.Contains(r.stderr, strings.TrimSpace(r.stdout)) {
		t.Errorf("access create: stderr %q; want the role said there and the token only on stdout", r.stderr)
	}
	operator := withToken(t, d, strings.TrimSpace(r.stdout))
	viewer := withToken(t, d, strings.TrimSpace(d.ok(t, "", "access", "create", "ro", "--role", "viewer")))
	if r := d.fails(t, "access", "create", "x", "--role", "root"); !strings.Contains(r.stderr, "--role") || !strings.Contains(r.stderr, "admin, operator or viewer") {
		t.Errorf("access create --role root: %q; want the roles it takes", r.stderr)
	}

	// Each role: what it may, and a refusal that names what is missing.
	if r := as(operator, "apply", "-f", writeFile(t, t.TempDir(), "s.yaml", siteYAML("by-operator", "north"))); r.code != 0 {
		t.Fatalf("apply as operator: exit %d: %s", r.code, r.stderr)
	}
	for _, tc := range []struct {
		config, who string
		args        []string
		want        string
	}{
		{operator, "operator", []string{"access", "ls"}, "operator role cannot list accesstokens.core.outpost.dev: needs admin"},
		{viewer, "viewer", []string{"delete", "site", "by-operator"}, "viewer role cannot delete sites.core.outpost.dev: needs operator"},
	} {
		r := as(tc.config, tc.args...)
		if r.code == 0 || !strings.Contains(r.stderr, tc.want) || !strings.Contains(r.stderr, "ask an admin for a token with the role it needs") {
			t.Errorf("%s: outpost %s: exit %d, %q; want %q and what to do", tc.who, strings.Join(tc.args, " "), r.code, r.stderr, tc.want)
		}
	}
	if r := as(viewer, "get", "sites"); r.code != 0 || !strings.Contains(r.stdout, "by-operator") {
		t.Errorf("get sites as viewer: exit %d, %q", r.code, r.stdout+r.stderr)
	}

	// access ls in every form, never with a secret.
	table := d.ok(t, "", "access", "ls")
	if !regexp.MustCompile(`(?m)^ci\s+operator\s+20\d\d-`).MatchString(table) || !regexp.MustCompile(`(?m)^ro\s+viewer\s+never`).MatchString(table) {
		t.Errorf("access ls:\n%s\nwant ci (operator, with its expiry) and ro (viewer, never)", table)
	}
	if out := d.ok(t, "", "access", "ls", "-o", "name"); !strings.Contains(out, "accesstoken.core.outpost.dev/ci\n") {
		t.Errorf("access ls -o name: %q", out)
	}
	for _, o := range []string{"json", "yaml"} {
		if out := d.ok(t, "", "access", "ls", "-o", o); !strings.Contains(out, "operator") || strings.Contains(out, "secretHash") {
			t.Errorf("access ls -o %s: %s; want the tokens without their hashes", o, out)
		}
	}

	d.ok(t, "", "access", "revoke", "ci")
	if r := as(operator, "get", "sites"); r.code == 0 || !strings.Contains(r.stderr, "invalid bearer token") || !strings.Contains(r.stderr, "check the token in your --config file") {
		t.Errorf("get sites with a revoked token: exit %d, %q", r.code, r.stderr)
	}

	// The audit log: the operator's write and refusal, the viewer's
	// refusal, the revoked token's try.
	var events []node.AuditEventSpec
	if err := json.Unmarshal([]byte(d.ok(t, "", "audit", "--user", "ci", "-o", "json")), &events); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"create sites 201": false, "list accesstokens 403": false, "get /apis 401": false}
	for _, e := range events {
		if e.User != "ci" || e.Source != "127.0.0.1" || e.Time.IsZero() {
			t.Errorf("audit --user ci shows %+v; want ci's events, with the source and time", e)
		}
		want[e.Verb+" "+e.Resource+" "+strconv.Itoa(e.Code)] = true
	}
	for k, ok := range want {
		if !ok {
			t.Errorf("audit --user ci -o json lacks %q: %+v", k, events)
		}
	}
	tbl := d.ok(t, "", "audit", "--user", "ro", "--since", "1h")
	if !regexp.MustCompile(`(?m)^TIME\s+USER\s+VERB\s+RESOURCE\s+NAME\s+CODE\s+SOURCE\s+MESSAGE$`).MatchString(tbl) ||
		!regexp.MustCompile(`(?m)\sro\s+delete\s+sites\s+by-operator\s+403\s+127\.0\.0\.1\s`).MatchString(tbl) {
		t.Errorf("audit --user ro --since 1h:\n%s\nwant the viewer's refused delete", tbl)
	}
	if out := d.ok(t, "", "audit", "--since", "1ns", "-o", "json"); strings.TrimSpace(out) != "[]" {
		t.Errorf("audit --since 1ns: %s; want no events", out)
	}
	if out := d.ok(t, "", "audit", "-o", "name"); !strings.Contains(out, "auditevent.core.outpost.dev/") {
		t.Errorf("audit -o name: %q", out)
	}
	if r := d.fails(t, "audit", "-o", "xml"); !strings.Contains(r.stderr, "table, wide, json, yaml or name") {
		t.Errorf("audit -o xml: %q; want the formats it takes", r.stderr)
	}
}

// sortedLines splits s into its lines, each with its newline, sorted.
func sortedLines(s string) []string {
	lines := strings.SplitAfter(s, "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	slices.Sort(lines)
	return lines
}

// waitFor polls check until it returns nil, for at most 30 s.
func waitFor(t *testing.T, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestGetWatch: `outpost get --watch` prints the list, then each change
// as it happens, until it is stopped.
func TestGetWatch(t *testing.T) {
	t.Parallel()
	bin := outpostBinary(t)
	d := startDaemon(t, bin, t.TempDir())
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	out := &syncBuffer{}
	watch := exec.CommandContext(ctx, bin, "get", "sites", "--watch", "--config", d.config())
	watch.Env, watch.Stdout, watch.Stderr = childEnv(), out, out
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = watch.Wait() }()
	rows := func(name string) int {
		return len(regexp.MustCompile(`(?m)^`+name+`\s`).FindAllString(out.String(), -1))
	}
	// The hub's own Site may change (its status) after the list: a row more.
	waitOutput(t, out, func(s string) bool { return rows("hub") >= 1 && strings.HasPrefix(s, "NAME") }, "the listed sites under their header")
	d.ok(t, siteYAML("watched", "north"), "apply", "-f", "-")
	waitOutput(t, out, func(string) bool { return rows("watched") == 1 }, "the new site")
	d.ok(t, siteYAML("watched", "south"), "apply", "-f", "-")
	waitOutput(t, out, func(string) bool { return rows("watched") == 2 }, "the site's change")
	if strings.Count(out.String(), "NAME") != 1 {
		t.Errorf("the watch printed its header more than once:\n%s", out.String())
	}
	// A change's row has the header's columns (not the wide ones too).
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	for _, l := range lines[1:] {
		if got, want := len(strings.Fields(l)), len(strings.Fields(lines[0])); got != want {
			t.Errorf("row %q has %d columns, the header %d:\n%s", l, got, want, out.String())
		}
	}
}

// TestBackupRestoreCLI: `outpost backup FILE` on a hub, `outpost restore
// FILE` into an empty data dir, and a hub started on it holds every
// resource, and the old tokens work; restore refuses a data dir that
// holds a node, and a file that is not a backup, saying what to do.
func TestBackupRestoreCLI(t *testing.T) {
	t.Parallel()
	bin := outpostBinary(t)
	old := startDaemon(t, bin, t.TempDir())
	old.ok(t, siteYAML("lisbon", "38.72,-9.14"), "apply", "-f", "-")
	viewer := strings.TrimSpace(old.ok(t, "", "access", "create", "kept", "--role", "viewer"))
	kinds := []string{"sites", "accesstokens", "jointokens"}
	old.ok(t, "", "token", "create", "--site", "lisbon")
	before := map[string]string{}
	for _, k := range kinds {
		before[k] = strings.Join(sortedLines(old.ok(t, "", "get", k, "-o", "name")), "")
	}
	file := filepath.Join(t.TempDir(), "hub.backup")
	if r := runCLI(t, bin, "", "backup", file, "--config", withToken(t, old, viewer)); r.code == 0 || !strings.Contains(r.stderr, "needs admin") {
		t.Errorf("backup as a viewer: exit %d, %q; want a refusal naming admin", r.code, r.stderr)
	}
	old.ok(t, "", "backup", file)

	if r := runCLI(t, bin, "", "restore", file, "--data-dir", old.dir); r.code == 0 || !strings.Contains(r.stderr, "already holds node") || !strings.Contains(r.stderr, "empty") {
		t.Errorf("restore into a used data dir: exit %d, %q", r.code, r.stderr)
	}
	if r := runCLI(t, bin, "", "restore", writeFile(t, t.TempDir(), "x", "hello\n"), "--data-dir", t.TempDir()); r.code == 0 || !strings.Contains(r.stderr, "not an outpost backup") {
		t.Errorf("restore of a file that is not a backup: exit %d, %q", r.code, r.stderr)
	}
	if code := old.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("old hub exited %d", code)
	}
	dir := t.TempDir()
	if r := runCLI(t, bin, "", "restore", file, "--data-dir", dir); r.code != 0 || !strings.Contains(r.stdout, "start the hub") {
		t.Fatalf("restore: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
	restored := startDaemon(t, bin, dir)
	// Every resource is back; the one new object is the restored hub's
	// own admin credential (its admin.yaml).
	creds, err := node.LoadCredentials(restored.config())
	if err != nil {
		t.Fatal(err)
	}
	admin, _, _ := strings.Cut(creds.Token, ".")
	for _, k := range kinds {
		want := before[k]
		if k == "accesstokens" {
			want = strings.Join(sortedLines(want+"accesstoken.core.outpost.dev/"+admin+"\n"), "")
		}
		waitFor(t, "the restored "+k, func() error {
			if got := restored.ok(t, "", "get", k, "-o", "name"); strings.Join(sortedLines(got), "") != want {
				return fmt.Errorf("get %s -o name on the restored hub:\n%s\nwant\n%s", k, got, want)
			}
			return nil
		})
	}
	if r := runCLI(t, bin, "", "get", "sites", "--config", withToken(t, restored, viewer)); r.code != 0 || !strings.Contains(r.stdout, "lisbon") {
		t.Errorf("the old viewer token on the restored hub: exit %d, %q", r.code, r.stdout+r.stderr)
	}
}
