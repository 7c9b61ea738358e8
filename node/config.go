package node

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/outpost-mesh/outpost/clusters"
	"github.com/outpost-mesh/outpost/consensus"
	"github.com/outpost-mesh/outpost/gossip"
	"github.com/outpost-mesh/outpost/ota/agent"
	"github.com/outpost-mesh/outpost/transport"
)

// Config is everything a node is started with, gathered by cmd/outpost from
// flags, the YAML config file and OUTPOST_* variables. Field errors name the
// flag.
type Config struct {
	// Name is the node's name, unique in the mesh (--name; default: host name).
	Name string
	// Site is the site the node belongs to (--site; default "hub").
	Site string
	// DataDir holds every file the node owns (--data-dir).
	DataDir string
	// APIAddr is where the admin API listens, HTTPS (--api-addr).
	APIAddr string
	// APINames are extra DNS names and IPs the API's certificate names
	// (--api-names), for operators who reach the hub by a name other than
	// its host name.
	APINames []string
	// LogLevel is debug, info, warn or error (--log-level).
	LogLevel string
	// LogFormat is text or json (--log-format).
	LogFormat string
	// Hub says explicitly that this node bootstraps a new hub (--hub); it is
	// also what a node without --join does.
	Hub bool
	// JoinAddr is a hub member's QUIC address, host:port (--join).
	JoinAddr string
	// Token is the join token (--token); needed only for the first start.
	Token string
	// BindAddr is the host the QUIC and gossip ports bind (--bind-addr).
	BindAddr string
	// AdvertiseAddr is the host other nodes reach this one at
	// (--advertise-addr; default: BindAddr when specific, else the first
	// non-loopback address).
	AdvertiseAddr string
	// QUICPort is the UDP port of all mesh traffic (--quic-port).
	QUICPort int
	// GossipPort is the memberlist port, UDP and TCP (--gossip-port).
	GossipPort int
	// Labels are this node's labels (--labels k=v,...).
	Labels map[string]string
	// SiteVoters is how many Raft voters a site keeps (--site-voters).
	SiteVoters int
	// ReapAfter is how long a dead voter stays before it is replaced
	// (--reap-after).
	ReapAfter time.Duration
	// HeartbeatInterval is how often a live node's lastSeen is refreshed in
	// its Node object; changes of state are written at once, and a node
	// that stops being alive gets lastSeen then.
	HeartbeatInterval time.Duration
	// IdleTimeout closes a QUIC connection that received nothing for this
	// long (--idle-timeout); KeepAlive is how often a connection this node
	// dialed pings while idle (--keep-alive), shorter than IdleTimeout and
	// than the NAT's UDP binding timeout on the way to the hub.
	IdleTimeout time.Duration
	KeepAlive   time.Duration
	// OTAPolicy is what tasks may do on this node (--ota-allow,
	// --ota-paths).
	OTAPolicy agent.Policy
	// OTARetention is how long the node keeps a task run that ended: its
	// journal, result and output (--ota-retention; 0 keeps them all).
	OTARetention time.Duration
	// CertValidity is how long node certificates are valid; a node renews
	// its own when a third of it is left.
	CertValidity time.Duration
	// NameSet says --name was given explicitly; a data dir of another node
	// is then an error instead of taking that node's name.
	NameSet bool
	// SiteSet says --site was given explicitly; a joining node without it
	// takes the site its token is for.
	SiteSet bool
	// TuneRaft and TuneGossip adjust the subsystems' settings after the
	// defaults; tests use them for tight timings.
	TuneRaft   func(*consensus.Config)
	TuneGossip func(*gossip.Config)
	// GossipProfile picks the gossip timings: "lan" (memberlist's LAN
	// defaults) or "wan" (slower probes, longer timeouts).
	GossipProfile string
	// ShutdownTimeout bounds a graceful stop.
	ShutdownTimeout time.Duration

	// RegistryAddr is where the node's image mirror (the OCI pull API for
	// the host's container runtime) listens, plain HTTP (--registry-addr;
	// "" turns the mirror off).
	RegistryAddr string
	// RegistryAddrSet says --registry-addr was given explicitly: only then
	// is an address in use an error; the default address in use (a local
	// registry on port 5000) turns the mirror off with a warning.
	RegistryAddrSet bool
	// CacheSize bounds the bytes of image blobs the node keeps; the least
	// recently used are evicted beyond it (--cache-size; 0: no bound).
	CacheSize int64
	// RegistryPush lets a hub member accept authenticated pushes to the
	// hub's own registry on its mirror (--registry-push).
	RegistryPush bool
	// RegistryDefaultNS is the registry a mirror request without ?ns= is
	// for (--registry-default-ns): "" the hub's own registry, "docker.io"
	// for Docker's registry-mirrors, which sends no ns.
	RegistryDefaultNS string

	// ClusterWorkers is how many edge clusters the hub leader reconciles
	// at once (--cluster-workers).
	ClusterWorkers int
	// TunnelPorts is the range proxy clusters' tunnel ports are taken from,
	// FIRST-LAST (--tunnel-ports).
	TunnelPorts string
	// ClusterGrace is how long a cluster that stops answering keeps its
	// conditions before they go Unknown (--cluster-grace).
	ClusterGrace time.Duration
	// ClusterResync is how often each cluster is probed when nothing
	// changes (--cluster-resync).
	ClusterResync time.Duration
	// TuneClusters adjusts the cluster controller's settings after the
	// defaults; tests use it for tight timings.
	TuneClusters func(*clusters.Config)

	// EdgeCluster names the proxy Cluster this site node serves as agent
	// for (--cluster; "" serves none): while the node leads its site, it
	// keeps the cluster's reverse tunnel to the hub, as `outpost agent`
	// would.
	EdgeCluster string
	// EdgeKubeconfig is the kubeconfig of that cluster's API server
	// (--kubeconfig).
	EdgeKubeconfig string
	// EdgeClusterToken is the cluster token, TOKEN or TOKEN.FINGERPRINT as
	// `outpost cluster create --proxy` prints it (--cluster-token).
	EdgeClusterToken string

	// AuditMaxAge and AuditMaxEvents bound the audit log (audit.go):
	// older events, and the oldest beyond the count, are pruned
	// (--audit-max-age, --audit-max-events; 0: no bound).
	AuditMaxAge    time.Duration
	AuditMaxEvents int
}

