package transport

import (
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// maxTrackedSources bounds the limiter table; past it, sources idle long
// enough to have refilled their bucket are dropped.
const maxTrackedSources = 4096

// sourceLimiter is a token bucket per source IP for new connections.
type sourceLimiter struct {
	limit rate.Limit
	burst int
	// idle is how long a bucket takes to refill completely: a source
	// unseen that long is indistinguishable from a new one.
	idle time.Duration

	mu      sync.Mutex
	sources map[netip.Addr]*sourceBucket
}

type sourceBucket struct {
	lim  *rate.Limiter
	seen time.Time
}

func newSourceLimiter(perSecond float64, burst int) *sourceLimiter {
	return &sourceLimiter{
		limit:   rate.Limit(perSecond),
		burst:   burst,
		idle:    time.Duration(float64(burst) / perSecond * float64(time.Second)),
		sources: make(map[netip.Addr]*sourceBucket),
	}
}

// allow takes a token for addr's IP, reporting false when it has none.
func (l *sourceLimiter) allow(addr net.Addr, now time.Time) bool {
	ip := sourceIP(addr)
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.sources[ip]
	if !ok {
		if len(l.sources) >= maxTrackedSources {
			l.sweep(now)
		}
		b = &sourceBucket{lim: rate.NewLimiter(l.limit, l.burst)}
		l.sources[ip] = b
	}
	b.seen = now
	return b.lim.AllowN(now, 1)
}

// sweep drops buckets that have refilled. If every bucket is busy (a flood
// from many sources), the table is cleared rather than grown: a flood
// resets budgets instead of exhausting memory.
func (l *sourceLimiter) sweep(now time.Time) {
	for ip, b := range l.sources {
		if now.Sub(b.seen) > l.idle {
			delete(l.sources, ip)
		}
	}
	if len(l.sources) >= maxTrackedSources {
		clear(l.sources)
	}
}

// sourceIP is the IP of a UDP address, IPv4-mapped addresses unmapped.
func sourceIP(addr net.Addr) netip.Addr {
	if u, ok := addr.(*net.UDPAddr); ok {
		if ip, ok := netip.AddrFromSlice(u.IP); ok {
			return ip.Unmap()
		}
	}
	if ap, err := netip.ParseAddrPort(addr.String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}
