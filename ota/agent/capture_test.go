package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCaptureHeadTail(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name      string
		writes    []string
		head      string
		tail      string
		truncated bool
	}{
		{"fits the head", []string{"abc", "de"}, "abcde", "", false},
		{"exactly the head", []string{"abcdefgh"}, "abcdefgh", "", false},
		{"head and a partial tail", []string{"abcdefgh", "ij"}, "abcdefgh", "ij", false},
		{"head and tail contiguous", []string{"abcdefghijklmnop"}, "abcdefgh", "ijklmnop", false},
		{"middle dropped", []string{"abcdefgh", "12345", "ijklmnop"}, "abcdefgh", "ijklmnop", true},
		{"ring wraps in small writes", []string{"abcdefgh", "1234", "5678", "9xyz"}, "abcdefgh", "56789xyz", true},
		{"one huge write", []string{strings.Repeat("a", 8) + strings.Repeat("-", 100) + "12345678"}, "aaaaaaaa", "12345678", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := newCapture(8, "", 0)
			total := 0
			for _, w := range tc.writes {
				c.Write([]byte(w))
				total += len(w)
			}
			o := c.Output()
			if o.Head != tc.head || o.Tail != tc.tail || o.Truncated != tc.truncated || o.TotalBytes != int64(total) {
				t.Fatalf("got %+v; want head %q tail %q truncated %v total %d", o, tc.head, tc.tail, tc.truncated, total)
			}
		})
	}
}

func TestCaptureUTF8Boundaries(t *testing.T) {
	t.Parallel()
	// "é" is 2 bytes: the head's limit of 8 falls inside the first é.
	c := newCapture(8, "", 0)
	c.Write([]byte("abcdefgéé")) // 7 + 4 = 11 bytes
	o := c.Output()
	if o.Head != "abcdefg" || o.Tail != "éé" || o.Truncated {
		t.Fatalf("contiguous split: %+v", o)
	}
	// The tail's first byte is the second half of an é.
	c = newCapture(8, "", 0)
	c.Write([]byte("abcdefg" + "é" + strings.Repeat("x", 20) + "ééé" + "xxx"))
	o = c.Output()
	if o.Head != "abcdefg" || o.Tail != "ééxxx" || !o.Truncated {
		t.Fatalf("truncated split: %+v", o)
	}
}

func TestCaptureLogCap(t *testing.T) {
	t.Parallel()
	p := filepath.Join(t.TempDir(), "out")
	c := newCapture(4, p, 10)
	c.Write([]byte("0123456"))
	c.Write([]byte("789abcdef"))
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	if !strings.HasPrefix(string(b), "0123456789\n[outpost: log cut at 10 bytes; the stream had 16 bytes]") {
		t.Fatalf("log %q", b)
	}
}

// TestCaptureMakesItsFileAtTheFirstByte: a silent stream leaves no file
// (nor directory) behind; a file that cannot be made is Close's error.
func TestCaptureMakesItsFileAtTheFirstByte(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	silent := newCapture(4, filepath.Join(dir, "quiet", "s.stdout"), 10)
	silent.Write(nil)
	if err := silent.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "quiet")); !os.IsNotExist(err) {
		t.Fatalf("a silent stream made its log directory: %v", err)
	}
	loud := newCapture(4, filepath.Join(dir, "loud", "s.stdout"), 10)
	loud.Write([]byte("hi"))
	if err := loud.Close(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "loud", "s.stdout")); string(b) != "hi" {
		t.Fatalf("log %q, want hi", b)
	}
	// A regular file where the directory should be.
	blocked := filepath.Join(dir, "blocked")
	if err := os.WriteFile(blocked, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	c := newCapture(4, filepath.Join(blocked, "s.stdout"), 10)
	if n, err := c.Write([]byte("out")); n != 3 || err != nil {
		t.Fatalf("Write = %d, %v: the process must not see the log's failure", n, err)
	}
	if err := c.Close(); err == nil || !strings.Contains(err.Error(), "log dir") {
		t.Fatalf("Close = %v, want the log directory's error", err)
	}
	if o := c.Output(); o.Head != "out" {
		t.Fatalf("output %+v, want the head kept", o)
	}
}
