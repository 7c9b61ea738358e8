package node

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/outpost-mesh/outpost/consensus"
)

// The OpenAPI v3 documents below are what kubectl needs beyond discovery
// and tables: `kubectl apply` reads them to learn that the server validates
// fields itself (the fieldValidation parameter on PATCH), and otherwise
// refuses to apply without --validate=false. Patches are advertised as JSON
// merge patches only, so client-side apply sends a three-way merge patch;
// the schemas are open objects (the server's strict decoding is the
// validation), enough for kubectl and honest about what is checked where.

// registerKubectl adds the OpenAPI v3 routes to mux.
func (a *apiServer) registerKubectl(mux *http.ServeMux) {
	mux.Handle("GET /openapi/v3", a.auth.require(http.HandlerFunc(a.serveOpenAPIRoot)))
	mux.Handle("GET /openapi/v3/apis/{group}/{version}", a.auth.require(http.HandlerFunc(a.serveOpenAPIGroupVersion)))
}

// openAPIRoot is the /openapi/v3 discovery document.
type openAPIRoot struct {
	Paths map[string]openAPIRootPath `json:"paths"`
}

type openAPIRootPath struct {
	ServerRelativeURL string `json:"serverRelativeURL"`
}

// serveOpenAPIRoot lists one document per served group-version, each URL
// carrying a hash of its content so that clients cache it until it changes.
func (a *apiServer) serveOpenAPIRoot(w http.ResponseWriter, _ *http.Request) {
	root := openAPIRoot{Paths: map[string]openAPIRootPath{}}
	for _, g := range a.groups() {
		for _, v := range g.Versions {
			b, err := json.Marshal(a.openAPIDoc(g.Name, v.Version))
			if err != nil {
				writeError(w, err, a.log)
				return
			}
			sum := sha256.Sum256(b)
			root.Paths["apis/"+v.GroupVersion] = openAPIRootPath{
				ServerRelativeURL: "/openapi/v3/apis/" + v.GroupVersion + "?hash=" + strings.ToUpper(hex.EncodeToString(sum[:16])),
			}
		}
	}
	writeJSON(w, http.StatusOK, root)
}

func (a *apiServer) serveOpenAPIGroupVersion(w http.ResponseWriter, r *http.Request) {
	doc := a.openAPIDoc(r.PathValue("group"), r.PathValue("version"))
	if len(doc["paths"].(map[string]any)) == 0 {
		writeError(w, apierrors.NewNotFound(schemaGR(r.PathValue("group"), ""), r.PathValue("group")+"/"+r.PathValue("version")), a.log)
		return
	}
	if r.URL.Query().Get("hash") != "" {
		// The hash names this content: it never changes under that URL.
		w.Header().Set("Cache-Control", "public, immutable, max-age=31536000")
	}
	writeJSON(w, http.StatusOK, doc)
}

// openAPIDoc is the OpenAPI 3 document of one group-version: for each kind,
// its object path with get, put, patch and delete, and its collection path
// with list and create.
func (a *apiServer) openAPIDoc(group, version string) map[string]any {
	paths := map[string]any{}
	schemas := map[string]any{}
	for _, k := range a.reg.Kinds() {
		if k.Hidden || k.Group != group || k.Version != version {
			continue
		}
		ref := map[string]any{"$ref": "#/components/schemas/" + schemaName(k)}
		schemas[schemaName(k)] = kindSchema(k)
		gvk := map[string]any{"group": k.Group, "version": k.Version, "kind": k.Kind}
		body := map[string]any{"content": map[string]any{"application/json": map[string]any{"schema": ref}}}
		ok := map[string]any{"200": body}
		op := func(action string, params ...string) map[string]any {
			o := map[string]any{"x-kubernetes-action": action, "x-kubernetes-group-version-kind": gvk, "responses": ok}
			var ps []any
			for _, p := range params {
				ps = append(ps, map[string]any{"name": p, "in": "query", "schema": map[string]any{"type": "string"}})
			}
			if ps != nil {
				o["parameters"] = ps
			}
			return o
		}
		write := func(action string) map[string]any {
			o := op(action, "fieldManager", "fieldValidation")
			o["requestBody"] = body
			return o
		}
		patch := op("patch", "fieldManager", "fieldValidation")
		patch["requestBody"] = map[string]any{"content": map[string]any{"application/merge-patch+json": map[string]any{"schema": ref}}}
		collection := "/apis/" + k.Group + "/" + k.Version + "/"
		var pathParams []any
		if k.Namespaced {
			collection += "namespaces/{namespace}/"
			pathParams = append(pathParams, pathParam("namespace"))
		}
		collection += k.Plural
		coll := map[string]any{"get": op("list", "labelSelector", "fieldSelector", "watch", "resourceVersion")}
		item := map[string]any{"get": op("get"), "parameters": append(append([]any{}, pathParams...), pathParam("name"))}
		if !k.ReadOnly {
			coll["post"] = write("post")
			item["put"] = write("put")
			item["patch"] = patch
			item["delete"] = op("delete")
		}
		if pathParams != nil {
			coll["parameters"] = pathParams
		}
		paths[collection] = coll
		paths[collection+"/{name}"] = item
	}
	return map[string]any{
		"openapi":    "3.0.0",
		"info":       map[string]any{"title": "Outpost", "version": group + "/" + version},
		"paths":      paths,
		"components": map[string]any{"schemas": schemas},
	}
}

func pathParam(name string) map[string]any {
	return map[string]any{"name": name, "in": "path", "required": true, "schema": map[string]any{"type": "string"}}
}

// schemaName is a kind's schema name, reversed-domain style as Kubernetes
// names them: dev.outpost.ota.v1alpha1.Task.
func schemaName(k *consensus.Kind) string {
	parts := strings.Split(k.Group, ".")
	for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
		parts[i], parts[j] = parts[j], parts[i]
	}
	return strings.Join(parts, ".") + "." + k.Version + "." + k.Kind
}

// kindSchema is an open object schema naming the kind: spec and status are
// checked by the server's strict decoding, not by the client.
func kindSchema(k *consensus.Kind) map[string]any {
	open := map[string]any{"type": "object", "x-kubernetes-preserve-unknown-fields": true}
	return map[string]any{
		"type":                            "object",
		"description":                     k.Kind + " (" + k.APIVersion() + "); fields are validated by the server.",
		"x-kubernetes-group-version-kind": []any{map[string]any{"group": k.Group, "version": k.Version, "kind": k.Kind}},
		"properties": map[string]any{
			"apiVersion": map[string]any{"type": "string"},
			"kind":       map[string]any{"type": "string"},
			"metadata":   open,
			"spec":       open,
			"status":     open,
		},
	}
}
