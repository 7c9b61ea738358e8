package main

import (
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"sigs.k8s.io/yaml"

	"github.com/outpost-mesh/outpost/node"
)

func newNodeCommand() *cobra.Command {
	cfg := node.DefaultConfig()
	var configFile, restoreFrom string
	var memoryLimit int64
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Run the Outpost daemon on this host",
		Long: `Run the Outpost daemon. With no flags it is the embedded default: a one-node
hub with its data in ./outpost-data and its admin API on https://127.0.0.1:7080.

Every flag can also be set as OUTPOST_<FLAG> (e.g. OUTPOST_DATA_DIR) or as a key
of the YAML file given with --config-file (e.g. data-dir: /var/lib/outpost).
Flags win over the environment, which wins over the file.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := layerConfig(cmd.Flags(), configFile); err != nil {
				return err
			}
			logger, err := newLogger(cfg.LogLevel, cfg.LogFormat)
			if err != nil {
				return err
			}
			if memoryLimit > 0 {
				if memoryLimit < minMemoryLimit {
					return fmt.Errorf("--memory-limit of %d bytes is under %s: the daemon would spend its time collecting garbage", memoryLimit, formatByteSize(minMemoryLimit))
				}
				debug.SetMemoryLimit(memoryLimit)
			}
			cfg.NameSet = cmd.Flags().Changed("name") || os.Getenv("OUTPOST_NAME") != ""
			cfg.SiteSet = cmd.Flags().Changed("site") || os.Getenv("OUTPOST_SITE") != ""
			cfg.RegistryAddrSet = cmd.Flags().Changed("registry-addr") || os.Getenv("OUTPOST_REGISTRY_ADDR") != "" || cfg.RegistryAddr != node.DefaultRegistryAddr
			if restoreFrom != "" { // backup.go: a new hub from a backup
				if err := node.PrepareRestore(cfg.DataDir, restoreFrom); err != nil {
					return err
				}
			}
			if err := node.Join(cmd.Context(), cfg, logger); err != nil {
				return err
			}
			n, err := node.New(cfg, logger)
			if err != nil {
				return err
			}
			return n.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&configFile, "config-file", "", "YAML file of node settings, keyed by flag name")
	f.StringVar(&cfg.Name, "name", cfg.Name, "node name, unique in the mesh")
	f.StringVar(&cfg.Site, "site", cfg.Site, "site this node belongs to")
	f.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "directory for all of the node's state")
	f.StringVar(&cfg.APIAddr, "api-addr", cfg.APIAddr, "address of the admin API (HTTPS)")
	f.StringSliceVar(&cfg.APINames, "api-names", nil, "extra DNS names and IPs for the admin API's certificate (e.g. hub.example.net)")
	f.StringVar(&cfg.LogLevel, "log-level", cfg.LogLevel, "debug, info, warn or error")
	f.StringVar(&cfg.LogFormat, "log-format", cfg.LogFormat, "text or json")
	f.BoolVar(&cfg.Hub, "hub", false, "bootstrap a new hub (what a node without --join does)")
	f.StringVar(&cfg.JoinAddr, "join", "", "QUIC address of a hub member to join, host:port (first start only)")
	f.StringVar(&cfg.Token, "token", "", "join token from \"outpost token create\" (first start only)")
	f.StringVar(&cfg.BindAddr, "bind-addr", cfg.BindAddr, "IP the QUIC and gossip ports bind")
	f.StringVar(&cfg.AdvertiseAddr, "advertise-addr", "", "IP other nodes reach this one at (default: --bind-addr when specific, else the first non-loopback address)")
	f.IntVar(&cfg.QUICPort, "quic-port", cfg.QUICPort, "UDP port of all mesh traffic")
	f.IntVar(&cfg.GossipPort, "gossip-port", cfg.GossipPort, "gossip port (UDP and TCP)")
	f.StringToStringVar(&cfg.Labels, "labels", nil, "node labels, k=v,...")
	f.IntVar(&cfg.SiteVoters, "site-voters", cfg.SiteVoters, "Raft voters per site (1, 3 or 5; more nodes join as non-voters)")
	f.DurationVar(&cfg.ReapAfter, "reap-after", cfg.ReapAfter, "how long a dead voter stays before it is replaced")
	f.StringSliceVar(&cfg.OTAPolicy.Allow, "ota-allow", cfg.OTAPolicy.Allow, "task step types this node runs")
	f.StringSliceVar(&cfg.OTAPolicy.Paths, "ota-paths", cfg.OTAPolicy.Paths, "directories read and write steps may touch (symlinks resolved)")
	f.DurationVar(&cfg.OTARetention, "ota-retention", cfg.OTARetention, "how long a task run that ended is kept on this node (its journal, result and the output task logs reads); 0 keeps every run")
	f.DurationVar(&cfg.CertValidity, "cert-validity", cfg.CertValidity, "validity of the node certificates this hub signs (renewed at a third left)")
	f.StringVar(&cfg.GossipProfile, "gossip-profile", cfg.GossipProfile, "gossip timings: lan, or wan for sites whose hosts answer slowly (slow links, very many hosts)")
	f.DurationVar(&cfg.HeartbeatInterval, "heartbeat-interval", cfg.HeartbeatInterval, "how often a live node's lastSeen is refreshed (state changes are written at once)")
	f.DurationVar(&cfg.IdleTimeout, "idle-timeout", cfg.IdleTimeout, "QUIC: close a connection that received nothing for this long")
	f.DurationVar(&cfg.KeepAlive, "keep-alive", cfg.KeepAlive, "QUIC: how often an idle connection this node dialed pings; under --idle-timeout and under the UDP binding timeout of any NAT on the way to the hub")
	f.StringVar(&cfg.RegistryAddr, "registry-addr", cfg.RegistryAddr, "address of the image mirror, the plain-HTTP OCI pull API for this host's container runtime (\"\" turns it off; see: outpost images mirror-config)")
	f.Var(newByteSizeValue(&memoryLimit), "memory-limit", "soft limit of the daemon's own memory (Go heap and runtime; not its stores' mapped files): near it the garbage collector works harder instead of letting the heap grow to twice what is live (e.g. 640MiB for a hub member of a 10,000-node mesh; 0: GOMEMLIMIT or none)")
	f.Var(newByteSizeValue(&cfg.CacheSize), "cache-size", "most bytes of image blobs this node keeps, least recently used evicted first (e.g. 20GiB, 500MB; 0: no bound)")
	f.BoolVar(&cfg.RegistryPush, "registry-push", false, "hub members: accept pushes to the hub's own registry on --registry-addr, with an admin or operator API token as the password")
	f.StringVar(&cfg.RegistryDefaultNS, "registry-default-ns", "", "registry a mirror request without ?ns= is for: \"\" the hub's own registry; docker.io for Docker's registry-mirrors, which sends no ns")
	f.IntVar(&cfg.ClusterWorkers, "cluster-workers", cfg.ClusterWorkers, "hub: how many edge clusters are reconciled at once")
	f.DurationVar(&cfg.AuditMaxAge, "audit-max-age", cfg.AuditMaxAge, "hub: how long audit events are kept (0: no bound)")
	f.IntVar(&cfg.AuditMaxEvents, "audit-max-events", cfg.AuditMaxEvents, "hub: how many audit events are kept, the oldest pruned first (0: no bound)")
	f.StringVar(&restoreFrom, "restore", "", "start a new hub in an empty --data-dir from a file that outpost backup wrote")
	f.StringVar(&cfg.TunnelPorts, "tunnel-ports", cfg.TunnelPorts, "hub: TCP port range proxy clusters' tunnel ports are taken from (two per cluster), FIRST-LAST")
	f.DurationVar(&cfg.ClusterGrace, "cluster-grace", cfg.ClusterGrace, "hub: how long a cluster that stops answering keeps its conditions before they go Unknown")
	f.DurationVar(&cfg.ClusterResync, "cluster-resync", cfg.ClusterResync, "hub: how often each cluster is probed when nothing changes")
	f.StringVar(&cfg.EdgeCluster, "cluster", "", "site nodes: serve as the agent of this proxy Cluster (its reverse tunnel to the hub) while this node leads its site")
	f.StringVar(&cfg.EdgeKubeconfig, "kubeconfig", "", "with --cluster: kubeconfig of the edge cluster's API server")
	f.StringVar(&cfg.EdgeClusterToken, "cluster-token", "", "with --cluster: the cluster token that outpost cluster create --proxy printed (better: OUTPOST_CLUSTER_TOKEN)")
	return cmd
}

// minMemoryLimit is the least --memory-limit: the daemon's live heap alone
// is tens of MiB.
const minMemoryLimit = 64 << 20

// layerConfig fills every flag not given on the command line from
// OUTPOST_<FLAG>, then from the YAML file. Errors name the variable or the
// file and key.
func layerConfig(fs *pflag.FlagSet, file string) error {
	if file == "" {
		file = os.Getenv("OUTPOST_CONFIG_FILE")
	}
	fileVals := map[string]any{}
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return fmt.Errorf("--config-file: %w", err)
		}
		if err := yaml.Unmarshal(b, &fileVals); err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
		var unknown []string
		for k := range fileVals {
			if f := fs.Lookup(k); f == nil || k == "config-file" || k == "config" || k == "namespace" {
				unknown = append(unknown, k)
			}
		}
		if len(unknown) > 0 {
			sort.Strings(unknown)
			return fmt.Errorf("%s: unknown key %q (keys are the flag names of `outpost node --help`)", file, unknown[0])
		}
	}
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed || f.Name == "config-file" || f.Name == "config" || f.Name == "namespace" {
			return
		}
		env := "OUTPOST_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok {
			if e := f.Value.Set(v); e != nil {
				err = fmt.Errorf("%s=%q: %v", env, v, e)
			}
			return
		}
		if v, ok := fileVals[f.Name]; ok {
			if e := f.Value.Set(fmt.Sprint(v)); e != nil {
				err = fmt.Errorf("%s: %s: %v", file, f.Name, e)
			}
		}
	})
	return err
}

func newLogger(level, format string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q must be one of debug, info, warn, error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q must be text or json", format)
}
