package transport

import (
	"log/slog"
	"net"
)

// udpBufferSize is the socket buffer size quic-go asks for (7 MiB); with
// less, bursts overflow the receive queue and throughput drops.
const udpBufferSize = 7 << 20

// sysctlHint is what the operator runs to let unprivileged processes raise
// the buffers.
const sysctlHint = "sysctl -w net.core.rmem_max=7500000 net.core.wmem_max=7500000"

// raiseBuffers sets the UDP socket's receive and send buffers to
// udpBufferSize, forcing past the sysctl cap where the process may (Linux,
// CAP_NET_ADMIN), and logs one warning when the kernel keeps them smaller.
// quic-go then finds them large enough and stays quiet.
func raiseBuffers(conn *net.UDPConn, log *slog.Logger) {
	rcv, snd, err := setBuffers(conn, udpBufferSize)
	if err != nil {
		log.Warn("cannot size the UDP socket buffers; QUIC throughput may suffer", "err", err, "fix", sysctlHint)
		return
	}
	if rcv < udpBufferSize || snd < udpBufferSize {
		log.Warn("the kernel caps the UDP socket buffers below what QUIC needs; throughput will suffer until an administrator runs: "+sysctlHint,
			"receive_bytes", rcv, "send_bytes", snd, "want_bytes", udpBufferSize)
		return
	}
	log.Debug("UDP socket buffers raised", "receive_bytes", rcv, "send_bytes", snd)
}
