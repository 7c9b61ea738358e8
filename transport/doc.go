// Package transport is Outpost's one QUIC endpoint per node. Raft, RPC,
// tunnels, blobs and joins share one UDP port: every stream starts with a
// one-byte Kind written by its opener, and the accepting Endpoint dispatches
// on it to the handler registered with Handle.
//
// Peers authenticate with mutual TLS 1.3 from the mesh CA: a node
// certificate names the node (CommonName), its site (Organization) and its
// role (OrganizationalUnit, "hub" or "edge"), and PeerFromCert reads them
// back. A connection without a client certificate may open only the kinds
// in Config.AnonymousKinds (KindJoin by default); DialPinned opens one for a
// node that has no certificate yet, trusting the hub by the CA fingerprint
// in its join token. DialReverse does the same for an edge cluster agent
// and lets the hub open streams back on that connection (Stream.OpenReverse),
// so nothing at the edge listens.
//
// Dial keeps one QUIC connection per peer address and opens a stream on it
// per call; StreamLayer adapts KindRaft streams to hashicorp/raft's
// NetworkTransport. DESIGN.md says why things are the way they are.
package transport
