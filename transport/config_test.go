package transport

import (
	"crypto/x509"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	valid := DefaultConfig()
	valid.CAs = x509.NewCertPool()
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr string // empty: valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"loopback any port", func(c *Config) { c.BindAddr = "127.0.0.1:0" }, ""},
		{"ipv6", func(c *Config) { c.BindAddr = "[::]:7443"; c.AdvertiseAddr = "[2001:db8::1]:7443" }, ""},
		{"bind without port", func(c *Config) { c.BindAddr = "x" }, `--bind-addr "x" must be host:port`},
		{"bind bad port", func(c *Config) { c.BindAddr = "0.0.0.0:http" }, `--bind-addr "0.0.0.0:http" must be host:port`},
		{"advertise wildcard", func(c *Config) { c.AdvertiseAddr = "0.0.0.0:7443" }, `--advertise-addr "0.0.0.0:7443" must name a host`},
		{"advertise port zero", func(c *Config) { c.AdvertiseAddr = "hub.example:0" }, "non-zero port"},
		{"advertise no port", func(c *Config) { c.AdvertiseAddr = "hub.example" }, `--advertise-addr "hub.example" must be host:port`},
		{"no CA", func(c *Config) { c.CAs = nil }, "CAs is required"},
		{"streams", func(c *Config) { c.MaxIncomingStreams = 0 }, "--max-incoming-streams"},
		{"idle", func(c *Config) { c.IdleTimeout = 0 }, "--idle-timeout"},
		{"keepalive too long", func(c *Config) { c.KeepAlive = 2 * time.Minute }, "--keep-alive 2m0s must be positive and shorter than --idle-timeout 1m0s"},
		{"site timings", func(c *Config) { c.SiteIdleTimeout, c.SiteKeepAlive = 5*time.Minute, 2*time.Minute }, ""},
		{"site keepalive too long", func(c *Config) { c.SiteKeepAlive = 2 * time.Minute }, "the site keep-alive 2m0s must be positive and shorter than the site idle timeout 1m0s"},
		{"site idle negative", func(c *Config) { c.SiteIdleTimeout = -time.Second }, "the site idle timeout -1s"},
		{"rate", func(c *Config) { c.HandshakesPerSecondPerSource = 0 }, "--handshakes-per-second-per-source"},
		{"burst", func(c *Config) { c.HandshakeBurstPerSource = 0 }, "--handshake-burst-per-source"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := valid
			tc.mutate(&c)
			err := c.Validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("Validate() = %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	t.Parallel()
	if _, err := New(Config{BindAddr: "nope"}); err == nil {
		t.Fatal("New accepted an invalid config")
	}
}

func TestAdvertiseAddr(t *testing.T) {
	t.Parallel()
	ifaces := func(addrs ...string) func() ([]net.Addr, error) {
		return func() ([]net.Addr, error) {
			var out []net.Addr
			for _, a := range addrs {
				ip, ipn, err := net.ParseCIDR(a)
				if err != nil {
					return nil, err
				}
				ipn.IP = ip
				out = append(out, ipn)
			}
			return out, nil
		}
	}
	anyV4 := &net.UDPAddr{IP: net.IPv4zero, Port: 7443}
	anyV6 := &net.UDPAddr{IP: net.IPv6unspecified, Port: 7443}
	tests := []struct {
		name       string
		configured string
		bound      *net.UDPAddr
		ifaces     func() ([]net.Addr, error)
		want       string
	}{
		{"configured wins", "hub.example:9000", anyV4, ifaces("10.0.0.5/24"), "hub.example:9000"},
		{"specific bind", "", &net.UDPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 7443}, ifaces("10.0.0.5/24"), "192.0.2.7:7443"},
		{"first non-loopback v4", "", anyV4, ifaces("127.0.0.1/8", "fe80::1/64", "2001:db8::5/64", "10.0.0.5/24", "10.0.0.6/24"), "10.0.0.5:7443"},
		{"v6 for a v6 socket", "", anyV6, ifaces("127.0.0.1/8", "2001:db8::5/64"), "[2001:db8::5]:7443"},
		{"no v6 for a v4 socket", "", anyV4, ifaces("127.0.0.1/8", "2001:db8::5/64"), "127.0.0.1:7443"},
		{"interfaces fail", "", anyV4, func() ([]net.Addr, error) { return nil, errors.New("boom") }, "127.0.0.1:7443"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := advertiseAddr(tc.configured, tc.bound, tc.ifaces); got != tc.want {
				t.Errorf("advertiseAddr() = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestEndpointAddresses(t *testing.T) {
	t.Parallel()
	ca := newCA(t)
	e, err := New(testConfig(ca, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if port := e.Addr().(*net.UDPAddr).Port; port == 0 {
		t.Error("Addr() has no port after New")
	}
	if e.AdvertiseAddr() != e.Addr().String() {
		t.Errorf("AdvertiseAddr() = %q, want the specific bind address %q", e.AdvertiseAddr(), e.Addr())
	}
}

func TestSourceLimiter(t *testing.T) {
	t.Parallel()
	l := newSourceLimiter(1, 2)
	now := time.Unix(1000, 0)
	a := &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 1}
	aOtherPort := &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1).To16(), Port: 2}
	b := &net.UDPAddr{IP: net.IPv4(192, 0, 2, 2), Port: 1}
	if !l.allow(a, now) || !l.allow(aOtherPort, now) {
		t.Fatal("burst of 2 refused")
	}
	if l.allow(a, now) {
		t.Fatal("third attempt within the same instant allowed")
	}
	if !l.allow(b, now) {
		t.Fatal("another source was refused")
	}
	if !l.allow(a, now.Add(time.Second)) {
		t.Fatal("no token after a second at 1/s")
	}
	for i := range maxTrackedSources + 10 {
		l.allow(&net.UDPAddr{IP: net.IPv4(10, byte(i>>16), byte(i>>8), byte(i)), Port: 1}, now.Add(time.Hour))
	}
	if n := len(l.sources); n > maxTrackedSources {
		t.Errorf("limiter tracks %d sources, want at most %d", n, maxTrackedSources)
	}
}
