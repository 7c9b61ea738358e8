package fetch

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"golang.org/x/crypto/bcrypt"
)

// TestErrorsThroughTheHandler checks the OCI errors a client sees through
// a node's mirror when the origin does not have what is asked, or is down.
func TestErrorsThroughTheHandler(t *testing.T) {
	t.Parallel()
	origin := newOriginProxy(t, distribution(t, ""))
	ns := origin.Addr
	want := pushImage(t, ns, "app", "v1", []string{"linux/amd64"}, 1000)
	a := newNode(t, "a", ns, func(c *Config) { c.Upstream = []Tier{newOrigin(t, nil)} })
	missing := "sha256:" + fmt.Sprintf("%064x", 42)
	base := "http://" + a.Mirror + "/v2/"
	cases := []struct {
		name, path string
		status     int
		code       string
	}{
		{"unknown tag", "app/manifests/nope", 404, "MANIFEST_UNKNOWN"},
		{"unknown manifest digest", "app/manifests/" + missing, 404, "MANIFEST_UNKNOWN"},
		{"unknown repository", "nothing/here/manifests/v1", 404, "MANIFEST_UNKNOWN"},
		{"unknown blob", "app/blobs/" + missing, 404, "BLOB_UNKNOWN"},
		{"tags of an unknown repository", "nothing/here/tags/list", 404, "NAME_UNKNOWN"},
		{"malformed digest", "app/blobs/sha256:xyz", 400, "DIGEST_INVALID"},
		{"known tag", "app/manifests/v1", 200, ""},
		{"known blob", "app/blobs/" + want.Layers[0].String(), 200, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body, err := get(t, "GET", base+tc.path)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.status || ociCode(body) != tc.code {
				t.Fatalf("GET %s: %d %s, want %d %s", tc.path, resp.StatusCode, body, tc.status, tc.code)
			}
		})
	}

	// With the origin down, what is not here is UNAVAILABLE; what is here
	// is served.
	origin.down.Store(true)
	for _, path := range []string{"app/manifests/other", "app/blobs/" + missing, "other/tags/list"} {
		resp, body, err := get(t, "GET", base+path)
		if err != nil || resp.StatusCode != http.StatusServiceUnavailable || ociCode(body) != "UNAVAILABLE" {
			t.Fatalf("GET %s with the origin down: %v %d %s", path, err, resp.StatusCode, body)
		}
	}
	resp, body, err := get(t, "GET", base+"app/blobs/"+want.Layers[0].String())
	if err != nil || resp.StatusCode != 200 || len(body) != len(want.Blobs[want.Layers[0]]) {
		t.Fatalf("a stored blob with the origin down: %v %d", err, resp.StatusCode)
	}
}

// TestOriginCredentials pulls from an origin that requires a password:
// the Auth callback's credentials are used; wrong ones are DENIED.
func TestOriginCredentials(t *testing.T) {
	t.Parallel()
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	htpasswd := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(htpasswd, []byte("puller:"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dist := distribution(t, fmt.Sprintf("auth:\n  htpasswd:\n    realm: outpost-test\n    path: %s\n", htpasswd))
	want := pushImageAuth(t, &authn.Basic{Username: "puller", Password: "s3cret"}, dist, "private/app", "v1", []string{"linux/amd64"}, 5000)

	for _, tc := range []struct {
		name     string
		password string
		status   int
		code     string
	}{
		{"right password", "s3cret", 200, ""},
		{"wrong password", "guess", 403, "DENIED"},
		{"anonymous", "", 403, "DENIED"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var asked []string
			org := newOrigin(t, func(c *OriginConfig) {
				c.Insecure = func(ns string) bool { return ns == dist }
				c.Auth = func(ns string) authn.Authenticator {
					asked = append(asked, ns)
					if tc.password == "" {
						return nil
					}
					return &authn.Basic{Username: "puller", Password: tc.password}
				}
			})
			a := newNode(t, "a", dist, func(c *Config) { c.Upstream = []Tier{org} })
			resp, body, err := get(t, "GET", "http://"+a.Mirror+"/v2/private/app/manifests/v1")
			if err != nil || resp.StatusCode != tc.status || ociCode(body) != tc.code {
				t.Fatalf("GET: %v %d %s", err, resp.StatusCode, body)
			}
			if len(asked) == 0 || asked[0] != dist {
				t.Fatalf("Auth was asked for %v", asked)
			}
			if tc.status == 200 {
				pullAll(t, a.Mirror, "private/app", "v1", want)
			}
		})
	}
}