// DefaultConfig returns the embedded default: a one-node hub in
// ./outpost-data with its API on 127.0.0.1:7080 and its image mirror on
// 127.0.0.1:5000 (a 20 GiB cache).
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		Name:              strings.ToLower(host),
		Site:              "hub",
		DataDir:           "outpost-data",
		APIAddr:           "127.0.0.1:7080",
		LogLevel:          "info",
		LogFormat:         "text",
		BindAddr:          "0.0.0.0",
		QUICPort:          7443,
		GossipPort:        7946,
		SiteVoters:        3,
		ReapAfter:         72 * time.Hour,
		HeartbeatInterval: 5 * time.Minute,
		IdleTimeout:       transport.DefaultConfig().IdleTimeout,
		KeepAlive:         transport.DefaultConfig().KeepAlive,
		CertValidity:      90 * 24 * time.Hour,
		OTAPolicy:         agent.DefaultPolicy(),
		OTARetention:      DefaultOTARetention,
		ShutdownTimeout:   15 * time.Second,
		GossipProfile:     "lan",
		RegistryAddr:      DefaultRegistryAddr,
		CacheSize:         DefaultCacheSize,
		ClusterWorkers:    3,
		AuditMaxAge:       DefaultAuditMaxAge,
		AuditMaxEvents:    DefaultAuditMaxEvents,
		TunnelPorts:       clusters.DefaultTunnelPorts,
		ClusterGrace:      clusters.DefaultConfig().GracePeriod,
		ClusterResync:     clusters.DefaultConfig().Resync,
	}
}

// Validate reports every invalid field, naming its flag.
func (c Config) Validate() error {
	var errs []error
	if msgs := validation.IsDNS1123Subdomain(c.Name); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("--name %q: %s", c.Name, strings.Join(msgs, "; ")))
	}
	if msgs := validation.IsDNS1123Label(c.Site); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("--site %q: %s", c.Site, strings.Join(msgs, "; ")))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("--data-dir must not be empty"))
	}
	if _, port, err := net.SplitHostPort(c.APIAddr); err != nil || port == "" {
		errs = append(errs, fmt.Errorf("--api-addr %q must be host:port", c.APIAddr))
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("--log-level %q must be one of debug, info, warn, error", c.LogLevel))
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		errs = append(errs, fmt.Errorf("--log-format %q must be text or json", c.LogFormat))
	}
	if c.GossipProfile != "lan" && c.GossipProfile != "wan" {
		errs = append(errs, fmt.Errorf("--gossip-profile %q must be lan or wan", c.GossipProfile))
	}
	if net.ParseIP(c.BindAddr) == nil {
		errs = append(errs, fmt.Errorf("--bind-addr %q must be an IP address", c.BindAddr))
	}
	if c.AdvertiseAddr != "" && net.ParseIP(c.AdvertiseAddr) == nil {
		errs = append(errs, fmt.Errorf("--advertise-addr %q must be an IP address", c.AdvertiseAddr))
	}
	if c.QUICPort < 0 || c.QUICPort > 65535 {
		errs = append(errs, fmt.Errorf("--quic-port %d must be 0-65535", c.QUICPort))
	}
	if c.GossipPort < 0 || c.GossipPort > 65535 {
		errs = append(errs, fmt.Errorf("--gossip-port %d must be 0-65535", c.GossipPort))
	}
	if c.SiteVoters != 1 && c.SiteVoters != 3 && c.SiteVoters != 5 {
		errs = append(errs, fmt.Errorf("--site-voters %d must be 1, 3 or 5", c.SiteVoters))
	}
	if c.ReapAfter <= 0 {
		errs = append(errs, fmt.Errorf("--reap-after %s must be positive", c.ReapAfter))
	}
	if c.JoinAddr != "" {
		if _, port, err := net.SplitHostPort(c.JoinAddr); err != nil || port == "" {
			errs = append(errs, fmt.Errorf("--join %q must be host:port", c.JoinAddr))
		}
		if c.Hub {
			errs = append(errs, errors.New("--hub and --join contradict each other: --hub bootstraps a new hub, --join joins an existing mesh"))
		}
	}
	for k, v := range c.Labels {
		if msgs := validation.IsQualifiedName(k); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("--labels key %q: %s", k, strings.Join(msgs, "; ")))
		}
		if msgs := validation.IsValidLabelValue(v); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("--labels value %q of %s: %s", v, k, strings.Join(msgs, "; ")))
		}
	}
	if err := c.OTAPolicy.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.OTARetention < 0 {
		errs = append(errs, fmt.Errorf("--ota-retention %s must not be negative (0 keeps every task run)", c.OTARetention))
	}
	if c.CertValidity < 3*time.Second {
		errs = append(errs, fmt.Errorf("--cert-validity %s must be at least 3s", c.CertValidity))
	}
	if c.HeartbeatInterval <= 0 {
		errs = append(errs, fmt.Errorf("--heartbeat-interval %s must be positive", c.HeartbeatInterval))
	}
	if err := transport.ValidateTimings(c.IdleTimeout, c.KeepAlive); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, c.validateImages()...)
	errs = append(errs, c.validateClusters()...)
	if c.AuditMaxAge < 0 || c.AuditMaxEvents < 0 {
		errs = append(errs, fmt.Errorf("--audit-max-age %s and --audit-max-events %d must not be negative", c.AuditMaxAge, c.AuditMaxEvents))
	}
	return errors.Join(errs...)
}

