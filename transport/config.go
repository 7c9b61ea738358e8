package transport

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"
)

// Config configures an Endpoint. Start from DefaultConfig.
type Config struct {
	// BindAddr is the UDP host:port to listen on, e.g. 0.0.0.0:7443, or
	// 127.0.0.1:0 in tests.
	BindAddr string
	// AdvertiseAddr is the host:port other nodes dial. Empty means the bind
	// address when its host is specific, else the first non-loopback
	// interface address, with the bound port.
	AdvertiseAddr string
	// GetCertificate returns this node's certificate for every handshake,
	// so a renewed certificate needs no restart. Nil is allowed for a
	// join-only client: it accepts nothing and dials without a client
	// certificate (only KindJoin streams are then accepted by peers).
	GetCertificate func() (*tls.Certificate, error)
	// CAs holds the mesh CA: peers' certificates must verify against it.
	CAs *x509.CertPool
	// Authorize is called for every incoming stream after the peer's
	// certificate has been verified; an error refuses the stream. A
	// connection without a certificate reaches it only with one of
	// AnonymousKinds and an empty Peer.Name. Nil allows every stream.
	Authorize func(p Peer, k Kind) error
	// AnonymousKinds are the stream kinds a connection without a client
	// certificate may open: a joining node's KindJoin, and on hub members
	// an edge cluster agent's KindTunnel control stream, whose handler
	// authenticates it by other means (a cluster token). Nil means
	// KindJoin only.
	AnonymousKinds []Kind
	// Revoked reports whether a peer's certificate is revoked. It is
	// checked at every handshake (both directions) and on every incoming
	// stream. Nil means nothing is revoked.
	Revoked func(p Peer) bool
	// MaxIncomingStreams is how many streams one peer connection may have
	// open towards this node at once.
	MaxIncomingStreams int64
	// IdleTimeout closes a connection that has received nothing for this
	// long.
	IdleTimeout time.Duration
	// KeepAlive is how often an idle connection this node dialed sends a
	// ping; it must be shorter than IdleTimeout. Only the dialer pings (it
	// is the side behind a NAT, if any), and its pings keep both ends'
	// idle timers from firing: a leader's hundred connections cost half
	// the packets they would if both ends pinged.
	KeepAlive time.Duration
	// SiteIdleTimeout and SiteKeepAlive are IdleTimeout and KeepAlive for
	// the connections DialSite makes: a site leader's to its members, on
	// the site's own network, where no NAT mapping needs a packet every
	// half minute (a 10,000-node fleet's idle datagrams went from 1,474 to
	// 890 a second when its leaders' pings went from 25 s to 2 minutes).
	// The listener accepts up to the longer of the two idle timeouts; a
	// connection's is the shorter of both ends', so one dialed with Dial
	// keeps IdleTimeout. Zero means IdleTimeout and KeepAlive.
	SiteIdleTimeout time.Duration
	SiteKeepAlive   time.Duration
	// HandshakesPerSecondPerSource and HandshakeBurstPerSource bound how
	// fast one source IP may start connections; excess attempts are
	// refused before any cryptography is done.
	HandshakesPerSecondPerSource float64
	HandshakeBurstPerSource      int
	// MaxStreamReceiveWindow and MaxConnectionReceiveWindow cap QUIC flow
	// control windows (bytes). Zero keeps quic-go's defaults (6 MiB and
	// 15 MiB); DESIGN.md has the measurements.
	MaxStreamReceiveWindow     uint64
	MaxConnectionReceiveWindow uint64
	// InitialConnectionReceiveWindow is the connection window a peer gets
	// from the start (zero: quic-go's 512 KiB, grown by auto-tuning while
	// the application reads fast). Data that sits unread in a stalled
	// stream holds part of it, and no reads means no growth: a hub sets it
	// high so that stalled tunnel streams do not stop the others.
	InitialConnectionReceiveWindow uint64
	// StatelessResetKey, when set, lets this node tell peers that it lost
	// a connection's state (after a restart) so they redial at once
	// instead of waiting for the idle timeout. It must be secret and the
	// same across restarts of this node; nil disables stateless resets.
	StatelessResetKey *[32]byte
	// Logger receives the endpoint's logs. Nil discards.
	Logger *slog.Logger
}

// DefaultConfig returns the production settings, with BindAddr
// 0.0.0.0:7443.
func DefaultConfig() Config {
	return Config{
		BindAddr:                     "0.0.0.0:7443",
		MaxIncomingStreams:           256,
		IdleTimeout:                  time.Minute,
		KeepAlive:                    25 * time.Second,
		HandshakesPerSecondPerSource: 20,
		HandshakeBurstPerSource:      40,
	}
}

