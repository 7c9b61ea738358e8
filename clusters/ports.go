package clusters

import (
	"fmt"
	"strconv"
	"strings"
)

// DefaultTunnelPorts is the default of --tunnel-ports.
const DefaultTunnelPorts = "17000-17999"

// PortRange is an inclusive range of TCP ports (--tunnel-ports).
type PortRange struct {
	First, Last int
}

// ParsePortRange parses "FIRST-LAST" (or one port), naming the flag in
// its errors.
func ParsePortRange(s string) (PortRange, error) {
	first, last, ok := strings.Cut(s, "-")
	if !ok {
		last = first
	}
	a, errA := strconv.Atoi(strings.TrimSpace(first))
	b, errB := strconv.Atoi(strings.TrimSpace(last))
	switch {
	case errA != nil || errB != nil:
		return PortRange{}, fmt.Errorf("--tunnel-ports %q must be FIRST-LAST, e.g. %s", s, DefaultTunnelPorts)
	case a < 1 || b > 65535 || a > b:
		return PortRange{}, fmt.Errorf("--tunnel-ports %q must be a range within 1-65535, first not above last", s)
	case b-a < 1:
		return PortRange{}, fmt.Errorf("--tunnel-ports %q must hold at least 2 ports (each proxy cluster takes 2)", s)
	}
	return PortRange{First: a, Last: b}, nil
}

// String formats r as FIRST-LAST.
func (r PortRange) String() string { return fmt.Sprintf("%d-%d", r.First, r.Last) }

// allocate returns the two lowest ports of r not in used, or
// ErrPortsExhausted.
func (r PortRange) allocate(used map[int]bool) (Ports, error) {
	var got []int
	for p := r.First; p <= r.Last && len(got) < 2; p++ {
		if !used[p] {
			got = append(got, p)
		}
	}
	if len(got) < 2 {
		return Ports{}, fmt.Errorf("%w (%s, %d ports in use)", ErrPortsExhausted, r, len(used))
	}
	return Ports{KubernetesAPI: got[0], PlatformAPI: got[1]}, nil
}
