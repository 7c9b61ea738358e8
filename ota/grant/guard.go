package grant

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/outpost-mesh/outpost/internal/atomicfile"
)

// DefaultGuardSize bounds the grants a Guard remembers.
const DefaultGuardSize = 1 << 16

// Guard remembers the grants an agent accepted until they expire, in
// memory and in an append-only file (one fsynced line a grant, compacted
// when opened), so a restart does not forget them. Past its size it forgets
// the grant that expires first.
type Guard struct {
	mu   sync.Mutex
	path string
	f    *os.File
	seen map[string]time.Time
	max  int
}

// OpenGuard loads the grants in path that have not expired at now and
// rewrites the file with only those.
func OpenGuard(path string, size int, now time.Time) (*Guard, error) {
	if size <= 0 {
		size = DefaultGuardSize
	}
	g := &Guard{path: path, seen: map[string]time.Time{}, max: size}
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read grant log: %w", err)
	}
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		id, exp, ok := strings.Cut(sc.Text(), " ")
		ns, err := strconv.ParseInt(exp, 10, 64)
		if !ok || err != nil {
			continue // a torn last line
		}
		if t := time.Unix(0, ns); now.Before(t) {
			g.seen[id] = t
		}
	}
	var sb strings.Builder
	for id, t := range g.seen {
		fmt.Fprintf(&sb, "%s %d\n", id, t.UnixNano())
	}
	if err := atomicfile.Write(path, []byte(sb.String()), 0o600); err != nil {
		return nil, fmt.Errorf("compact grant log: %w", err)
	}
	if g.f, err = os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0o600); err != nil {
		return nil, fmt.Errorf("open grant log: %w", err)
	}
	return g, nil
}

// Admit records gr as accepted, durably, and reports whether it had been
// accepted before.
func (g *Guard) Admit(gr *Grant) (seen bool, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.seen[gr.ID]; ok {
		return true, nil
	}
	if len(g.seen) >= g.max {
		g.evict()
	}
	if _, err := fmt.Fprintf(g.f, "%s %d\n", gr.ID, gr.Expires.UnixNano()); err != nil {
		return false, fmt.Errorf("record grant: %w", err)
	}
	if err := g.f.Sync(); err != nil {
		return false, fmt.Errorf("record grant: %w", err)
	}
	g.seen[gr.ID] = gr.Expires
	return false, nil
}

// evict forgets the grant that expires first.
func (g *Guard) evict() {
	var first string
	var at time.Time
	for id, t := range g.seen {
		if first == "" || t.Before(at) {
			first, at = id, t
		}
	}
	delete(g.seen, first)
}

// Len is how many grants the guard remembers.
func (g *Guard) Len() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.seen)
}

// Close closes the file.
func (g *Guard) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.f.Close()
}
