package grant_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"github.com/outpost-mesh/outpost/ota"
	"github.com/outpost-mesh/outpost/ota/grant"
)

// BenchmarkNew signs a site's assignment of 100 devices: together (one
// signature, a proof each) and, beside it, one signature per device, as
// the hub did before; and verifies one device's grant of the 100.
func BenchmarkNew(b *testing.B) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	req := grant.Request{Task: "t", UID: "u1", Site: "s", Attempt: 1,
		Steps: []ota.Step{{Name: "a", Type: "read", Path: "/etc/hostname"}}, TimeoutMillis: 1000}
	var nodes []string
	for i := range 100 {
		nodes = append(nodes, fmt.Sprintf("s001-n%02d", i))
	}
	exp := time.Now().Add(time.Hour)
	b.Run("together-100", func(b *testing.B) {
		for b.Loop() {
			if _, err := grant.New(key, req, nodes, exp); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("one-by-one-100", func(b *testing.B) {
		for b.Loop() {
			for _, n := range nodes {
				if _, err := grant.New(key, req, []string{n}, exp); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	gs, _ := grant.New(key, req, nodes, exp)
	r := req
	r.Node = nodes[57]
	b.Run("verify-1-of-100", func(b *testing.B) {
		for b.Loop() {
			if err := grant.Verify(&key.PublicKey, &gs[57], r, time.Now()); err != nil {
				b.Fatal(err)
			}
		}
	})
}
