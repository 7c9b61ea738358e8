package tunnel

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Target is the byte that follows the stream kind on each tunnelled
// connection's stream: which edge service the connection is for. Values are
// on the wire; never renumber them.
type Target byte

const (
	// TargetKubeAPI is the edge cluster's Kubernetes API server.
	TargetKubeAPI Target = 1
	// TargetPlatformAPI is the agent's platform API.
	TargetPlatformAPI Target = 2
)

// String names the target as logs say it.
func (t Target) String() string {
	switch t {
	case TargetKubeAPI:
		return "kube-api"
	case TargetPlatformAPI:
		return "platform-api"
	}
	return fmt.Sprintf("target(%d)", byte(t))
}

// hello is the agent's first message on the control stream.
type hello struct {
	Cluster string `json:"cluster"`
	Token   string `json:"token"`
	Report
}

// Report is what an agent tells the hub about its edge API server, so that
// the hub can talk to it through the tunnel.
type Report struct {
	// ServerCA is the PEM bundle that verifies the edge API server.
	ServerCA []byte `json:"serverCA,omitempty"`
	// ServerName is the name the API server's certificate is verified
	// against (tls-server-name).
	ServerName string `json:"serverName,omitempty"`
	// BearerToken, or ClientCert and ClientKey (PEM), authenticate the hub
	// to the edge API server.
	BearerToken string `json:"bearerToken,omitempty"`
	ClientCert  []byte `json:"clientCert,omitempty"`
	ClientKey   []byte `json:"clientKey,omitempty"`
	// Version is the agent's build version.
	Version string `json:"version,omitempty"`
}

// welcome is the hub's answer to a hello.
type welcome struct {
	// Error says why the agent was refused; the agent should not retry
	// with the same token.
	Error string `json:"error,omitempty"`
	// Redirect is the QUIC address of the hub leader, which serves
	// tunnels; the agent dials it instead.
	Redirect string `json:"redirect,omitempty"`
	// Retry says the hub cannot decide now (no leader); try again later.
	Retry string `json:"retry,omitempty"`
	// HubAddrs are the hub members' QUIC addresses, to try when this one
	// goes away.
	HubAddrs []string `json:"hubAddrs,omitempty"`
}

// beat is a heartbeat on the control stream, sent by the agent and echoed
// by the hub (without the report).
type beat struct {
	Seq uint64 `json:"seq"`
	// Report, when set, replaces what the agent reported before (a
	// rotated service-account token).
	Report *Report `json:"report,omitempty"`
}

// maxMessage bounds one control message (a hello carries certificates).
const maxMessage = 1 << 20

var errTooLarge = errors.New("control message too large")

// writeMsg writes v as a 4-byte big-endian length and JSON.
func writeMsg(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if len(b) > maxMessage {
		return errTooLarge
	}
	buf := make([]byte, 4+len(b))
	binary.BigEndian.PutUint32(buf, uint32(len(b)))
	copy(buf[4:], b)
	_, err = w.Write(buf)
	return err
}

// readMsg reads one message written by writeMsg into v. Unknown fields are
// ignored, so hub and agent may be of different versions.
func readMsg(r io.Reader, v any) error {
	var n [4]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return err
	}
	size := binary.BigEndian.Uint32(n[:])
	if size > maxMessage {
		return fmt.Errorf("%w: %d bytes (at most %d)", errTooLarge, size, maxMessage)
	}
	b := make([]byte, size)
	if _, err := io.ReadFull(r, b); err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}
