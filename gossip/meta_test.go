package gossip

import (
	"errors"
	"strings"
	"testing"

	"github.com/hashicorp/memberlist"
)

func TestMetaRoundTrip(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		meta Meta
	}{
		{"empty", Meta{}},
		{"minimal", Meta{Name: "n1", Site: "a"}},
		{"full", Meta{
			Name: "edge-7", Site: "factory-3", Role: "edge", Version: "v1.2.3-rc.1+abc",
			OS: "linux", Arch: "arm64", QUICAddr: "10.0.0.7:7443", APIAddr: "[fe80::1]:7080",
			Labels:    map[string]string{"zone": "north", "example.com/gpu": "", "ünïcode": "✓"},
			RaftVoter: true,
		}},
		{"stateless", Meta{Name: "sim-1", Site: "a", Stateless: true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			for _, leaving := range []bool{false, true} {
				b, err := tc.meta.encode(leaving)
				if err != nil {
					t.Fatal(err)
				}
				got, gotLeaving, err := decodeMeta(b)
				if err != nil {
					t.Fatal(err)
				}
				if !got.equal(tc.meta) || gotLeaving != leaving {
					t.Errorf("decode(encode(%+v, %v)) = %+v, %v", tc.meta, leaving, got, gotLeaving)
				}
			}
			// Appended fields are ignored, for forward compatibility.
			b, _ := tc.meta.Encode()
			if got, err := DecodeMeta(append(b, 0xff, 0x01)); err != nil || !got.equal(tc.meta) {
				t.Errorf("with trailing bytes: %+v, %v", got, err)
			}
		})
	}
}

func TestMetaEncodingIsCompactAndStable(t *testing.T) {
	t.Parallel()
	m := Meta{Name: "n", Site: "s", Labels: map[string]string{"b": "2", "a": "1", "c": "3"}}
	first, _ := m.Encode()
	for range 20 {
		if b, _ := m.Encode(); string(b) != string(first) {
			t.Fatal("encoding depends on map order")
		}
	}
	// Version, flags, eight one-byte lengths, 'n', 's', the label count
	// and three labels of four bytes.
	if want := 2 + 8 + 2 + 1 + 3*4; len(first) != want {
		t.Errorf("encoded %d bytes, want %d", len(first), want)
	}
}

func TestMetaAtTheLimit(t *testing.T) {
	t.Parallel()
	m := Meta{Name: "n", Site: "s", Labels: map[string]string{"k": ""}}
	base, _ := m.Encode()
	// Grow one value to land exactly on the limit, then one byte over. A
	// value of 127 bytes or less has a one-byte length; past it, two.
	room := memberlist.MetaMaxSize - len(base)
	m.Labels["k"] = strings.Repeat("v", room-1) // its length takes a second byte
	if b, err := m.Encode(); err != nil || len(b) != memberlist.MetaMaxSize {
		t.Fatalf("at the limit: %d bytes, %v", len(b), err)
	}
	m.Labels["k"] += "v"
	_, err := m.Encode()
	if !errors.Is(err, ErrMetaTooLarge) || !strings.Contains(err.Error(), "513 bytes is 1 over") {
		t.Errorf("one byte over: %v", err)
	}
}

func TestDecodeMetaRejectsGarbage(t *testing.T) {
	t.Parallel()
	full, _ := Meta{Name: "node", Site: "site", Labels: map[string]string{"k": "v"}}.Encode()
	// Every strict prefix of a valid encoding is truncated somewhere.
	for i := range len(full) - 1 {
		if _, err := DecodeMeta(full[:i]); !errors.Is(err, ErrBadMeta) {
			t.Errorf("prefix of %d bytes: %v, want ErrBadMeta", i, err)
		}
	}
	tests := []struct {
		name string
		b    []byte
	}{
		{"nil", nil},
		{"other version", append([]byte{2}, full[1:]...)},
		{"huge string", []byte{1, 0, 0xff, 0xff, 0xff, 0xff, 0x0f}},
		{"huge label count", append(append([]byte{}, full[:len(full)-5]...), 0xff, 0xff, 0x03)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if _, err := DecodeMeta(tc.b); !errors.Is(err, ErrBadMeta) {
				t.Errorf("DecodeMeta(%x) = %v, want ErrBadMeta", tc.b, err)
			}
		})
	}
}
