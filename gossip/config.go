package gossip

import (
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"time"
	"unicode"

	"github.com/hashicorp/memberlist"
)

// KeySize is the length of a site's gossip key: AES-256.
const KeySize = 32

// Config configures a Gossip. Start from DefaultConfig; the timings come
// from memberlist.DefaultLANConfig, and tests shorten them.
type Config struct {
	// Meta is what this node gossips about itself. Name and Site are
	// required.
	Meta Meta
	// BindAddr is the IP the gossip port binds (default 0.0.0.0).
	BindAddr string
	// BindPort is the gossip port, UDP and TCP (default 7946; 0 picks a
	// free one, which Addr reports once Ready is closed).
	BindPort int
	// AdvertiseAddr is the IP other members reach this one at. Empty lets
	// memberlist choose: BindAddr when specific, else a private address of
	// the host.
	AdvertiseAddr string
	// AdvertisePort is the port other members reach this one at; 0 means
	// the bound port.
	AdvertisePort int
	// Key is the site's gossip key, KeySize bytes. Required: every packet
	// and stream is encrypted and authenticated with it, and nothing
	// unencrypted is accepted.
	Key []byte
	// Join lists seed members, host:port. Run retries them until one
	// answers; an empty list starts a new pool (the first node of a site).
	Join []string

	// ProbeInterval, ProbeTimeout, SuspicionMult, GossipInterval,
	// PushPullInterval and TCPTimeout are memberlist's settings of the
	// same names. TCPTimeout also bounds each attempt to reach a seed.
	ProbeInterval    time.Duration
	ProbeTimeout     time.Duration
	SuspicionMult    int
	GossipInterval   time.Duration
	PushPullInterval time.Duration
	TCPTimeout       time.Duration

	// JoinBackoff is the wait after the first failed round of joins; it
	// doubles after each failed round up to JoinBackoffMax, with jitter.
	JoinBackoff    time.Duration
	JoinBackoffMax time.Duration
	// BroadcastTimeout bounds how long UpdateMeta, and the leave on
	// shutdown, wait for their broadcast to go out.
	BroadcastTimeout time.Duration
	// DeadRetention is how long Dead and Left members stay in Members
	// (default 72h).
	DeadRetention time.Duration
	// EventBuffer is the capacity of the Events channel (default 256).
	EventBuffer int

	// Logger receives the package's logs and memberlist's. Nil discards.
	Logger *slog.Logger
}

// DefaultConfig returns the production settings, with Meta.OS and Meta.Arch
// set to this binary's platform.
func DefaultConfig() Config {
	lan := memberlist.DefaultLANConfig()
	return Config{
		Meta:             Meta{OS: runtime.GOOS, Arch: runtime.GOARCH},
		BindAddr:         lan.BindAddr,
		BindPort:         lan.BindPort,
		ProbeInterval:    lan.ProbeInterval,
		ProbeTimeout:     lan.ProbeTimeout,
		SuspicionMult:    lan.SuspicionMult,
		GossipInterval:   lan.GossipInterval,
		PushPullInterval: lan.PushPullInterval,
		TCPTimeout:       lan.TCPTimeout,
		JoinBackoff:      time.Second,
		JoinBackoffMax:   30 * time.Second,
		BroadcastTimeout: 5 * time.Second,
		DeadRetention:    72 * time.Hour,
		EventBuffer:      256,
	}
}

// WANConfig is DefaultConfig with memberlist's WAN timings: slower probes
// with longer timeouts, for sites whose hosts answer late (slow links, busy
// or very many hosts).
func WANConfig() Config {
	c := DefaultConfig()
	wan := memberlist.DefaultWANConfig()
	c.ProbeInterval, c.ProbeTimeout = wan.ProbeInterval, wan.ProbeTimeout
	c.SuspicionMult, c.GossipInterval = wan.SuspicionMult, wan.GossipInterval
	c.PushPullInterval, c.TCPTimeout = wan.PushPullInterval, wan.TCPTimeout
	return c
}

