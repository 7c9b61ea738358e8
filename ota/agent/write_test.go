package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/outpost-mesh/outpost/ota"
)

func sha(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// entries lists dir's names.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	return names
}

func TestWriteAtomicWithModeAndBackup(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := writeFile(t, dir, "outpost.list", "old\n", 0o644)
	r, _ := run(t, ota.Step{Name: "w", Type: ota.StepWrite, Path: p, Content: "new\n", Mode: "0600", Backup: true})
	wantPhase(t, r, ota.StepSucceeded, "")
	want := ota.WriteResult{SHA256: sha("new\n"), Size: 4, BackupPath: p + ota.BackupSuffix}
	if *r.Write != want {
		t.Errorf("result %+v, want %+v", *r.Write, want)
	}
	if got := readFile(t, p); got != "new\n" {
		t.Errorf("content %q", got)
	}
	if got := readFile(t, p+ota.BackupSuffix); got != "old\n" {
		t.Errorf("backup %q", got)
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", st.Mode())
	}
	if names := entries(t, dir); len(names) != 2 {
		t.Errorf("left behind: %v", names)
	}

	// Without mode the replaced file's mode stays; a second backup
	// replaces the first.
	r, _ = run(t, ota.Step{Name: "w", Type: ota.StepWrite, Path: p, Content: "newer\n", Backup: true})
	wantPhase(t, r, ota.StepSucceeded, "")
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o600 {
		t.Errorf("mode not kept: %v", st.Mode())
	}
	if got := readFile(t, p+ota.BackupSuffix); got != "new\n" {
		t.Errorf("second backup %q", got)
	}
}

// TestWriteBackupOfItsOwnBackup: when the backup already is the current
// file (a hard link of it: a write that stopped after its backup, or a
// second writer of the path), the backup stays and nothing is left behind.
func TestWriteBackupOfItsOwnBackup(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := writeFile(t, dir, "outpost.list", "old\n", 0o644)
	if err := os.Link(p, p+ota.BackupSuffix); err != nil {
		t.Fatal(err)
	}
	r, _ := run(t, ota.Step{Name: "w", Type: ota.StepWrite, Path: p, Content: "new\n", Backup: true})
	wantPhase(t, r, ota.StepSucceeded, "")
	if got := readFile(t, p+ota.BackupSuffix); got != "old\n" {
		t.Errorf("backup %q", got)
	}
	if names := entries(t, dir); len(names) != 2 {
		t.Errorf("left behind: %v", names)
	}
}

func TestWriteCreatesParents(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	p := filepath.Join(root, "a", "b", "c.conf")
	r, _ := run(t, ota.Step{Name: "w", Type: ota.StepWrite, Path: p, Content: "x", Backup: true})
	wantPhase(t, r, ota.StepSucceeded, "")
	if r.Write.BackupPath != "" {
		t.Errorf("backup of nothing: %q", r.Write.BackupPath)
	}
	st, err := os.Stat(filepath.Join(root, "a", "b"))
	if err != nil || st.Mode().Perm() != 0o755 {
		t.Fatalf("parent: %v %v", st, err)
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o644 {
		t.Errorf("default mode %v", st.Mode())
	}
	if got := readFile(t, p); got != "x" {
		t.Errorf("content %q", got)
	}
}

func TestWriteRefused(t *testing.T) {
	t.Parallel()
	allowed, outside := t.TempDir(), t.TempDir()
	if err := os.Symlink(outside, filepath.Join(allowed, "out")); err != nil {
		t.Fatal(err)
	}
	existing := writeFile(t, allowed, "dir/keep", "keep", 0o644)
	pol := Policy{Paths: []string{allowed}}
	cases := []struct {
		name   string
		step   ota.Step
		reason string
		errHas string
	}{
		{"outside the paths", ota.Step{Path: filepath.Join(outside, "new", "x")}, ota.ReasonPolicyDenied, "--ota-paths"},
		{"through a symlinked dir", ota.Step{Path: filepath.Join(allowed, "out", "new", "x")}, ota.ReasonPolicyDenied, "resolves to " + outside},
		{"dot-dot", ota.Step{Path: allowed + "/../x"}, ota.ReasonInvalid, `".." element`},
		{"relative", ota.Step{Path: "x"}, ota.ReasonInvalid, "not absolute"},
		{"a directory", ota.Step{Path: filepath.Dir(existing)}, ota.ReasonInvalid, "is a directory"},
		{"bad mode", ota.Step{Path: filepath.Join(allowed, "m"), Mode: "999"}, ota.ReasonInvalid, "octal"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.step.Name, tc.step.Type, tc.step.Content = "w", ota.StepWrite, "pwned"
			r, _ := runWith(t, tc.step, pol, nil)
			wantPhase(t, r, ota.StepFailed, tc.reason)
			if !strings.Contains(r.Error, tc.errHas) {
				t.Errorf("error %q does not say %q", r.Error, tc.errHas)
			}
		})
	}
	if names := entries(t, outside); len(names) != 0 {
		t.Errorf("written outside: %v", names)
	}
	if got := readFile(t, existing); got != "keep" {
		t.Errorf("existing file changed: %q", got)
	}
}

