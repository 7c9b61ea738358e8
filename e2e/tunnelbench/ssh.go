package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
)

// sshCipher is the cipher the ssh peer uses: the fastest OpenSSH offers on
// this machine (AES-NI), so the peer is measured at its best.
const sshCipher = "aes128-gcm@openssh.com"

// sshKeys makes a host key and a client key in dir, and an
// authorized_keys for the client key.
func sshKeys(dir string) error {
	for _, k := range []string{"host", "client"} {
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, k)).CombinedOutput(); err != nil {
			return fmt.Errorf("ssh-keygen: %v: %s", err, out)
		}
	}
	pub, err := os.ReadFile(filepath.Join(dir, "client.pub"))
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o600)
}

// sshdConfig writes an sshd_config that listens on ip:port, accepts the
// client key for root, and allows remote forwarding, and returns its path.
func sshdConfig(dir, ip string, port int) (string, error) {
	conf := fmt.Sprintf(`ListenAddress %s
Port %d
HostKey %s
AuthorizedKeysFile %s
PidFile none
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowTcpForwarding remote
GatewayPorts no
PermitTTY no
Ciphers %s
LogLevel ERROR
`, ip, port, filepath.Join(dir, "host"), filepath.Join(dir, "authorized_keys"), sshCipher)
	path := filepath.Join(dir, "sshd_config."+strconv.Itoa(port))
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil { // sshd's privilege separation directory
		return "", err
	}
	return path, os.WriteFile(path, []byte(conf), 0o600)
}

// sshArgs is `ssh -R` from the edge with one -R per forward
// (127.0.0.1:PORT:TARGET: the hub's port leads to the edge's target).
func sshArgs(dir, hubIP string, sshPort int, forwards []string) []string {
	args := []string{
		"-N", "-T", "-i", filepath.Join(dir, "client"), "-p", strconv.Itoa(sshPort),
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
		"-o", "ExitOnForwardFailure=yes", "-o", "ServerAliveInterval=10", "-o", "BatchMode=yes",
		"-c", sshCipher,
	}
	for _, f := range forwards {
		args = append(args, "-R", f)
	}
	return append(args, "root@"+hubIP)
}