// Validate reports every invalid field, naming its flag where it has one.
func (c Config) Validate() error {
	var errs []error
	switch {
	case c.Meta.Name == "":
		errs = append(errs, errors.New("--name must not be empty"))
	case strings.IndexFunc(c.Meta.Name, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }) >= 0:
		errs = append(errs, fmt.Errorf("--name %q must not contain spaces or control characters", c.Meta.Name))
	}
	switch {
	case c.Meta.Site == "":
		errs = append(errs, errors.New("--site must not be empty"))
	case len(poolLabel(c.Meta.Site)) > memberlist.LabelMaxSize:
		errs = append(errs, fmt.Errorf("--site %q is too long for a gossip label", c.Meta.Site))
	}
	if _, err := c.Meta.Encode(); err != nil {
		errs = append(errs, fmt.Errorf("--labels: %w", err))
	}
	if net.ParseIP(c.BindAddr) == nil {
		errs = append(errs, fmt.Errorf("--bind-addr %q must be an IP address", c.BindAddr))
	}
	if c.BindPort < 0 || c.BindPort > 65535 {
		errs = append(errs, fmt.Errorf("--gossip-port %d must be 0-65535", c.BindPort))
	}
	if c.AdvertiseAddr != "" && net.ParseIP(c.AdvertiseAddr) == nil {
		errs = append(errs, fmt.Errorf("--advertise-addr %q must be an IP address", c.AdvertiseAddr))
	}
	if c.AdvertisePort < 0 || c.AdvertisePort > 65535 {
		errs = append(errs, fmt.Errorf("gossip AdvertisePort %d must be 0-65535", c.AdvertisePort))
	}
	if len(c.Key) != KeySize {
		errs = append(errs, fmt.Errorf("gossip key of site %q is %d bytes, must be %d (AES-256)", c.Meta.Site, len(c.Key), KeySize))
	}
	for _, s := range c.Join {
		if host, port, err := net.SplitHostPort(s); err != nil || host == "" || port == "" {
			errs = append(errs, fmt.Errorf("gossip seed %q must be host:port", s))
		}
	}
	positive := []struct {
		name string
		d    time.Duration
	}{
		{"ProbeInterval", c.ProbeInterval},
		{"ProbeTimeout", c.ProbeTimeout},
		{"GossipInterval", c.GossipInterval},
		{"PushPullInterval", c.PushPullInterval},
		{"TCPTimeout", c.TCPTimeout},
		{"JoinBackoff", c.JoinBackoff},
		{"JoinBackoffMax", c.JoinBackoffMax},
		{"BroadcastTimeout", c.BroadcastTimeout},
		{"DeadRetention", c.DeadRetention},
	}
	for _, p := range positive {
		if p.d <= 0 {
			errs = append(errs, fmt.Errorf("gossip %s %s must be positive (start from DefaultConfig)", p.name, p.d))
		}
	}
	if c.ProbeTimeout > c.ProbeInterval {
		errs = append(errs, fmt.Errorf("gossip ProbeTimeout %s must not exceed ProbeInterval %s", c.ProbeTimeout, c.ProbeInterval))
	}
	if c.SuspicionMult < 1 {
		errs = append(errs, fmt.Errorf("gossip SuspicionMult %d must be at least 1", c.SuspicionMult))
	}
	if c.JoinBackoffMax < c.JoinBackoff {
		errs = append(errs, fmt.Errorf("gossip JoinBackoffMax %s must not be below JoinBackoff %s", c.JoinBackoffMax, c.JoinBackoff))
	}
	if c.EventBuffer < 1 {
		errs = append(errs, fmt.Errorf("gossip EventBuffer %d must be at least 1", c.EventBuffer))
	}
	return errors.Join(errs...)
}

// memberlistConfig translates c, for a node whose callbacks are d and whose
// logs go to logOut.
func (c Config) memberlistConfig(d *delegate, keyring *memberlist.Keyring, logOut *log.Logger) *memberlist.Config {
	mc := memberlist.DefaultLANConfig()
	mc.Name = c.Meta.Name
	mc.BindAddr = c.BindAddr
	mc.BindPort = c.BindPort
	mc.AdvertiseAddr = c.AdvertiseAddr
	mc.AdvertisePort = c.AdvertisePort
	if mc.AdvertisePort == 0 {
		// memberlist fills it in itself when BindPort is 0.
		mc.AdvertisePort = c.BindPort
	}
	mc.ProbeInterval = c.ProbeInterval
	mc.ProbeTimeout = c.ProbeTimeout
	mc.SuspicionMult = c.SuspicionMult
	mc.GossipInterval = c.GossipInterval
	mc.PushPullInterval = c.PushPullInterval
	mc.TCPTimeout = c.TCPTimeout
	mc.Label = poolLabel(c.Meta.Site)
	mc.Keyring = keyring
	mc.GossipVerifyIncoming = true
	mc.GossipVerifyOutgoing = true
	// Compression saves little on packets this small and allocates an LZW
	// table per message: at thousands of members, most of gossip's CPU
	// and garbage (e2e/otascale). Members decompress what others send
	// either way.
	mc.EnableCompression = false
	mc.Delegate = d
	mc.Events = d
	mc.Ping = d
	mc.Alive = d
	mc.Conflict = d
	mc.Logger = logOut
	return mc
}

// poolLabel is the memberlist label of a site's pool. memberlist prefixes
// every packet and stream with it and, as the key is set, authenticates it
// as GCM additional data, so pools of different sites reject each other's
// traffic even if they shared a key.
func poolLabel(site string) string {
	return "outpost/gossip/" + site
}
