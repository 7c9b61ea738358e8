package ota

import (
	"unicode/utf8"
)

// ResultBudget bounds one device's result encoded as JSON. The result
// travels whole: in the node's answer to its site leader, in a write to
// the site's Raft log and one to the hub's (3 MiB each at most), and in a
// link report to the hub (4 MiB). Without a bound, a task whose steps
// print a lot (sixty-four exec steps keep up to 256 KiB of output each) or
// read files up to their maxBytes could not be recorded anywhere: the
// device would be sent again until it timed out.
const ResultBudget = 2 << 20

// Fit trims s to ResultBudget and reports whether it trimmed: the steps'
// captured outputs keep shorter heads and tails (halved until the result
// fits; Truncated is set and TotalBytes kept, and the full streams stay in
// the node's log files, `outpost task logs`); if that is not enough, read
// contents are left out, last step first (ReadResult.Omitted: the size and
// sha256 are still the file's).
func (s *DeviceResultStatus) Fit() bool {
	if s.SizeBound() <= ResultBudget {
		return false
	}
	for limit := OutputLimit / 2; limit >= 0; limit /= 2 {
		for i := range s.Steps {
			s.Steps[i].Stdout.shrink(limit)
			s.Steps[i].Stderr.shrink(limit)
		}
		if s.SizeBound() <= ResultBudget || limit == 0 {
			break
		}
	}
	for i := len(s.Steps) - 1; i >= 0 && s.SizeBound() > ResultBudget; i-- {
		if r := s.Steps[i].Read; r != nil && r.Content != "" {
			r.Content, r.Omitted = "", true
		}
	}
	return true
}

// SizeBound returns at least the size of s encoded as JSON, close to it:
// every string's encoded length exactly, and a generous allowance for
// field names, numbers and times.
func (s *DeviceResultStatus) SizeBound() int {
	const fixed = 1024 // names, times, numbers of the status or of a step
	n := fixed + jsonLen(s.Reason) + jsonLen(s.Message)
	for i := range s.Steps {
		r := &s.Steps[i]
		n += fixed + jsonLen(r.Name) + jsonLen(r.Reason) + jsonLen(r.Error)
		n += jsonLen(r.Stdout.Head) + jsonLen(r.Stdout.Tail) + jsonLen(r.Stderr.Head) + jsonLen(r.Stderr.Tail)
		if r.Read != nil {
			n += jsonLen(r.Read.Content)
		}
		if r.Write != nil {
			n += jsonLen(r.Write.BackupPath)
		}
		if p := r.Playbook; p != nil {
			for _, plays := range [][]PlayRecap{p.Recap, p.Plays} {
				for _, play := range plays {
					n += fixed/4 + jsonLen(play.Play) + jsonLen(play.Host)
				}
			}
		}
	}
	return n
}

// jsonLen is the length of s as encoding/json writes it, quotes excluded:
// control characters, HTML's <, > and &, and U+2028 and U+2029 as \u00XX,
// each byte of invalid UTF-8 as \ufffd.
func jsonLen(s string) int {
	n := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t':
				n += 2
			case c < 0x20 || c == '<' || c == '>' || c == '&':
				n += 6
			default:
				n++
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 || r == '\u2028' || r == '\u2029' {
			n += 6
		} else {
			n += size
		}
		i += size
	}
	return n
}

// shrink keeps at most limit bytes of the stream's head and of its tail,
// cut at UTF-8 boundaries; the tail stays the stream's last bytes.
func (o *Output) shrink(limit int) {
	if len(o.Head) <= limit && len(o.Tail) <= limit {
		return
	}
	h := runeStart(o.Head, min(limit, len(o.Head)))
	dropped, end := o.Truncated, o.Tail
	if rest := o.Head[h:]; rest != "" {
		if end == "" { // the stream fit in Head: its end is Head's
			end = rest
		} else {
			dropped = true
		}
	}
	o.Head = o.Head[:h]
	if cut := len(end) - limit; cut > 0 {
		end = end[runeEnd(end, cut):]
		dropped = true
	}
	o.Tail, o.Truncated = end, dropped
}

// runeStart moves i back to the start of the rune it is in.
func runeStart(s string, i int) int {
	for i > 0 && i < len(s) && !utf8.RuneStart(s[i]) {
		i--
	}
	return i
}

// runeEnd moves i forward to the start of the next rune.
func runeEnd(s string, i int) int {
	for i < len(s) && !utf8.RuneStart(s[i]) {
		i++
	}
	return i
}
