package node

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
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
	// LogLevel is debug, info, warn or error (--log-level).
	LogLevel string
	// LogFormat is text or json (--log-format).
	LogFormat string
	// HeartbeatInterval is how often the node refreshes its Node status.
	HeartbeatInterval time.Duration
	// ShutdownTimeout bounds a graceful stop.
	ShutdownTimeout time.Duration
}

// DefaultConfig returns the embedded default: a one-node hub in
// ./outpost-data with its API on 127.0.0.1:7080.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		Name:              strings.ToLower(host),
		Site:              "hub",
		DataDir:           "outpost-data",
		APIAddr:           "127.0.0.1:7080",
		LogLevel:          "info",
		LogFormat:         "text",
		HeartbeatInterval: 10 * time.Second,
		ShutdownTimeout:   15 * time.Second,
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
	if c.HeartbeatInterval <= 0 {
		errs = append(errs, fmt.Errorf("--heartbeat-interval %s must be positive", c.HeartbeatInterval))
	}
	return errors.Join(errs...)
}
