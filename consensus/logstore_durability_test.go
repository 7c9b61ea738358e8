package consensus

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The durability test runs a child copy of the test binary that appends to a
// LogStore and acknowledges every StoreLogs on stdout, kills it with SIGKILL
// and checks the store it leaves behind.
const (
	durabilityDirEnv = "OUTPOST_LOGSTORE_DURABILITY_DIR" // makes the child run
	durabilityKills  = 224                               // acks before the kill: batch 225 is oversized
	durabilityEntry  = 1024                              // bytes of data per entry
)

// durabilityBatchSize returns the number of entries in the child's batch n
// (from 1). Every 25th batch, ~4 MiB, is too big for one Badger transaction
// and takes the redo path; the kill after durabilityKills acks lands while
// the child works on one.
func durabilityBatchSize(n int) uint64 {
	if n%25 == 0 {
		return 4096
	}
	return 16
}

// TestLogStoreDurability proves that what StoreLogs acknowledged survives a
// SIGKILL, and that a batch in flight at the kill is all there or absent. A
// killed process loses what it buffered itself, not what the kernel holds,
// so this checks the write path and recovery; surviving power loss rests on
// SyncWrites, which no process kill can observe.
func TestLogStoreDurability(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestLogStoreDurabilityChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), durabilityDirEnv+"="+dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	noError(t, err)
	noError(t, cmd.Start())

	var acks int
	var acked uint64
	for sc := bufio.NewScanner(stdout); acks < durabilityKills && sc.Scan(); {
		if s, ok := strings.CutPrefix(sc.Text(), "ack "); ok {
			acked, err = strconv.ParseUint(s, 10, 64)
			noError(t, err)
			acks++
		}
	}
	noError(t, cmd.Process.Kill())
	_, _ = io.Copy(io.Discard, stdout)
	waitErr := cmd.Wait()
	if acks < durabilityKills {
		t.Fatalf("child stopped after %d acks: %v\n%s", acks, waitErr, stderr.Bytes())
	}

	s := openTestLogStore(t, dir)
	first, err := s.FirstIndex()
	noError(t, err)
	last, err := s.LastIndex()
	noError(t, err)
	if first != 1 || last < acked {
		t.Fatalf("FirstIndex, LastIndex = %d, %d after %d acks up to index %d", first, last, acks, acked)
	}
	var ends []uint64 // last index of each batch
	for n, end := 1, uint64(0); end < last; n++ {
		end += durabilityBatchSize(n)
		ends = append(ends, end)
	}
	if !slices.Contains(ends, last) {
		t.Fatalf("LastIndex %d ends no batch: a batch was stored in part (batch ends %v)", last, ends[len(ends)-3:])
	}
	for i := uint64(1); i <= last; i++ {
		wantLog(t, s, testLogs(i, i, durabilityEntry)[0])
	}
	t.Logf("killed after %d acks up to index %d; store holds 1..%d", acks, acked, last)
}

// TestLogStoreDurabilityChild is the child of TestLogStoreDurability. Without
// its environment variable it does nothing.
func TestLogStoreDurabilityChild(t *testing.T) {
	dir := os.Getenv(durabilityDirEnv)
	if dir == "" {
		return
	}
	s, err := OpenLogStore(dir, nil, FootprintHub)
	noError(t, err)
	// Bounded, so that a child whose parent died stops on its own.
	for n, next := 1, uint64(1); n <= 2*durabilityKills; n++ {
		logs := testLogs(next, next+durabilityBatchSize(n)-1, durabilityEntry)
		noError(t, s.StoreLogs(logs))
		next += uint64(len(logs))
		if _, err := os.Stdout.WriteString("ack " + strconv.FormatUint(next-1, 10) + "\n"); err != nil {
			t.Fatal(err)
		}
	}
	noError(t, s.Close())
}
