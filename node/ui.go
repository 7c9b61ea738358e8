package node

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

// uiFiles is the web dashboard: plain HTML, CSS and JavaScript modules,
// served as they are (no build step). The pages hold no data: everything
// comes from the admin API with the token the user signs in with, kept in
// the tab's sessionStorage.
//
//go:embed ui
var uiFiles embed.FS

// uiAsset is one embedded file, ready to serve.
type uiAsset struct {
	body []byte
	etag string
}

// uiAssets loads the embedded files once, with a content hash as ETag.
func uiAssets() map[string]uiAsset {
	out := map[string]uiAsset{}
	_ = fs.WalkDir(uiFiles, "ui", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := uiFiles.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		out[strings.TrimPrefix(p, "ui/")] = uiAsset{body: b, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	return out
}

// uiPolicy keeps the dashboard to its own origin: no inline scripts, no
// third-party content, no framing.
const uiPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

// registerUI adds the dashboard (/ui/) and the caller's identity
// (/outpost/v1/whoami) to mux.
func (a *apiServer) registerUI(mux *http.ServeMux) {
	assets := uiAssets()
	mux.Handle("GET /{$}", http.RedirectHandler("/ui/", http.StatusFound))
	mux.Handle("GET /ui", http.RedirectHandler("/ui/", http.StatusMovedPermanently))
	mux.HandleFunc("GET /ui/{file...}", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("file")
		if name == "" {
			name = "index.html"
		}
		asset, ok := assets[path.Clean(name)]
		if !ok {
			http.NotFound(w, r)
			return
		}
		h := w.Header()
		h.Set("Content-Security-Policy", uiPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		// Revalidated on every load (cheap: an ETag match is a 304), so a
		// hub upgrade is never shown half old, half new.
		h.Set("Cache-Control", "no-cache")
		h.Set("ETag", asset.etag)
		if ct := uiContentType(name); ct != "" {
			h.Set("Content-Type", ct)
		}
		http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(asset.body))
	})
	mux.Handle("GET /outpost/v1/whoami", a.auth.require(http.HandlerFunc(serveWhoAmI)))
}

func uiContentType(name string) string {
	switch path.Ext(name) {
	case ".html":
		return "text/html; charset=utf-8"
	case ".js":
		return "text/javascript; charset=utf-8"
	case ".css":
		return "text/css; charset=utf-8"
	case ".svg":
		return "image/svg+xml"
	}
	return ""
}

// WhoAmI is the answer of GET /outpost/v1/whoami: the caller's token name
// and role, for clients (the dashboard) that adapt to what the caller may do.
type WhoAmI struct {
	Name string `json:"name"`
	Role string `json:"role"`
}

func serveWhoAmI(w http.ResponseWriter, r *http.Request) {
	p, _ := PrincipalFrom(r.Context())
	writeJSON(w, http.StatusOK, WhoAmI(p))
}
