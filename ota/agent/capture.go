package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"unicode/utf8"

	"github.com/outpost-mesh/outpost/ota"
)

// LogLimit caps each stream's log file on the node.
const LogLimit = 64 << 20

// capture keeps a stream's first and last ota.OutputLimit bytes in memory
// (a fixed head and a ring for the tail, so memory is bounded whatever the
// process prints) and copies the stream to a log file up to a cap. The
// file (and its directory) is made at the first byte, so a silent process
// costs the disk nothing. It is used by one copying goroutine at a time.
type capture struct {
	limit int
	head  []byte
	ring  []byte // allocated when the head is full; len(ring) == limit
	pos   int    // next write position in ring
	fill  int    // bytes held in ring
	total int64

	path     string   // "": no log file
	file     *os.File // opened at the first byte
	fileErr  error    // the log file could not be made
	fileMax  int64
	fileN    int64
	fileDead bool // a write failed or the cap was reached
}

// newCapture returns a capture keeping limit bytes of head and of tail and
// logging to path (none when path is ""), capped at fileMax bytes.
func newCapture(limit int, path string, fileMax int64) *capture {
	return &capture{limit: limit, path: path, fileMax: fileMax}
}

// Write never fails: the process must not see errors of our bookkeeping.
func (c *capture) Write(p []byte) (int, error) {
	n := len(p)
	c.total += int64(n)
	c.log(p)
	if room := c.limit - len(c.head); room > 0 {
		k := min(room, len(p))
		if c.head == nil {
			c.head = make([]byte, 0, c.limit)
		}
		c.head = append(c.head, p[:k]...)
		p = p[k:]
	}
	if len(p) == 0 {
		return n, nil
	}
	if c.ring == nil {
		c.ring = make([]byte, c.limit)
	}
	if len(p) >= c.limit {
		copy(c.ring, p[len(p)-c.limit:])
		c.pos, c.fill = 0, c.limit
		return n, nil
	}
	k := copy(c.ring[c.pos:], p)
	copy(c.ring, p[k:])
	c.pos = (c.pos + len(p)) % c.limit
	c.fill = min(c.fill+len(p), c.limit)
	return n, nil
}

func (c *capture) log(p []byte) {
	if c.path == "" || c.fileDead || len(p) == 0 {
		return
	}
	if c.file == nil {
		if c.fileErr = c.open(); c.fileErr != nil {
			c.fileDead = true
			return
		}
	}
	if room := c.fileMax - c.fileN; int64(len(p)) > room {
		p = p[:room]
		c.fileDead = true
	}
	k, err := c.file.Write(p)
	c.fileN += int64(k)
	if err != nil {
		c.fileDead = true
	}
}

// open makes the log file and its directory.
func (c *capture) open() error {
	if err := os.MkdirAll(filepath.Dir(c.path), 0o700); err != nil {
		return fmt.Errorf("log dir: %w", err)
	}
	f, err := os.OpenFile(c.path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("open log %s: %w", c.path, err)
	}
	c.file = f
	return nil
}

// Close ends the log file, noting there when the stream was cut. It
// returns why the file could not be made, if it could not.
func (c *capture) Close() error {
	if c.file == nil {
		return c.fileErr
	}
	if c.total > c.fileN {
		fmt.Fprintf(c.file, "\n[outpost: log cut at %d bytes; the stream had %d bytes]\n", c.fileN, c.total)
	}
	err := c.file.Close()
	c.file = nil
	return err
}

// Output returns the head and tail, cut on UTF-8 boundaries.
func (c *capture) Output() ota.Output {
	out := ota.Output{TotalBytes: c.total}
	tail := make([]byte, 0, c.fill)
	if c.fill == c.limit {
		tail = append(tail, c.ring[c.pos:]...)
	}
	tail = append(tail, c.ring[:c.pos]...)
	head := c.head
	out.Truncated = c.total > int64(len(head)+len(tail))
	if len(tail) > 0 || out.Truncated {
		// A rune split at the end of the head: move it to the tail when
		// the two are contiguous, else drop it.
		cut := len(head) - partialSuffix(head)
		if !out.Truncated {
			tail = append(append([]byte{}, head[cut:]...), tail...)
		}
		head = head[:cut]
	}
	if out.Truncated {
		tail = tail[leadingContinuation(tail):]
	}
	out.Head, out.Tail = string(head), string(tail)
	return out
}

// partialSuffix returns the length of an incomplete UTF-8 sequence at the
// end of b (0 when b ends on a rune boundary).
func partialSuffix(b []byte) int {
	for i := 1; i <= utf8.UTFMax && i <= len(b); i++ {
		if utf8.RuneStart(b[len(b)-i]) {
			if utf8.FullRune(b[len(b)-i:]) {
				return 0
			}
			return i
		}
	}
	return 0
}

// leadingContinuation returns how many UTF-8 continuation bytes start b
// (at most 3: the rest of a rune whose start was dropped).
func leadingContinuation(b []byte) int {
	i := 0
	for i < len(b) && i < utf8.UTFMax-1 && !utf8.RuneStart(b[i]) {
		i++
	}
	return i
}
