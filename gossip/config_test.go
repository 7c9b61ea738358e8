package gossip

import (
	"strings"
	"testing"
	"time"
)

func TestDefaultConfig(t *testing.T) {
	t.Parallel()
	c := DefaultConfig()
	if c.BindAddr != "0.0.0.0" || c.BindPort != 7946 || c.ProbeInterval != time.Second ||
		c.DeadRetention != 72*time.Hour || c.Meta.OS == "" || c.Meta.Arch == "" {
		t.Errorf("DefaultConfig() = %+v", c)
	}
	c.Meta.Name, c.Meta.Site, c.Key = "n", "s", make([]byte, KeySize)
	if err := c.Validate(); err != nil {
		t.Errorf("DefaultConfig() with name, site and key: %v", err)
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		modify func(*Config)
		want   string
	}{
		{"no name", func(c *Config) { c.Meta.Name = "" }, "--name must not be empty"},
		{"name with space", func(c *Config) { c.Meta.Name = "a b" }, "--name \"a b\""},
		{"no site", func(c *Config) { c.Meta.Site = "" }, "--site must not be empty"},
		{"long site", func(c *Config) { c.Meta.Site = strings.Repeat("s", 250) }, "--site"},
		{"bind addr", func(c *Config) { c.BindAddr = "localhost" }, "--bind-addr \"localhost\" must be an IP address"},
		{"port", func(c *Config) { c.BindPort = 70000 }, "--gossip-port 70000 must be 0-65535"},
		{"advertise addr", func(c *Config) { c.AdvertiseAddr = "host.example" }, "--advertise-addr"},
		{"advertise port", func(c *Config) { c.AdvertisePort = -1 }, "AdvertisePort -1"},
		{"no key", func(c *Config) { c.Key = nil }, "gossip key of site \"s\" is 0 bytes, must be 32"},
		{"short key", func(c *Config) { c.Key = make([]byte, 16) }, "is 16 bytes, must be 32"},
		{"seed", func(c *Config) { c.Join = []string{"10.0.0.1"} }, "gossip seed \"10.0.0.1\" must be host:port"},
		{"probe interval", func(c *Config) { c.ProbeInterval = 0 }, "ProbeInterval 0s must be positive"},
		{"probe timeout", func(c *Config) { c.ProbeTimeout = 2 * time.Second }, "ProbeTimeout 2s must not exceed"},
		{"suspicion", func(c *Config) { c.SuspicionMult = 0 }, "SuspicionMult 0"},
		{"retention", func(c *Config) { c.DeadRetention = -time.Hour }, "DeadRetention -1h0m0s must be positive"},
		{"backoff", func(c *Config) { c.JoinBackoffMax = time.Millisecond }, "JoinBackoffMax 1ms must not be below"},
		{"buffer", func(c *Config) { c.EventBuffer = 0 }, "EventBuffer 0"},
		{"labels", func(c *Config) { c.Meta.Labels = map[string]string{"k": strings.Repeat("v", 600)} }, "--labels: encode meta"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := DefaultConfig()
			c.Meta.Name, c.Meta.Site, c.Key = "n", "s", make([]byte, KeySize)
			tc.modify(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate() = %v, want it to say %q", err, tc.want)
			}
			if _, err := New(c); err == nil {
				t.Error("New accepted it")
			}
		})
	}
}
