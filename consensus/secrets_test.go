package consensus

import (
	"bytes"
	"crypto/rand"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/outpost-mesh/outpost/internal/seal"
)

// Safe is a test kind with write-only fields: a []byte and a nested string.
type safeSpec struct {
	Owner  string     `json:"owner,omitempty"`
	Blob   []byte     `json:"blob,omitempty"`
	Access safeAccess `json:"access,omitzero"`
}

type safeAccess struct {
	User     string `json:"user,omitempty"`
	Password string `json:"password,omitempty"`
}

func safeKindDef() Kind {
	return Kind{
		Group: "test.outpost.dev", Version: "v1", Kind: "Safe", Plural: "safes",
		NewSpec: func() any { return &safeSpec{} },
		Secrets: []string{"blob", "access.password"},
	}
}

func withSealer(t testing.TB) clusterOption {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	box, err := seal.New(k)
	if err != nil {
		t.Fatal(err)
	}
	return func(c *Config) { c.Sealer = box }
}

func safeObject(name string, spec safeSpec) *Object {
	obj := &Object{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := obj.SetSpec(spec); err != nil {
		panic(err)
	}
	return obj
}

func TestSecretsSealedAtRest(t *testing.T) {
	c := newTestGroup(t, withSealer(t))
	s := c.Store(0)
	k, _ := c.reg.ForKind("test.outpost.dev/v1", "Safe")
	kubeconfig := []byte("apiVersion: v1\nkind: Config\n# very secret\n")
	created := mustCreate(t, s, k, safeObject("a", safeSpec{Owner: "ops", Blob: kubeconfig, Access: safeAccess{User: "u", Password: "hunter2"}}))

	// What Raft stored holds neither secret.
	for _, plain := range []string{"very secret", "hunter2", "IyB2ZXJ5IHNlY3JldA"} {
		if strings.Contains(string(created.Spec), plain) {
			t.Fatalf("stored spec holds %q: %s", plain, created.Spec)
		}
	}
	var stored safeSpec
	if err := created.DecodeSpec(&stored); err != nil {
		t.Fatalf("a sealed []byte field must still decode: %v", err)
	}
	if stored.Owner != "ops" || stored.Access.User != "u" {
		t.Fatalf("plain fields changed: %+v", stored)
	}

	open := func(o *Object) safeSpec {
		t.Helper()
		u, err := s.Unseal(k, o)
		if err != nil {
			t.Fatal(err)
		}
		var sp safeSpec
		if err := u.DecodeSpec(&sp); err != nil {
			t.Fatal(err)
		}
		return sp
	}
	if sp := open(created); !bytes.Equal(sp.Blob, kubeconfig) || sp.Access.Password != "hunter2" {
		t.Fatalf("unsealed %+v", sp)
	}

	// Redact drops the secrets and keeps the rest.
	red := k.Redact(created)
	if strings.Contains(string(red.Spec), "blob") || strings.Contains(string(red.Spec), "password") || !strings.Contains(string(red.Spec), `"user":"u"`) {
		t.Fatalf("redacted spec %s", red.Spec)
	}

	// An update that leaves the secrets out (what a client read back) keeps them.
	upd := red.DeepCopy()
	upd.Spec = []byte(`{"owner":"platform","access":{"user":"u"}}`)
	out, err := s.Update(t.Context(), k, upd)
	if err != nil {
		t.Fatal(err)
	}
	if sp := open(out); sp.Owner != "platform" || !bytes.Equal(sp.Blob, kubeconfig) || sp.Access.Password != "hunter2" {
		t.Fatalf("after update without secrets: %+v", sp)
	}

	// Resending the same plaintext keeps the same ciphertext.
	again := safeObject("a", safeSpec{Owner: "platform", Blob: kubeconfig, Access: safeAccess{User: "u", Password: "hunter2"}})
	out2, err := s.Update(t.Context(), k, again)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out2.Spec, out.Spec) {
		t.Fatalf("same secrets resealed:\n%s\n%s", out.Spec, out2.Spec)
	}

	// A patch replaces one secret and keeps the other.
	out3, err := s.Patch(t.Context(), k, "", "a", []byte(`{"spec":{"access":{"password":"correct horse"}}}`), false)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out3.Spec), "correct horse") {
		t.Fatalf("patched secret stored in the clear: %s", out3.Spec)
	}
	if sp := open(out3); sp.Access.Password != "correct horse" || !bytes.Equal(sp.Blob, kubeconfig) {
		t.Fatalf("after patch: %+v", sp)
	}

	// A sealed value copied into another object does not open there.
	var sealed map[string]any
	_ = out3.DecodeSpec(&sealed)
	stolen := &Object{ObjectMeta: metav1.ObjectMeta{Name: "b"}}
	_ = stolen.SetSpec(sealed)
	b := mustCreate(t, s, k, stolen)
	if _, err := s.Unseal(k, b); err == nil {
		t.Fatal("a ciphertext moved to another object opened")
	}
}

func TestSecretsNeedASealer(t *testing.T) {
	c := newTestGroup(t)
	s := c.Store(0)
	k, _ := c.reg.ForKind("test.outpost.dev/v1", "Safe")
	_, err := s.Create(t.Context(), k, safeObject("a", safeSpec{Access: safeAccess{Password: "x"}}))
	if !apierrors.IsInternalError(err) || !strings.Contains(err.Error(), "spec.access.password") {
		t.Fatalf("create without a sealer: %v", err)
	}
	// Without secrets the kind is writable.
	mustCreate(t, s, k, safeObject("b", safeSpec{Owner: "x"}))
	// A secret of the wrong type is a 400 naming the field.
	_, err = s.Create(t.Context(), k, &Object{ObjectMeta: metav1.ObjectMeta{Name: "c"}, Spec: []byte(`{"access":{"password":7}}`)})
	if !apierrors.IsBadRequest(err) {
		t.Fatalf("numeric password: %v", err)
	}
}
