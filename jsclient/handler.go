package jsclient

import (
	"io/fs"
	"net/http"
	"path"
	"strings"
)

// Handler serves the client library's ES modules (index.js, index.d.ts,
// ...) with explicit content types, so a page imports them with no build
// step. Mount it under a prefix with http.StripPrefix:
//
//	mux.Handle("/convergo/", http.StripPrefix("/convergo/", jsclient.Handler()))
//
// and import "/convergo/index.js". Files are served with Cache-Control
// no-cache (browsers revalidate, so a new server version is picked up at
// once) and X-Content-Type-Options nosniff; methods other than GET and
// HEAD get 405.
func Handler() http.Handler { return Files(Library()) }

// DemoHandler serves the demo app (index.html, app.js, ...) as Handler
// serves the library. The demo imports the library from /convergo/.
func DemoHandler() http.Handler { return Files(Demo()) }

// contentTypes are the types of the files the library and the demo are
// made of; mime.TypeByExtension depends on the host's tables and maps .ts
// to video.
var contentTypes = map[string]string{
	".js":   "text/javascript; charset=utf-8",
	".mjs":  "text/javascript; charset=utf-8",
	".ts":   "application/typescript; charset=utf-8", // .d.ts
	".css":  "text/css; charset=utf-8",
	".html": "text/html; charset=utf-8",
	".json": "application/json",
	".map":  "application/json",
	".svg":  "image/svg+xml",
	".png":  "image/png",
	".ico":  "image/x-icon",
	".txt":  "text/plain; charset=utf-8",
	".md":   "text/markdown; charset=utf-8",
}

// Files serves the files of fsys as Handler serves the library: explicit
// content types for the kinds of files above, no-cache, nosniff, GET and
// HEAD only; a path ending in / serves its index.html.
func Files(fsys fs.FS) http.Handler {
	files := http.FileServerFS(fsys)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		name := r.URL.Path
		if name == "" || strings.HasSuffix(name, "/") {
			name += "index.html"
		}
		h := w.Header()
		if ct, ok := contentTypes[path.Ext(name)]; ok {
			h.Set("Content-Type", ct)
		}
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}
