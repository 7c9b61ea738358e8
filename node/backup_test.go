package node_test

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/outpost-mesh/outpost/consensus"
	imagesapi "github.com/outpost-mesh/outpost/images/api"
	"github.com/outpost-mesh/outpost/node"
)

// TestBackupRestore backs up a hub with sites, tokens, a task and a
// registry with credentials, starts a new hub from the file in an empty
// data dir, and finds every object with its uid, the old admin token
// working, and the registry's sealed password opening.
func TestBackupRestore(t *testing.T) {
	t.Parallel()
	old := startNode(t)
	old.createSite(t, "berlin", map[string]string{"tier": "1"}, map[string]any{"location": "DE"})
	viewer := old.createAccessToken(t, "viewer", node.RoleViewer)
	old.createToken(t, "berlin", 3, time.Now().Add(time.Hour))
	old.mustDo(t, call{method: http.MethodPost, path: tasksPath, body: taskJSON("hello", map[string]any{
		"targets": map[string]any{"nodes": []string{"node-1"}},
		"steps":   []map[string]any{{"name": "true", "type": "exec", "command": []string{"true"}}},
	})}, http.StatusCreated, nil)
	old.waitTask(t, "hello", ended)
	reg, _ := json.Marshal(map[string]any{
		"apiVersion": "images.outpost.dev/v1alpha1", "kind": "Registry", "metadata": map[string]any{"name": "harbor"},
		"spec": map[string]any{"domain": "harbor.example.com", "credentials": map[string]any{"username": "robot", "password": "s3cret"}},
	})
	old.mustDo(t, call{method: http.MethodPost, path: "/apis/images.outpost.dev/v1alpha1/namespaces/default/registries", body: reg}, http.StatusCreated, nil)

	// Every object of every kind, as the old hub holds them.
	store := old.node.Group().Store()
	want := map[string]string{} // kind/namespace/name → uid
	for _, k := range store.Registry().Kinds() {
		list, err := store.List(t.Context(), k, "", nil, consensus.ReadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range list.Items {
			want[k.Kind+"/"+o.Namespace+"/"+o.Name] = string(o.UID)
		}
	}

	if code, _ := old.do(t, call{method: http.MethodGet, path: "/outpost/v1/backup", auth: viewer}); code != http.StatusForbidden {
		t.Fatalf("backup as a viewer: %d, want 403", code)
	}
	code, body := old.do(t, call{method: http.MethodGet, path: "/outpost/v1/backup"})
	if code != http.StatusOK {
		t.Fatalf("backup: %d %s", code, body)
	}
	file := filepath.Join(t.TempDir(), "hub.backup")
	if err := os.WriteFile(file, body, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := node.PrepareRestore(old.dir, file); err == nil {
		t.Fatal("PrepareRestore into a data dir that holds a node succeeded")
	}

	dir := t.TempDir()
	if err := node.PrepareRestore(dir, file); err != nil {
		t.Fatal(err)
	}
	restored := startNode(t, func(c *node.Config) { c.DataDir = dir })
	restored.token = old.token // the old admin token is in the restored state
	eventually(t, 30*time.Second, func() error {
		_, err := os.Stat(filepath.Join(dir, "restore"))
		if err == nil {
			return os.ErrExist
		}
		return nil
	})
	rstore := restored.node.Group().Store()
	for _, k := range rstore.Registry().Kinds() {
		list, err := rstore.List(t.Context(), k, "", nil, consensus.ReadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range list.Items {
			key := k.Kind + "/" + o.Namespace + "/" + o.Name
			if uid, ok := want[key]; ok && uid != string(o.UID) {
				t.Errorf("%s: uid %s, want %s", key, o.UID, uid)
			}
			delete(want, key)
		}
	}
	for key := range want {
		t.Errorf("%s is missing after the restore", key)
	}
	restored.mustDo(t, call{method: http.MethodGet, path: sitesPath + "/berlin"}, http.StatusOK, nil)
	restored.mustDo(t, call{method: http.MethodGet, path: tasksPath + "/hello"}, http.StatusOK, nil)
	obj, err := rstore.Get(t.Context(), &imagesapi.RegistryKind, "default", "harbor", consensus.ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	open, err := rstore.Unseal(&imagesapi.RegistryKind, obj)
	if err != nil {
		t.Fatalf("the registry's sealed password does not open on the restored hub: %v", err)
	}
	var spec imagesapi.RegistrySpec
	_ = open.DecodeSpec(&spec)
	if spec.Credentials.Password != "s3cret" {
		t.Fatalf("restored password %q, want s3cret", spec.Credentials.Password)
	}
	// The restored hub makes its own admin credential too.
	creds, err := node.LoadCredentials(filepath.Join(dir, "admin.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	restored.mustDo(t, call{method: http.MethodGet, path: sitesPath, auth: "Bearer " + creds.Token}, http.StatusOK, nil)
}
