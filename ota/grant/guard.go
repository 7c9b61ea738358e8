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
// memory and in an append-only file (one line a grant, compacted when
// opened), so a restart does not forget them. Past its size it forgets the
// grant that expires first.
//
// Admit does not wait for the file: accepted grants are appended in the
// background, many at once, and the file is open only while that happens
// (an agent holds no descriptor for it between tasks). The appends are
// not fsynced (Sync and Close do that): a grant is in the file moments
// after its run starts, and stays there when the agent crashes; a crash
// of the whole host may lose the last ones. That is enough, because the
// guard is not what keeps a step from running twice: the run's journal
// is, and it is written durably before the first step starts. A grant
// replayed after a crash that lost its line either finds its run's
// journal (and resolves to that run) or finds nothing, in which case the
// run never started a step and runs once. Whoever removes run journals
// must Sync the guard first (the node's pruning does, node/otaprune.go).
type Guard struct {
	mu      sync.Mutex
	path    string
	seen    map[string]time.Time
	max     int
	pending []byte        // lines not yet in the file
	writing chan struct{} // closed when the running flush ends; nil when none runs
	err     error         // the last flush's error, returned by the next Admit
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
	return g, nil
}

// Admit records gr as accepted and reports whether it had been accepted
// before. The record reaches the file in the background; an error writing
// an earlier one is returned here (and the grant is not admitted).
func (g *Guard) Admit(gr *Grant) (seen bool, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.seen[gr.ID]; ok {
		return true, nil
	}
	if g.err != nil {
		return false, g.err
	}
	if len(g.seen) >= g.max {
		g.evict()
	}
	g.pending = fmt.Appendf(g.pending, "%s %d\n", gr.ID, gr.Expires.UnixNano())
	g.seen[gr.ID] = gr.Expires
	if g.writing == nil {
		g.writing = make(chan struct{})
		go g.flush(g.writing)
	}
	return false, nil
}

// flush appends the pending lines to the file until none are left; then
// it closes done.
func (g *Guard) flush(done chan struct{}) {
	for {
		g.mu.Lock()
		lines := g.pending
		g.pending = nil
		if len(lines) == 0 {
			g.writing = nil
			g.mu.Unlock()
			close(done)
			return
		}
		g.mu.Unlock()
		err := appendLines(g.path, lines)
		if err != nil {
			g.mu.Lock()
			g.err = fmt.Errorf("record grants in %s: %w", g.path, err)
			g.mu.Unlock()
		}
	}
}

func appendLines(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Sync waits until every admitted grant is in the file and fsyncs it; it
// returns the error of writing them, if any.
func (g *Guard) Sync() error {
	g.mu.Lock()
	done := g.writing
	g.mu.Unlock()
	if done != nil {
		<-done
	}
	g.mu.Lock()
	err := g.err
	g.mu.Unlock()
	if err != nil {
		return err
	}
	f, err := os.OpenFile(g.path, os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("sync grant log: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync grant log: %w", err)
	}
	return f.Close()
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

// Close writes the admitted grants that are not in the file yet.
func (g *Guard) Close() error { return g.Sync() }
