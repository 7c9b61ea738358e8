package transport

import "strconv"

// Kind is the first byte of every stream: it says which subsystem the
// stream belongs to, and so which handler the accepting Endpoint runs.
type Kind byte

// The stream kinds. Their values are on the wire: never renumber them.
const (
	// KindRaft carries hashicorp/raft's NetworkTransport RPCs.
	KindRaft Kind = 1
	// KindRPC carries requests between nodes.
	KindRPC Kind = 2
	// KindTunnel carries a tunnelled TCP connection.
	KindTunnel Kind = 3
	// KindBlob carries content-addressed blobs (images, bundles).
	KindBlob Kind = 4
	// KindJoin is the kind a node without a mesh certificate opens:
	// it presents a join token and receives its certificate.
	KindJoin Kind = 5
)

// maxKind is the highest defined kind.
const maxKind = KindJoin

// String returns the kind's lowercase name, as used in logs.
func (k Kind) String() string {
	switch k {
	case KindRaft:
		return "raft"
	case KindRPC:
		return "rpc"
	case KindTunnel:
		return "tunnel"
	case KindBlob:
		return "blob"
	case KindJoin:
		return "join"
	default:
		return "kind(" + strconv.Itoa(int(k)) + ")"
	}
}

// valid reports whether k is one of the defined kinds.
func (k Kind) valid() bool { return k >= KindRaft && k <= maxKind }
