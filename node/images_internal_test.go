package node

import (
	"net"
	"slices"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/outpost-mesh/outpost/transport"
)

// TestAuthorizeBlobStream checks who may open blob streams: anyone of the
// mesh to a hub member, only the own site to an edge node.
func TestAuthorizeBlobStream(t *testing.T) {
	t.Parallel()
	edge := &Node{id: &identity{Name: "a-1", Site: "a", Role: RoleEdge}}
	hub := &Node{id: &identity{Name: "hub-1", Site: HubSite, Role: RoleHub}}
	for _, tc := range []struct {
		n    *Node
		peer transport.Peer
		ok   bool
	}{
		{edge, transport.Peer{Name: "a-2", Site: "a", Role: RoleEdge}, true},
		{edge, transport.Peer{Name: "b-1", Site: "b", Role: RoleEdge}, false},
		{edge, transport.Peer{Name: "hub-1", Site: HubSite, Role: RoleHub}, false},
		{hub, transport.Peer{Name: "b-1", Site: "b", Role: RoleEdge}, true},
		{hub, transport.Peer{Name: "hub-2", Site: HubSite, Role: RoleHub}, true},
	} {
		if err := tc.n.authorizeBlobStream(tc.peer); (err == nil) != tc.ok {
			t.Errorf("%s serving %s: %v, want allowed %v", tc.n.id.Name, tc.peer, err, tc.ok)
		}
	}
}

// TestMirrorRecognizesItself checks that an ns naming the mirror's own
// address is taken for the hub's own registry, and others are not.
func TestMirrorRecognizesItself(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		bound string
		self  []string
		other []string
	}{
		{"127.0.0.1", []string{"127.0.0.1:5000", "localhost:5000"}, []string{"127.0.0.2:5000", "127.0.0.1:5001", "docker.io", "registry.example:5000", "10.0.0.9:5000"}},
		{"0.0.0.0", []string{"127.0.0.1:5000", "127.0.0.2:5000", "localhost:5000", "10.0.0.9:5000"}, []string{"10.0.0.8:5000", "127.0.0.1:5001", "registry.example:5000"}},
	} {
		c := &imageCache{n: &Node{cfg: Config{AdvertiseAddr: "10.0.0.9"}}, mirrorLn: fakeListener{&net.TCPAddr{IP: net.ParseIP(tc.bound), Port: 5000}}}
		for _, ns := range tc.self {
			if !c.isSelf(ns) {
				t.Errorf("bound to %s: %s not taken for the mirror itself", tc.bound, ns)
			}
		}
		for _, ns := range tc.other {
			if c.isSelf(ns) {
				t.Errorf("bound to %s: %s taken for the mirror itself", tc.bound, ns)
			}
		}
	}
}

// fakeListener is a listener that only has an address.
type fakeListener struct{ addr net.Addr }

func (l fakeListener) Accept() (net.Conn, error) { return nil, net.ErrClosed }
func (l fakeListener) Close() error              { return nil }
func (l fakeListener) Addr() net.Addr            { return l.addr }

// TestBlobIndexQueue checks that a failed report goes back under the
// changes queued since, which win.
func TestBlobIndexQueue(t *testing.T) {
	t.Parallel()
	x := newBlobIndex(nil)
	x.full = false
	a, b, c := digest.FromString("a"), digest.FromString("b"), digest.FromString("c")
	x.changed(a, true)
	x.changed(b, true)
	x.changed(b, false)
	rep, ok, err := x.take()
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	if !slices.Equal(rep.Add, []string{a.String()}) || !slices.Equal(rep.Remove, []string{b.String()}) {
		t.Fatalf("report %+v", rep)
	}
	if _, ok, _ := x.take(); ok {
		t.Fatal("a second take found changes")
	}
	x.changed(a, false) // newer than the report's add of a
	x.changed(c, true)
	x.restore(rep)
	want := map[digest.Digest]bool{a: false, b: false, c: true}
	if len(x.pending) != len(want) {
		t.Fatalf("pending %v, want %v", x.pending, want)
	}
	for d, held := range want {
		if got, ok := x.pending[d]; !ok || got != held {
			t.Errorf("pending[%s] = %v %v, want %v", d, got, ok, held)
		}
	}
	if got := indexName("sha256:abc"); got != "sha256.abc" {
		t.Errorf("indexName: %s", got)
	}
}
