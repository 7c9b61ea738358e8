package gossip

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/hashicorp/memberlist"
)

// Meta is what a node tells its site about itself. It travels in
// memberlist's node metadata, so its encoding must fit in
// memberlist.MetaMaxSize (512) bytes; the labels are what usually runs out.
type Meta struct {
	// Name is the node's name, unique in the site; it is also the
	// memberlist node name and cannot change while the node runs.
	Name string
	// Site is the site the node belongs to; it cannot change either.
	Site string
	// Role is the node's role, such as "hub" or "edge".
	Role string
	// Version is the Outpost version the node runs.
	Version string
	// OS and Arch are the node's platform, as runtime.GOOS and GOARCH.
	OS   string
	Arch string
	// Labels are the node's labels.
	Labels map[string]string
	// QUICAddr is the host:port of the node's QUIC endpoint.
	QUICAddr string
	// APIAddr is the host:port of the node's admin API, if it serves one.
	APIAddr string
	// RaftVoter says whether the node is a Raft voter of its site.
	RaftVoter bool
	// Stateless says the node holds no site state: it runs tasks but
	// never joins its site's Raft group (see node.Agent).
	Stateless bool
}

// metaVersion is the first byte of an encoded Meta. Fields may be appended
// to the format without changing it: decoders ignore trailing bytes.
const metaVersion = 1

// Flag bits of the second byte.
const (
	flagRaftVoter = 1 << 0
	// flagLeaving is set by a node about to leave gracefully, so the others
	// can tell a leave from a death (see DESIGN.md). It is not part of Meta.
	flagLeaving = 1 << 1
	// flagStateless is Meta.Stateless.
	flagStateless = 1 << 2
)

// Encode returns m in the compact binary form carried in memberlist's node
// metadata, or an error wrapping ErrMetaTooLarge that says by how much it
// overflows memberlist.MetaMaxSize.
func (m Meta) Encode() ([]byte, error) {
	return m.encode(false)
}

// encode is Encode with the leaving flag.
func (m Meta) encode(leaving bool) ([]byte, error) {
	var flags byte
	if m.RaftVoter {
		flags |= flagRaftVoter
	}
	if leaving {
		flags |= flagLeaving
	}
	if m.Stateless {
		flags |= flagStateless
	}
	b := make([]byte, 0, 128)
	b = append(b, metaVersion, flags)
	for _, s := range m.strings() {
		b = appendString(b, *s)
	}
	fixed := len(b)
	b = binary.AppendUvarint(b, uint64(len(m.Labels)))
	for _, k := range slices.Sorted(maps.Keys(m.Labels)) {
		b = appendString(b, k)
		b = appendString(b, m.Labels[k])
	}
	if len(b) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("encode meta of node %q: %d bytes is %d over memberlist's %d-byte limit (its %d labels take %d bytes): %w",
			m.Name, len(b), len(b)-memberlist.MetaMaxSize, memberlist.MetaMaxSize, len(m.Labels), len(b)-fixed, ErrMetaTooLarge)
	}
	return b, nil
}

// DecodeMeta parses metadata made by Meta.Encode.
func DecodeMeta(b []byte) (Meta, error) {
	m, _, err := decodeMeta(b)
	return m, err
}

// decodeMeta is DecodeMeta that also returns the leaving flag.
func decodeMeta(b []byte) (m Meta, leaving bool, err error) {
	if len(b) < 2 {
		return Meta{}, false, fmt.Errorf("decode meta: %d bytes: %w", len(b), ErrBadMeta)
	}
	if b[0] != metaVersion {
		return Meta{}, false, fmt.Errorf("decode meta: format version %d, want %d: %w", b[0], metaVersion, ErrBadMeta)
	}
	flags := b[1]
	r := reader{b: b[2:]}
	for _, s := range m.strings() {
		*s = r.string()
	}
	n := r.uvarint()
	if r.err == nil && n > uint64(len(r.b)) { // each label takes at least two bytes
		r.err = fmt.Errorf("%d labels in %d bytes", n, len(r.b))
	}
	if r.err == nil && n > 0 {
		m.Labels = make(map[string]string, n)
		for range n {
			k := r.string()
			m.Labels[k] = r.string()
		}
	}
	if r.err != nil {
		return Meta{}, false, fmt.Errorf("decode meta: %w: %w", r.err, ErrBadMeta)
	}
	m.RaftVoter = flags&flagRaftVoter != 0
	m.Stateless = flags&flagStateless != 0
	return m, flags&flagLeaving != 0, nil
}

// strings lists the string fields in their encoded order.
func (m *Meta) strings() []*string {
	return []*string{&m.Name, &m.Site, &m.Role, &m.Version, &m.OS, &m.Arch, &m.QUICAddr, &m.APIAddr}
}

// equal reports whether m and o carry the same information.
func (m Meta) equal(o Meta) bool {
	if m.RaftVoter != o.RaftVoter || m.Stateless != o.Stateless || !maps.Equal(m.Labels, o.Labels) {
		return false
	}
	a, b := m.strings(), o.strings()
	for i := range a {
		if *a[i] != *b[i] {
			return false
		}
	}
	return true
}

// clone returns m with its own Labels map.
func (m Meta) clone() Meta {
	m.Labels = maps.Clone(m.Labels)
	return m
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// reader decodes uvarints and length-prefixed strings, keeping the first
// error.
type reader struct {
	b   []byte
	err error
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errors.New("truncated length")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) string() string {
	n := r.uvarint()
	if r.err != nil {
		return ""
	}
	if n > uint64(len(r.b)) {
		r.err = fmt.Errorf("string of %d bytes with %d left", n, len(r.b))
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}