// advertiseHost is the address other nodes reach this one at.
func (c Config) advertiseHost() string {
	if c.AdvertiseAddr != "" {
		return c.AdvertiseAddr
	}
	if ip := net.ParseIP(c.BindAddr); ip != nil && !ip.IsUnspecified() {
		return c.BindAddr
	}
	return firstHostAddress()
}

func (c Config) quicAdvertise() string {
	return net.JoinHostPort(c.advertiseHost(), strconv.Itoa(c.QUICPort))
}

func (c Config) gossipAdvertise() string {
	return net.JoinHostPort(c.advertiseHost(), strconv.Itoa(c.GossipPort))
}

// firstHostAddress is the first non-loopback IPv4 address of the host, else
// the first IPv6 one, else 127.0.0.1.
func firstHostAddress() string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return "127.0.0.1"
	}
	var v6 string
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok || ipn.IP.IsLoopback() || ipn.IP.IsLinkLocalUnicast() {
			continue
		}
		if ipn.IP.To4() != nil {
			return ipn.IP.String()
		}
		if v6 == "" {
			v6 = ipn.IP.String()
		}
	}
	if v6 != "" {
		return v6
	}
	return "127.0.0.1"
}

// gossipConfig is the gossip settings of the chosen profile, tuned.
// transportConfig is the QUIC endpoint's configuration that a node and an
// agent share: addresses, identity, timings and the stateless reset key.
func (c Config) transportConfig(id *identity, logger *slog.Logger) (transport.Config, error) {
	tc := transport.DefaultConfig()
	tc.BindAddr = net.JoinHostPort(c.BindAddr, fmt.Sprint(c.QUICPort))
	if c.QUICPort != 0 {
		// With port 0 (tests) the transport advertises the bound port.
		tc.AdvertiseAddr = c.quicAdvertise()
	}
	tc.GetCertificate = id.certificate
	tc.CAs = id.caPool()
	tc.IdleTimeout, tc.KeepAlive = c.IdleTimeout, c.KeepAlive
	// A site leader's connections to its members (DialSite) ping every 2
	// minutes, not every --keep-alive: nothing between them needs the
	// packets, and a member that restarts resets its connections at once
	// (StatelessResetKey below); longer settings are kept.
	tc.SiteIdleTimeout, tc.SiteKeepAlive = max(c.IdleTimeout, siteIdleTimeout), max(c.KeepAlive, siteKeepAlive)
	tc.Logger = logger
	var err error
	tc.StatelessResetKey, err = loadResetKey(c.DataDir)
	return tc, err
}

// siteIdleTimeout and siteKeepAlive are the least idle timeout and
// keep-alive period of a site leader's connections to its members.
const (
	siteIdleTimeout = 5 * time.Minute
	siteKeepAlive   = 2 * time.Minute
)

func (c Config) gossipConfig() gossip.Config {
	gc := gossip.DefaultConfig()
	if c.GossipProfile == "wan" {
		gc = gossip.WANConfig()
	}
	if c.TuneGossip != nil {
		c.TuneGossip(&gc)
	}
	return gc
}
