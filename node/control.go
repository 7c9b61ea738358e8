package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"time"

	"github.com/outpost-mesh/outpost/consensus"
)

// SocketName is the control socket's file name in the data dir.
const SocketName = "outpost.sock"

// LocalStatus is what `outpost status` prints: this node and its Raft view.
type LocalStatus struct {
	Name    string           `json:"name"`
	Site    string           `json:"site"`
	Role    string           `json:"role"`
	Version string           `json:"version"`
	APIAddr string           `json:"apiAddr,omitempty"`
	Uptime  string           `json:"uptime"`
	Raft    consensus.Status `json:"raft"`
}

// listenControl binds the control socket with mode 0600. A socket file left
// by a crashed daemon is removed; one that still answers is an error.
func listenControl(path string) (net.Listener, error) {
	if _, err := os.Stat(path); err == nil {
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("another outpost node is running on this data dir (%s answers); stop it first", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale control socket: %w", err)
		}
	}
	// The data dir is 0700, so the socket is private before the chmod.
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on control socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// controlHandler serves the control socket: local status, metrics and Go's
// profiles (/debug/pprof/), with no credentials (the socket's file mode is
// the access control).
func (n *Node) controlHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, n.localStatus())
	})
	mux.Handle("GET /metrics", n.metricsHandler())
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	return mux
}

func (n *Node) localStatus() LocalStatus {
	return LocalStatus{
		Name: n.id.Name, Site: n.id.Site, Role: n.id.Role, Version: BuildVersion(),
		APIAddr: n.apiAddr(), Uptime: time.Since(n.started).Round(time.Second).String(),
		Raft: n.group.Status(),
	}
}

// ReadLocalStatus asks the daemon behind a control socket for its status.
func ReadLocalStatus(socket string) (*LocalStatus, error) {
	c := &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{DialContext: (&unixDialer{path: socket}).DialContext},
	}
	resp, err := c.Get("http://outpost/status")
	if err != nil {
		var ne *net.OpError
		if errors.As(err, &ne) || errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("no outpost node answers on %s: is it running with this --data-dir?", socket)
		}
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("control socket: %s", resp.Status)
	}
	var st LocalStatus
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	return &st, nil
}
