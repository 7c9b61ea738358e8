package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestCompletionAndOutput drives the shell completion scripts, the
// completion of kinds, names and -o values from a running hub, and the -o
// forms every printing verb shares.
func TestCompletionAndOutput(t *testing.T) {
	bin := outpostBinary(t)
	d := startDaemon(t, bin, t.TempDir())

	for shell, want := range map[string]string{"bash": "__start_outpost", "zsh": "#compdef outpost", "fish": "complete -c outpost"} {
		if out := runCLI(t, bin, "", "completion", shell).stdout; !strings.Contains(out, want) {
			t.Errorf("outpost completion %s lacks %q", shell, want)
		}
	}
	if r := runCLI(t, bin, "", "completion", "tcsh"); r.code == 0 || !strings.Contains(r.stderr, "invalid argument") {
		t.Errorf("outpost completion tcsh: exit %d, stderr %q; want a refusal", r.code, r.stderr)
	}

	d.ok(t, siteYAML("lisbon", "38.72,-9.14"), "apply", "-f", "-")
	d.ok(t, siteYAML("lyon", "45.76,4.84"), "apply", "-f", "-")
	d.ok(t, "", "access", "create", "comp-bot", "--role", "viewer")
	d.ok(t, "apiVersion: clusters.outpost.dev/v1alpha1\nkind: Cluster\nmetadata: {name: plant-1}\nspec: {provider: k3s, connection: {type: proxy, tokenHash: "+strings.Repeat("ab", 32)+"}}\n", "apply", "-f", "-")
	complete := func(args ...string) []string {
		t.Helper()
		// The word to complete is the last argument: --config goes first.
		r := runCLI(t, bin, "", append([]string{"__complete", "--config", d.config()}, args...)...)
		if r.code != 0 {
			t.Fatalf("outpost __complete %q: exit %d: %s", args, r.code, r.stderr)
		}
		out := r.stdout
		var words []string
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			if !strings.HasPrefix(line, ":") { // the directive line
				word, _, _ := strings.Cut(line, "\t")
				words = append(words, word)
			}
		}
		return words
	}
	for _, tc := range []struct {
		args []string
		want string
		not  string
	}{
		{[]string{"get", ""}, "tasks sites nodes", ""},
		{[]string{"get", "si"}, "sites", "nodes"},
		{[]string{"get", "sites", "l"}, "lisbon lyon", ""},
		{[]string{"get", "sites", "ly"}, "lyon", "lisbon"},
		{[]string{"describe", "site", ""}, "lisbon lyon", ""},
		{[]string{"get", "sites", "-o", ""}, "table wide json yaml name", ""},
		{[]string{"describe", "site", "lyon", "-o", ""}, "text json yaml name", "wide"},
		{[]string{"access", "ls", "-o", ""}, "table json yaml name", "wide"},
		{[]string{"audit", "-o", ""}, "table wide json yaml name", ""},
		{[]string{"status", "-o", ""}, "text json", "yaml"},
		{[]string{"access", "revoke", "comp"}, "comp-bot", ""},
		{[]string{"cluster", "kubeconfig", ""}, "plant-1", ""},
		{[]string{"task", "logs", "some-task", "--node", ""}, d.name, ""},
		{[]string{"token", "create", "--site", "l"}, "lisbon lyon", "hub"},
		{[]string{"images", "sync", "nginx:1", "--sites", "lisbon,ly"}, "lisbon,lyon", "lyon"},
	} {
		got := " " + strings.Join(complete(tc.args...), " ") + " "
		for _, w := range strings.Fields(tc.want) {
			if !strings.Contains(got, " "+w+" ") {
				t.Errorf("completing %q offers %q, want %s among them", tc.args, got, w)
			}
		}
		if tc.not != "" && strings.Contains(got, " "+tc.not+" ") {
			t.Errorf("completing %q offers %q, want no %s", tc.args, got, tc.not)
		}
	}

	// The scripts themselves, as bash (with bash-completion) and fish run
	// them on a <TAB>: they ask the binary, which asks the hub.
	dir := t.TempDir()
	for _, tc := range []struct{ shell, script string }{
		{"bash", `source /usr/share/bash-completion/bash_completion; source "$1"; COMP_WORDS=(outpost get sites l); COMP_CWORD=3; COMP_LINE="outpost get sites l"; COMP_POINT=${#COMP_LINE}; __start_outpost; printf '%s\n' "${COMPREPLY[@]}"`},
		{"fish", `source $argv[1]; complete -C 'outpost get sites l' | string replace -r '\t.*' ''; true`},
	} {
		script := writeFile(t, dir, "outpost."+tc.shell, runCLI(t, bin, "", "completion", tc.shell).stdout)
		args := []string{"-c", tc.script, tc.shell, script}
		if tc.shell == "fish" {
			args = []string{"--no-config", "-c", tc.script, script}
		}
		cmd := exec.Command(tc.shell, args...)
		cmd.Env = append(childEnv(), "PATH="+filepath.Dir(bin)+":"+os.Getenv("PATH"), "OUTPOST_CONFIG="+d.config(), "HOME="+dir)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr // bash's compopt says it runs outside a real <TAB>
		out, err := cmd.Output()
		if got := strings.Fields(string(out)); err != nil || !slices.Equal(got, []string{"lisbon", "lyon"}) {
			t.Errorf("%s completion of `outpost get sites l<TAB>`: %v, %q (stderr %q); want lisbon and lyon", tc.shell, err, out, stderr.String())
		}
	}

	// -o name, and json and yaml on describe, as on get.
	if out := d.ok(t, "", "get", "sites", "-l", "", "-o", "name"); !strings.Contains(out, "site.core.outpost.dev/lisbon\nsite.core.outpost.dev/lyon\n") {
		t.Errorf("get sites -o name printed %q", out)
	}
	if out := d.ok(t, "", "describe", "site", "lyon", "-o", "name"); out != "site.core.outpost.dev/lyon\n" {
		t.Errorf("describe -o name printed %q", out)
	}
	var site struct{ Spec struct{ Location string } }
	if err := json.Unmarshal([]byte(d.ok(t, "", "describe", "site", "lyon", "-o", "json")), &site); err != nil || site.Spec.Location != "45.76,4.84" {
		t.Errorf("describe -o json: %v, %+v", err, site)
	}
	if out := d.ok(t, "", "describe", "site", "lyon", "-o", "yaml"); !strings.Contains(out, "kind: Site") {
		t.Errorf("describe -o yaml printed %q", out)
	}
	for _, args := range [][]string{{"get", "sites", "-o", "xml"}, {"describe", "site", "lyon", "-o", "wide"}, {"task", "results", "x", "-o", "table"}} {
		if r := d.fails(t, args...); !strings.Contains(r.stderr, "json, yaml or name") {
			t.Errorf("outpost %s: stderr %q, want the formats it takes", strings.Join(args, " "), r.stderr)
		}
	}
	// Not a terminal: no colour.
	if out := d.ok(t, "", "get", "nodes"); strings.Contains(out, "\033[") {
		t.Errorf("get nodes to a pipe printed escape codes: %q", out)
	}
	// A terminal (script(1) gives the command one): colour, unless
	// NO_COLOR says otherwise.
	for _, tc := range []struct {
		noColor string
		want    bool
	}{{"", true}, {"1", false}} {
		cmd := exec.Command("script", "-qec", bin+" get nodes --config "+d.config(), "/dev/null")
		cmd.Env = append(childEnv(), "TERM=xterm", "NO_COLOR="+tc.noColor)
		out, err := cmd.Output()
		if err != nil || !strings.Contains(string(out), d.name) {
			t.Fatalf("get nodes on a terminal: %v, %q", err, out)
		}
		if got := strings.Contains(string(out), ansiGreen+"alive"+ansiPlain) || strings.Contains(string(out), ansiGreen+"Alive"+ansiPlain); got != tc.want {
			t.Errorf("get nodes on a terminal with NO_COLOR=%q: %q; want the state coloured: %v", tc.noColor, out, tc.want)
		}
	}
}