// Validate reports the first invalid field, named as its flag is.
func (c Config) Validate() error {
	if _, _, err := splitHostPort(c.BindAddr); err != nil {
		return fmt.Errorf("--bind-addr %q must be host:port (%v)", c.BindAddr, err)
	}
	if c.AdvertiseAddr != "" {
		host, port, err := splitHostPort(c.AdvertiseAddr)
		switch {
		case err != nil:
			return fmt.Errorf("--advertise-addr %q must be host:port (%v)", c.AdvertiseAddr, err)
		case host == "" || isUnspecified(host):
			return fmt.Errorf("--advertise-addr %q must name a host other nodes can dial", c.AdvertiseAddr)
		case port == 0:
			return fmt.Errorf("--advertise-addr %q must have a non-zero port", c.AdvertiseAddr)
		}
	}
	switch {
	case c.CAs == nil:
		return fmt.Errorf("transport: CAs is required (the mesh CA pool that verifies peers)")
	case c.MaxIncomingStreams <= 0:
		return fmt.Errorf("--max-incoming-streams %d must be positive", c.MaxIncomingStreams)
	case ValidateTimings(c.IdleTimeout, c.KeepAlive) != nil:
		return ValidateTimings(c.IdleTimeout, c.KeepAlive)
	case c.SiteIdleTimeout < 0 || c.SiteKeepAlive < 0 || validSiteTimings(c.siteTimings()) != nil:
		return validSiteTimings(c.siteTimings())
	case c.HandshakesPerSecondPerSource <= 0:
		return fmt.Errorf("--handshakes-per-second-per-source %g must be positive", c.HandshakesPerSecondPerSource)
	case c.HandshakeBurstPerSource < 1:
		return fmt.Errorf("--handshake-burst-per-source %d must be at least 1", c.HandshakeBurstPerSource)
	}
	return nil
}

func validSiteTimings(idle, keepAlive time.Duration) error {
	if idle <= 0 || keepAlive <= 0 || keepAlive >= idle {
		return fmt.Errorf("the site keep-alive %s must be positive and shorter than the site idle timeout %s", keepAlive, idle)
	}
	return nil
}

// siteTimings returns the idle timeout and keep-alive of site connections.
func (c Config) siteTimings() (idle, keepAlive time.Duration) {
	idle, keepAlive = c.SiteIdleTimeout, c.SiteKeepAlive
	if idle == 0 {
		idle = c.IdleTimeout
	}
	if keepAlive == 0 {
		keepAlive = c.KeepAlive
	}
	return idle, keepAlive
}

// splitHostPort splits a host:port whose port is a number from 0 to 65535.
func splitHostPort(addr string) (host string, port int, err error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		return "", 0, fmt.Errorf("port %q is not a number from 0 to 65535", p)
	}
	return host, int(n), nil
}

// isUnspecified reports whether host is empty or a wildcard address.
func isUnspecified(host string) bool {
	if host == "" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsUnspecified()
}

// advertiseAddr picks the address other nodes dial: cfg.AdvertiseAddr, else
// the bound address when specific, else the first non-loopback interface
// address (IPv4 first) with the bound port, else loopback.
func advertiseAddr(configured string, bound *net.UDPAddr, ifaceAddrs func() ([]net.Addr, error)) string {
	if configured != "" {
		return configured
	}
	port := strconv.Itoa(bound.Port)
	if !bound.IP.IsUnspecified() {
		return net.JoinHostPort(bound.IP.String(), port)
	}
	var v6 net.IP
	if addrs, err := ifaceAddrs(); err == nil {
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok || ipn.IP.IsLoopback() || !ipn.IP.IsGlobalUnicast() {
				continue
			}
			if ipn.IP.To4() != nil {
				return net.JoinHostPort(ipn.IP.String(), port)
			}
			if v6 == nil {
				v6 = ipn.IP
			}
		}
	}
	if v6 != nil && bound.IP.To4() == nil { // an IPv4 socket cannot be reached on v6
		return net.JoinHostPort(v6.String(), port)
	}
	return net.JoinHostPort("127.0.0.1", port)
}

// ValidateTimings checks an idle timeout and a keep-alive period together,
// naming their flags.
func ValidateTimings(idle, keepAlive time.Duration) error {
	switch {
	case idle <= 0:
		return fmt.Errorf("--idle-timeout %s must be positive", idle)
	case keepAlive <= 0 || keepAlive >= idle:
		return fmt.Errorf("--keep-alive %s must be positive and shorter than --idle-timeout %s", keepAlive, idle)
	}
	return nil
}
