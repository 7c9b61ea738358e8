package registry

import (
	"io"
	"net/http"
	"testing"
)

// BenchmarkBlobGet measures serving a stored 16 MiB blob over HTTP on
// loopback.
func BenchmarkBlobGet(b *testing.B) {
	srv := newServer(b, func(c *Config) { c.Push = true })
	blob := randomBlob(b, 16<<20)
	d := pushBlob(b, srv.URL, "bench/app", blob)
	url := srv.URL + "/v2/bench/app/blobs/" + d.String()
	b.SetBytes(int64(len(blob)))
	for b.Loop() {
		resp, err := http.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || n != int64(len(blob)) {
			b.Fatalf("%d bytes, %v", n, err)
		}
	}
}
