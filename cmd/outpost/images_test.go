package main

import (
	"bytes"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestMirrorConfigContainerd checks the hosts.toml files containerd reads:
// _default and docker.io point at the mirror with pull and resolve (no
// server in _default: containerd falls back to the reference's host), and
// the mirror's own address is a plain-HTTP server of its own.
func TestMirrorConfigContainerd(t *testing.T) {
	t.Parallel()
	var out, errOut bytes.Buffer
	o := mirrorConfigOptions{runtime: "containerd", addr: "127.0.0.1:5000", hostsDir: "/etc/containerd/certs.d"}
	if err := o.run(&out, &errOut); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	var cur string
	for _, line := range strings.SplitAfter(out.String(), "\n") {
		if p, ok := strings.CutPrefix(line, "# ==> "); ok {
			cur = strings.TrimSuffix(strings.TrimSpace(p), " <==")
			continue
		}
		files[cur] += line
	}
	mirror := "[host.\"http://127.0.0.1:5000\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
	def := files["/etc/containerd/certs.d/_default/hosts.toml"]
	if !strings.Contains(def, mirror) || strings.Contains(def, "\nserver") {
		t.Errorf("_default/hosts.toml:\n%s", def)
	}
	hub := files["/etc/containerd/certs.d/docker.io/hosts.toml"]
	if !strings.Contains(hub, "\nserver = \"https://registry-1.docker.io\"\n") || !strings.Contains(hub, mirror) {
		t.Errorf("docker.io/hosts.toml:\n%s", hub)
	}
	own := files["/etc/containerd/certs.d/127.0.0.1:5000/hosts.toml"]
	if !strings.Contains(own, "\nserver = \"http://127.0.0.1:5000\"\n") || strings.Contains(own, "[host.") {
		t.Errorf("127.0.0.1:5000/hosts.toml:\n%s", own)
	}
	if len(files) != 3 {
		t.Errorf("files: %v", slices.Sorted(maps.Keys(files)))
	}

	// --write: writes, leaves identical files alone, refuses to replace
	// other settings without --force.
	dir := t.TempDir()
	o = mirrorConfigOptions{runtime: "containerd", addr: "0.0.0.0:5001", hostsDir: dir, write: true}
	out.Reset()
	if err := o.run(&out, &errOut); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "_default", "hosts.toml"))
	if err != nil || !strings.Contains(string(b), `[host."http://127.0.0.1:5001"]`) {
		t.Fatalf("written _default/hosts.toml (an unspecified address becomes loopback): %s %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "127.0.0.1:5001", "hosts.toml")); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := o.run(&out, &errOut); err != nil || strings.Count(out.String(), "unchanged ") != 3 {
		t.Fatalf("second --write: %v\n%s", err, out.String())
	}
	custom := filepath.Join(dir, "docker.io", "hosts.toml")
	if err := os.WriteFile(custom, []byte("server = \"https://mirror.example\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := o.run(&out, &errOut); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("--write over other settings: %v", err)
	}
	o.force = true
	if err := o.run(&out, &errOut); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(custom); !strings.Contains(string(b), "registry-1.docker.io") {
		t.Fatalf("--force did not replace %s: %s", custom, b)
	}
}

// TestMirrorConfigDocker checks the daemon.json snippet, its note about
// --registry-default-ns, and that --write merges into existing settings.
func TestMirrorConfigDocker(t *testing.T) {
	t.Parallel()
	var out, errOut bytes.Buffer
	o := mirrorConfigOptions{runtime: "docker", addr: "127.0.0.1:5000"}
	if err := o.run(&out, &errOut); err != nil {
		t.Fatal(err)
	}
	var cfg map[string][]string
	if err := json.Unmarshal(out.Bytes(), &cfg); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, out.String())
	}
	if !slices.Equal(cfg["registry-mirrors"], []string{"http://127.0.0.1:5000"}) || cfg["insecure-registries"] != nil {
		t.Fatalf("daemon.json: %v", cfg)
	}
	if !strings.Contains(errOut.String(), "--registry-default-ns docker.io") {
		t.Fatalf("no note about the namespace: %s", errOut.String())
	}

	path := filepath.Join(t.TempDir(), "daemon.json")
	if err := os.WriteFile(path, []byte(`{"log-driver": "journald", "registry-mirrors": ["https://other.example"]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	o = mirrorConfigOptions{runtime: "docker", addr: "10.0.0.5:5000", daemonJSON: path, write: true}
	for range 2 { // a second run adds nothing twice
		if err := o.run(&out, &errOut); err != nil {
			t.Fatal(err)
		}
	}
	b, _ := os.ReadFile(path)
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got["log-driver"] != "journald" ||
		!slices.Equal(got["registry-mirrors"].([]any), []any{"https://other.example", "http://10.0.0.5:5000"}) ||
		!slices.Equal(got["insecure-registries"].([]any), []any{"10.0.0.5:5000"}) {
		t.Fatalf("merged daemon.json: %s", b)
	}
}

// TestImagesFlagErrors checks bad values name their flag (and the node's
// size flags).
func TestImagesFlagErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		flag string
	}{
		{[]string{"images", "mirror-config", "--runtime", "podman"}, "--runtime"},
		{[]string{"images", "mirror-config", "--registry-addr", "5000"}, "--registry-addr"},
		{[]string{"images", "mirror-config", "--registry-addr", "127.0.0.1:0"}, "--registry-addr"},
		{[]string{"node", "--cache-size", "20XB"}, "--cache-size"},
		{[]string{"node", "--cache-size", "-1GiB"}, "--cache-size"},
		{[]string{"node", "--memory-limit", "banana"}, "--memory-limit"},
		{[]string{"node", "--memory-limit", "1MB"}, "--memory-limit"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			t.Parallel()
			root := newRootCommand()
			root.SetArgs(tc.args)
			root.SetOut(&bytes.Buffer{})
			root.SetErr(&bytes.Buffer{})
			err := root.Execute()
			if err == nil || !strings.Contains(err.Error(), tc.flag) {
				t.Fatalf("%v: %v, want an error naming %s", tc.args, err, tc.flag)
			}
		})
	}
}

func TestParseByteSize(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int64{
		"0": 0, "1024": 1024, "20GiB": 20 << 30, "20gib": 20 << 30, "20Gi": 20 << 30, "500MB": 500e6,
		"1.5GiB": 3 << 29, "64 KiB": 64 << 10, "2TB": 2e12, "7B": 7,
	} {
		got, err := parseByteSize(in)
		if err != nil || got != want {
			t.Errorf("parseByteSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "GiB", "20XB", "-5", "1e3", "12 parsecs"} {
		if _, err := parseByteSize(in); err == nil {
			t.Errorf("parseByteSize(%q) accepted", in)
		}
	}
	if got := formatByteSize(20 << 30); got != "20GiB" {
		t.Errorf("formatByteSize(20GiB) = %s", got)
	}
}
