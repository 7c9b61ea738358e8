package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/outpost-mesh/outpost/internal/atomicfile"
	"github.com/outpost-mesh/outpost/node"
)

func newImagesCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "images",
		Short: "The image cache: mirror configuration, syncs ahead of need, pins and figures",
	}
	cmd.AddCommand(newMirrorConfigCommand(), newImagesPushCommand(), newImagesPullCommand())
	addImageResourceCommands(cmd) // images_sync.go
	return cmd
}

// mirrorConfigOptions are the flags of `outpost images mirror-config`.
type mirrorConfigOptions struct {
	runtime    string
	write      bool
	force      bool
	addr       string
	hostsDir   string
	daemonJSON string
}

func newMirrorConfigCommand() *cobra.Command {
	o := mirrorConfigOptions{}
	cmd := &cobra.Command{
		Use:   "mirror-config [--runtime containerd|docker] [--write]",
		Short: "Print (or write) the container runtime's configuration for the node's image mirror",
		Long: `Print the configuration that makes this host's container runtime pull through
its Outpost node's image mirror (outpost node --registry-addr), or write it
with --write.

containerd: hosts.toml files under --hosts-dir (containerd's config_path):
  _default/hosts.toml     every registry without a directory of its own goes
                          to the mirror first, then to the registry itself;
                          containerd adds ?ns=<registry> to each request,
                          which is how one mirror serves every registry
  docker.io/hosts.toml    the same for Docker Hub (containerd's own name for it)
  <mirror>/hosts.toml     images of the hub's own registry, pulled as
                          <mirror>/<repository>:<tag>, go straight to the node

Docker: the "registry-mirrors" entry of daemon.json. Docker mirrors only Docker
Hub this way and sends no ns, so start the node with
--registry-default-ns docker.io.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.runtime, "runtime", "containerd", "container runtime: containerd or docker")
	f.BoolVar(&o.write, "write", false, "write the files instead of printing them")
	f.BoolVar(&o.force, "force", false, "with --write: replace hosts.toml files that hold other settings")
	f.StringVar(&o.addr, "registry-addr", node.DefaultRegistryAddr, "the node's --registry-addr")
	f.StringVar(&o.hostsDir, "hosts-dir", "/etc/containerd/certs.d", "containerd's hosts directory (config_path of its CRI registry settings)")
	f.StringVar(&o.daemonJSON, "daemon-json", "/etc/docker/daemon.json", "Docker's daemon.json (--runtime docker --write merges into it)")
	return cmd
}

// mirrorFile is one configuration file: where it goes and what it holds.
type mirrorFile struct {
	path string
	text string
}

func (o mirrorConfigOptions) run(stdout, stderr io.Writer) error {
	host, err := mirrorHost(o.addr)
	if err != nil {
		return err
	}
	switch o.runtime {
	case "containerd":
		files := containerdHosts(o.hostsDir, host)
		if !o.write {
			for i, f := range files {
				if i > 0 {
					fmt.Fprintln(stdout)
				}
				fmt.Fprintf(stdout, "# ==> %s <==\n%s", f.path, f.text)
			}
			return nil
		}
		for _, f := range files {
			status, err := writeHostsFile(f, o.force)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "%s %s\n", status, f.path)
		}
		fmt.Fprintf(stderr, "containerd reads these when its CRI registry config_path is %s (no restart needed once it is); ctr: --hosts-dir %s\n", o.hostsDir, o.hostsDir)
		return nil
	case "docker":
		note := "Docker sends no ns to a mirror and mirrors only Docker Hub: start the node with --registry-default-ns docker.io; then restart dockerd."
		if !o.write {
			b, err := json.MarshalIndent(dockerConfig(nil, host), "", "  ")
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "%s\n", b)
			fmt.Fprintln(stderr, "# merge into "+o.daemonJSON+". "+note)
			return nil
		}
		if err := writeDaemonJSON(o.daemonJSON, host); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "updated %s\n", o.daemonJSON)
		fmt.Fprintln(stderr, note)
		return nil
	}
	return fmt.Errorf("--runtime %q must be containerd or docker", o.runtime)
}

// mirrorHost is the host:port clients reach the mirror at: the node's
// --registry-addr, with an unspecified IP (the node binds every address)
// replaced by loopback.
func mirrorHost(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		return "", fmt.Errorf("--registry-addr %q must be host:port, the node's --registry-addr (e.g. %s)", addr, node.DefaultRegistryAddr)
	}
	if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
		return "", fmt.Errorf("--registry-addr %q: the port must be 1-65535", addr)
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}

// containerdHosts are the hosts.toml files for a mirror at host (plain
// HTTP): the fallback for every registry, Docker Hub's, and the hub's own
// registry reached at the mirror's address.
func containerdHosts(dir, host string) []mirrorFile {
	mirror := fmt.Sprintf("[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", "http://"+host)
	return []mirrorFile{
		{filepath.Join(dir, "_default", "hosts.toml"),
			"# Outpost: every registry without a directory of its own is pulled through\n" +
				"# this node's mirror; containerd adds ?ns=<registry> to each request.\n" +
				"# No server line: when the mirror fails, containerd goes to the registry\n" +
				"# named in the image reference itself.\n" + mirror},
		{filepath.Join(dir, "docker.io", "hosts.toml"),
			"# Outpost: Docker Hub through this node's mirror (?ns=docker.io), then\n" +
				"# Docker Hub itself.\n" +
				"server = \"https://registry-1.docker.io\"\n\n" + mirror},
		{filepath.Join(dir, host, "hosts.toml"),
			"# Outpost: images of the hub's own registry, pulled as " + host + "/<repository>:<tag>,\n" +
				"# go straight to this node's mirror (plain HTTP, no ns).\n" +
				fmt.Sprintf("server = %q\n", "http://"+host)},
	}
}

// writeHostsFile writes f unless it holds other settings (then only with
// force); it says "wrote" or "unchanged".
func writeHostsFile(f mirrorFile, force bool) (string, error) {
	old, err := os.ReadFile(f.path)
	switch {
	case err == nil && string(old) == f.text:
		return "unchanged", nil
	case err == nil && !force:
		return "", fmt.Errorf("%s exists with other settings: review it, or pass --force to replace it", f.path)
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(f.path), 0o755); err != nil {
		return "", err
	}
	if err := atomicfile.Write(f.path, []byte(f.text), 0o644); err != nil {
		return "", err
	}
	return "wrote", nil
}

// dockerConfig merges the mirror into a daemon.json's settings: the mirror
// in registry-mirrors, and its address in insecure-registries unless it
// is a loopback one (Docker treats 127.0.0.0/8 and ::1 as insecure, that
// is plain HTTP allowed, by default).
func dockerConfig(cfg map[string]any, host string) map[string]any {
	if cfg == nil {
		cfg = map[string]any{}
	}
	add := func(key, v string) {
		var list []any
		if old, ok := cfg[key].([]any); ok {
			list = old
		}
		if !slices.Contains(list, any(v)) {
			list = append(list, v)
		}
		cfg[key] = list
	}
	add("registry-mirrors", "http://"+host)
	h, _, _ := net.SplitHostPort(host)
	if ip := net.ParseIP(h); h != "localhost" && (ip == nil || !ip.IsLoopback()) {
		add("insecure-registries", host)
	}
	return cfg
}

// writeDaemonJSON merges the mirror into Docker's daemon.json, keeping
// every other setting.
func writeDaemonJSON(path, host string) error {
	cfg := map[string]any{}
	b, err := os.ReadFile(path)
	switch {
	case err == nil && len(bytes.TrimSpace(b)) > 0:
		if err := json.Unmarshal(b, &cfg); err != nil {
			return fmt.Errorf("--daemon-json %s is not a JSON object: %w", path, err)
		}
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return err
	}
	out, err := json.MarshalIndent(dockerConfig(cfg, host), "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return atomicfile.Write(path, append(out, '\n'), 0o644)
}

// byteSizeValue is a flag of a byte count with an optional unit: B, kB,
// MB, GB, TB (powers of 1000), KiB, MiB, GiB, TiB or Ki, Mi, Gi, Ti
// (powers of 1024); case does not matter.
type byteSizeValue struct{ p *int64 }

func newByteSizeValue(p *int64) *byteSizeValue { return &byteSizeValue{p: p} }

func (v *byteSizeValue) Type() string { return "size" }

func (v *byteSizeValue) String() string {
	if v.p == nil {
		return "0"
	}
	return formatByteSize(*v.p)
}

func (v *byteSizeValue) Set(s string) error {
	n, err := parseByteSize(s)
	if err != nil {
		return err
	}
	*v.p = n
	return nil
}

var byteUnits = map[string]float64{
	"": 1, "b": 1,
	"k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9, "t": 1e12, "tb": 1e12,
	"ki": 1 << 10, "kib": 1 << 10, "mi": 1 << 20, "mib": 1 << 20, "gi": 1 << 30, "gib": 1 << 30, "ti": 1 << 40, "tib": 1 << 40,
}

// parseByteSize parses "20GiB", "500MB", "1.5Gi", "1024" into bytes.
func parseByteSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := strings.IndexFunc(t, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	if i < 0 {
		i = len(t)
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	mult, ok := byteUnits[unit]
	f, err := strconv.ParseFloat(num, 64)
	if !ok || err != nil || f < 0 {
		return 0, fmt.Errorf("%q is not a size: use a number with an optional unit, e.g. 20GiB, 500MB, 0 (units B, kB, MB, GB, TB, KiB, MiB, GiB, TiB)", s)
	}
	b := f * mult
	if b > math.MaxInt64/2 {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return int64(b), nil
}

// formatByteSize prints n in the largest binary unit that divides it.
func formatByteSize(n int64) string {
	for _, u := range []struct {
		name string
		size int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n != 0 && n%u.size == 0 {
			return strconv.FormatInt(n/u.size, 10) + u.name
		}
	}
	return strconv.FormatInt(n, 10)
}
