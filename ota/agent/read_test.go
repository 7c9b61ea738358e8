package agent

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-mesh/outpost/ota"
)

func TestReadText(t *testing.T) {
	t.Parallel()
	content := "node=edge-1\narch=x86_64 é\n"
	p := writeFile(t, t.TempDir(), "query.txt", content, 0o640)
	mtime := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := os.Chtimes(p, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	r, _ := run(t, ota.Step{Name: "q", Type: ota.StepRead, Path: p})
	wantPhase(t, r, ota.StepSucceeded, "")
	sum := sha256.Sum256([]byte(content))
	want := ota.ReadResult{Content: content, Encoding: ota.EncodingUTF8, Size: int64(len(content)), Mode: "0640", SHA256: hex.EncodeToString(sum[:])}
	got := *r.Read
	if !got.Mtime.Time.Equal(mtime) {
		t.Errorf("mtime %v, want %v", got.Mtime, mtime)
	}
	got.Mtime = want.Mtime
	if got != want {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
}

func TestReadBinary(t *testing.T) {
	t.Parallel()
	data := []byte{0x7f, 'E', 'L', 'F', 0xff, 0x00, 0xfe}
	p := filepath.Join(t.TempDir(), "bin")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	r, _ := run(t, ota.Step{Name: "q", Type: ota.StepRead, Path: p})
	wantPhase(t, r, ota.StepSucceeded, "")
	if r.Read.Encoding != ota.EncodingBase64 || r.Read.Content != base64.StdEncoding.EncodeToString(data) || r.Read.Size != 7 {
		t.Errorf("got %+v", r.Read)
	}
}

func TestReadRefused(t *testing.T) {
	t.Parallel()
	allowed, outside := t.TempDir(), t.TempDir()
	secret := writeFile(t, outside, "secret", "s3cr3t", 0o600)
	inside := writeFile(t, allowed, "ok.txt", "fine", 0o644)
	big := writeFile(t, allowed, "big", strings.Repeat("x", 2000), 0o644)
	escape := filepath.Join(allowed, "escape")
	if err := os.Symlink(secret, escape); err != nil {
		t.Fatal(err)
	}
	linkedDir := filepath.Join(allowed, "linked")
	if err := os.Symlink(outside, linkedDir); err != nil {
		t.Fatal(err)
	}
	pol := Policy{Paths: []string{allowed}}
	cases := []struct {
		name     string
		step     ota.Step
		reason   string
		errHas   string
		contains string
	}{
		{"outside the paths", ota.Step{Path: secret}, ota.ReasonPolicyDenied, "--ota-paths " + allowed, ""},
		{"symlink escaping the root", ota.Step{Path: escape}, ota.ReasonPolicyDenied, "resolves to " + secret, ""},
		{"directory symlink escaping the root", ota.Step{Path: filepath.Join(linkedDir, "secret")}, ota.ReasonPolicyDenied, "outside the paths", ""},
		{"dot-dot", ota.Step{Path: allowed + "/../x"}, ota.ReasonInvalid, `".." element`, ""},
		{"relative", ota.Step{Path: "ok.txt"}, ota.ReasonInvalid, "not absolute", ""},
		{"over maxBytes", ota.Step{Path: big, MaxBytes: 1000}, ota.ReasonTooLarge, "file is 2000 bytes, over maxBytes 1000", ""},
		{"proc file over maxBytes", ota.Step{Path: "/proc/self/status", MaxBytes: 100}, ota.ReasonTooLarge, "over maxBytes 100", ""},
		{"missing", ota.Step{Path: filepath.Join(allowed, "nope")}, ota.ReasonIOError, "no such file", ""},
		{"directory", ota.Step{Path: allowed}, ota.ReasonInvalid, "a directory, not a regular file", ""},
		{"device", ota.Step{Path: "/dev/null"}, ota.ReasonInvalid, "/dev/null: a character device, not a regular file", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.step.Name, tc.step.Type = "q", ota.StepRead
			p := pol
			if strings.HasPrefix(tc.step.Path, "/proc") || strings.HasPrefix(tc.step.Path, "/dev") {
				p = DefaultPolicy()
			}
			r, _ := runWith(t, tc.step, p, nil)
			wantPhase(t, r, ota.StepFailed, tc.reason)
			if !strings.Contains(r.Error, tc.errHas) {
				t.Errorf("error %q does not say %q", r.Error, tc.errHas)
			}
			if r.Read != nil {
				t.Errorf("refused read returned content %+v", r.Read)
			}
		})
	}
	// A symlink that stays inside the root is fine.
	if err := os.Symlink(inside, filepath.Join(allowed, "alias")); err != nil {
		t.Fatal(err)
	}
	r, _ := runWith(t, ota.Step{Name: "q", Type: ota.StepRead, Path: filepath.Join(allowed, "alias")}, pol, nil)
	wantPhase(t, r, ota.StepSucceeded, "")
}
