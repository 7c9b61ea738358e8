// Command linkbench measures one transport across a network link: bulk
// throughput, CPU seconds per GiB on each side, and 64-byte round trips.
// e2e's TestLinkBench runs its server and client in two netlab hosts whose
// eth0 is capped with tbf; both ends always run inside the lab.
//
//	linkbench server -proto quic|outpost|tcptls -addr IP:PORT -certs DIR
//	linkbench client -proto quic|outpost|tcptls -addr IP:PORT -certs DIR -bytes N -rtt-count M
//
// The protocols are bare quic-go (one stream per use, mutual TLS), Outpost's
// transport (Endpoint.Dial streams: KindBlob for bulk, KindRPC for echo) and
// TCP with TLS 1.3 (one connection per use, mutual TLS). DIR holds ca.crt,
// server.crt/.key and client.crt/.key, PEM, node certificates from the mesh
// CA (the server's with its IP as a SAN); the test writes them.
//
// The client first times rtt-count 64-byte request/response round trips on
// one stream (after a short warm-up), then sends bytes in 32 KiB writes on
// another and half-closes it. The server reads to EOF, prints its result,
// and answers with the count it received; the client's clock and CPU
// figures run from its first write to that answer. Each side measures its
// own process with getrusage, so each JSON line is one process's CPU:
// the server prints one line per bulk stream, the client one line in all.
// Readiness and diagnostics go to stderr.
//
// -no-gso sets QUIC_GO_DISABLE_GSO=true for this process.
package main