// blobStore serves blobs from a map, as the image store would.
func blobStore(blobs map[string]string) BlobOpener {
	return func(_ context.Context, _, digest string) (io.ReadCloser, int64, error) {
		b, ok := blobs[digest]
		if !ok {
			return nil, 0, errors.New("blob not found")
		}
		return io.NopCloser(strings.NewReader(b)), int64(len(b)), nil
	}
}

func TestWriteContentFrom(t *testing.T) {
	t.Parallel()
	payload := strings.Repeat("driver bytes ", 10000)
	good := "sha256:" + sha(payload)
	liar := "sha256:" + sha("something else")
	blobs := blobStore(map[string]string{good: payload, liar: payload})
	dir := t.TempDir()

	p := filepath.Join(dir, "driver.run")
	r, _ := runWith(t, ota.Step{Name: "w", Type: ota.StepWrite, Path: p, ContentFrom: &ota.ContentFrom{Blob: good, Size: int64(len(payload))}, Mode: "0755"}, DefaultPolicy(), blobs)
	wantPhase(t, r, ota.StepSucceeded, "")
	if readFile(t, p) != payload || r.Write.SHA256 != sha(payload) || r.Write.Size != int64(len(payload)) {
		t.Fatalf("written %+v", r.Write)
	}

	keep := writeFile(t, dir, "keep.run", "previous", 0o644)
	cases := []struct {
		name   string
		from   ota.ContentFrom
		blobs  BlobOpener
		reason string
		errHas string
	}{
		{"digest mismatch", ota.ContentFrom{Blob: liar}, blobs, ota.ReasonDigestMismatch, "have digest " + good},
		{"size mismatch", ota.ContentFrom{Blob: good, Size: 10}, blobs, ota.ReasonDigestMismatch, "the step says 10"},
		{"blob missing", ota.ContentFrom{Blob: "sha256:" + sha("nope")}, blobs, ota.ReasonBlobUnavailable, "blob not found"},
		{"no blob store", ota.ContentFrom{Blob: good}, nil, ota.ReasonBlobUnavailable, "no blob store"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := runWith(t, ota.Step{Name: "w", Type: ota.StepWrite, Path: keep, ContentFrom: &tc.from, Backup: true}, DefaultPolicy(), tc.blobs)
			wantPhase(t, r, ota.StepFailed, tc.reason)
			if !strings.Contains(r.Error, tc.errHas) {
				t.Errorf("error %q does not say %q", r.Error, tc.errHas)
			}
			if got := readFile(t, keep); got != "previous" {
				t.Errorf("file replaced: %q", got)
			}
		})
	}
	if names := entries(t, dir); len(names) != 2 {
		t.Errorf("left behind: %v", names)
	}
}

func TestWriteOwner(t *testing.T) {
	t.Parallel()
	p := filepath.Join(t.TempDir(), "owned")
	if os.Geteuid() != 0 {
		r, _ := run(t, ota.Step{Name: "w", Type: ota.StepWrite, Path: p, Content: "x", Owner: "root"})
		wantPhase(t, r, ota.StepFailed, ota.ReasonNotRoot)
		if _, err := os.Stat(p); err == nil {
			t.Error("file written")
		}
		return
	}
	r, _ := run(t, ota.Step{Name: "w", Type: ota.StepWrite, Path: p, Content: "x", Owner: "nobody", Mode: "0640"})
	wantPhase(t, r, ota.StepSucceeded, "")
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Fatalf("user nobody: %v (Debian has it)", err)
	}
	st, _ := os.Stat(p)
	if uid := st.Sys().(*syscall.Stat_t).Uid; strconv.Itoa(int(uid)) != u.Uid || st.Mode().Perm() != 0o640 {
		t.Errorf("uid %d mode %v", uid, st.Mode())
	}
	// Rewritten without an owner, the file keeps its owner.
	r, _ = run(t, ota.Step{Name: "w", Type: ota.StepWrite, Path: p, Content: "y"})
	wantPhase(t, r, ota.StepSucceeded, "")
	st, _ = os.Stat(p)
	if uid := st.Sys().(*syscall.Stat_t).Uid; strconv.Itoa(int(uid)) != u.Uid {
		t.Errorf("owner not kept: uid %d", uid)
	}
}
