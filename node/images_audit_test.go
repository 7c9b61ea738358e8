package node_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/outpost-mesh/outpost/node"
)

// pushAs pushes a random image to ref with token as the password and
// returns the registry's status code (0 for success).
func pushAs(t *testing.T, ref name.Reference, token string) int {
	t.Helper()
	img, err := random.Image(1000, 1)
	if err != nil {
		t.Fatal(err)
	}
	auth := authn.Anonymous
	if token != "" {
		auth = &authn.Basic{Username: "outpost", Password: token}
	}
	err = remote.Write(ref, img, remote.WithAuth(auth), remote.WithContext(t.Context()))
	var terr *transport.Error
	switch {
	case err == nil:
		return 0
	case errors.As(err, &terr):
		return terr.StatusCode
	}
	t.Fatalf("push %s: %v", ref, err)
	return 0
}

// TestRegistryPushRolesAndAudit: a push to the hub's own registry takes a
// token whose role may write repositories (operator or admin): a viewer's
// is refused with 403, none with 401; the pushes made, the deletes and the
// refusals are in the audit log with the user, the image and the source.
func TestRegistryPushRolesAndAudit(t *testing.T) {
	t.Parallel()
	var mirror string
	hub := startNode(t, mirrorAt(t, &mirror), func(c *node.Config) { c.RegistryPush = true })
	viewer := strings.TrimPrefix(hub.createAccessToken(t, "looker", node.RoleViewer), "Bearer ")
	operator := strings.TrimPrefix(hub.createAccessToken(t, "builder", node.RoleOperator), "Bearer ")
	ref, err := name.ParseReference(mirror+"/team/app:v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if code := pushAs(t, ref, ""); code != http.StatusUnauthorized {
		t.Errorf("push without a token: %d, want 401", code)
	}
	if code := pushAs(t, ref, viewer); code != http.StatusForbidden {
		t.Errorf("push with a viewer's token: %d, want 403", code)
	}
	if code := pushAs(t, ref, operator); code != 0 {
		t.Fatalf("push with an operator's token: %d, want it to succeed", code)
	}
	desc, err := remote.Head(ref, remote.WithAuth(&authn.Basic{Username: "x", Password: operator}), remote.WithContext(t.Context()))
	if err != nil {
		t.Fatal(err)
	}
	digest := ref.Context().Digest(desc.Digest.String())
	if err := remote.Delete(digest, remote.WithAuth(&authn.Basic{Username: "x", Password: operator}), remote.WithContext(t.Context())); err != nil {
		t.Fatalf("delete with an operator's token: %v", err)
	}

	for _, tc := range []struct {
		what  string
		match func(e node.AuditEventSpec) bool
	}{
		{"the push", func(e node.AuditEventSpec) bool {
			return e.User == "builder" && e.Role == node.RoleOperator && e.Verb == "push" && e.Subresource == "manifests" &&
				e.Name == "team/app:v1" && e.Code == http.StatusCreated && e.Source == "127.0.0.1" && e.Group == "images.outpost.dev"
		}},
		{"the delete", func(e node.AuditEventSpec) bool {
			return e.User == "builder" && e.Verb == "delete" && e.Name == "team/app@"+desc.Digest.String() && e.Code < 300
		}},
		{"the viewer's refused push", func(e node.AuditEventSpec) bool {
			return e.User == "looker" && e.Verb == "push" && e.Code == http.StatusForbidden && strings.Contains(e.Message, "pushing takes operator")
		}},
		{"the push without a token", func(e node.AuditEventSpec) bool {
			return e.User == "" && e.Verb == "push" && e.Code == http.StatusUnauthorized
		}},
	} {
		hub.findEvent(t, tc.what, tc.match)
	}
	for _, e := range hub.auditEvents(t) {
		if e.Verb == "push" && e.Subresource == "blobs" && e.Code < 400 {
			t.Errorf("a blob upload is in the audit log: %+v (the manifest stands for the push)", e)
		}
	}
}
