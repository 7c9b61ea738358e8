package fetch

import (
	"io"
	"net/http"
	"testing"
)

// BenchmarkWarmPull reads a 32 MiB layer over HTTP GET on loopback:
// through a node's mirror that holds it (a warm pull through the chain),
// and straight from CNCF Distribution, the reference.
//
//	go test -run '^$' -bench WarmPull ./images/fetch/
func BenchmarkWarmPull(b *testing.B) {
	dist := distribution(b, "")
	want := pushImage(b, dist, "big", "v1", []string{"linux/amd64"}, 32<<20)
	layer := want.Layers[0]
	size := int64(len(want.Blobs[layer]))
	a := newNode(b, "a", dist, func(c *Config) {
		c.Upstream = []Tier{newOrigin(b, func(c *OriginConfig) { c.Insecure = func(string) bool { return true } })}
	})
	client := &http.Client{Transport: clientTransport(b)}
	pull := func(b *testing.B, u string) {
		resp, err := client.Get(u)
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || n != size {
			b.Fatalf("GET %s: %d, %d bytes, %v", u, resp.StatusCode, n, err)
		}
	}
	for _, tc := range []struct{ name, url string }{
		{"outpost-chain-warm", "http://" + a.Mirror + "/v2/big/blobs/" + layer.String()},
		{"distribution", "http://" + dist + "/v2/big/blobs/" + layer.String()},
	} {
		pull(b, tc.url) // warms the chain's store
		b.Run(tc.name, func(b *testing.B) {
			b.SetBytes(size)
			for b.Loop() {
				pull(b, tc.url)
			}
		})
	}
}