func TestColorWanted(t *testing.T) {
	for _, tc := range []struct {
		noColor, term string
		tty, want     bool
	}{
		{"", "xterm", true, true},
		{"", "xterm", false, false},
		{"1", "xterm", true, false},
		{"", "dumb", true, false},
	} {
		t.Setenv("NO_COLOR", tc.noColor)
		t.Setenv("TERM", tc.term)
		if got := colorWanted(tc.tty); got != tc.want {
			t.Errorf("NO_COLOR=%q TERM=%q tty=%v: colour %v, want %v", tc.noColor, tc.term, tc.tty, got, tc.want)
		}
	}
}

// TestColoredTableAligns checks that coloured state cells leave the
// columns aligned once the escape codes are gone.
func TestColoredTableAligns(t *testing.T) {
	var buf bytes.Buffer
	p := newTablePrinter(&buf, false, false)
	p.color = true
	p.print(&metav1.Table{
		ColumnDefinitions: []metav1.TableColumnDefinition{{Name: "Name"}, {Name: "Phase"}, {Name: "Total"}},
		Rows: []metav1.TableRow{
			{Cells: []any{"a-long-task-name", "Succeeded", float64(12)}},
			{Cells: []any{"b", "Failed", float64(3)}},
			{Cells: []any{"c", "Running", float64(100)}},
		},
	})
	if err := p.flush(); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for word, code := range map[string]string{"Succeeded": ansiGreen, "Failed": ansiRed, "Running": ansiYellow} {
		if !strings.Contains(out, code+word+ansiPlain) {
			t.Errorf("%s is not coloured %q in %q", word, code, out)
		}
	}
	plain := regexp.MustCompile("\033\\[[0-9;]*m").ReplaceAllString(out, "")
	lines := strings.Split(strings.TrimSpace(plain), "\n")
	col := strings.Index(lines[0], "TOTAL")
	for _, l := range lines[1:] {
		if len(l) <= col || l[col-1] != ' ' || l[col] == ' ' {
			t.Errorf("TOTAL starts at column %d of the header, but the row is %q:\n%s", col, l, plain)
		}
	}
}
