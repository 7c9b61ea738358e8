package fetch

import (
	"os/exec"
	"syscall"
)

// dieWithTest makes cmd get SIGKILL if the test binary dies before its
// cleanup runs (a panic in another test), so no registry outlives it.
func dieWithTest(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
