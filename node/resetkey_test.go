package node

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestResetKeyKeptAcrossRestarts: the stateless reset key is made once,
// private to the node, and read back the same at the next start; a damaged
// one is an error that names the file.
func TestResetKeyKeptAcrossRestarts(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	first, err := loadResetKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	if *first == ([32]byte{}) {
		t.Fatal("the key is all zeros")
	}
	path := filepath.Join(identityDir(dir), resetKeyFile)
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s: %v, %v; want mode 0600", path, fi, err)
	}
	again, err := loadResetKey(dir)
	if err != nil || *again != *first {
		t.Fatalf("the key read back differs (%v)", err)
	}
	if err := os.WriteFile(path, []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadResetKey(dir); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("a damaged key: %v, want an error naming %s", err, path)
	}
}
