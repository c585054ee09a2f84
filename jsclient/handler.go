package jsclient

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
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
//
// It also serves ModulesFile, the list of the library's ES modules.
func Handler() http.Handler {
	lib := Library()
	list, err := modules(lib)
	if err != nil {
		panic(err) // unreachable: the library is embedded
	}
	files := Files(lib)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if path.Clean("/"+r.URL.Path) != "/"+ModulesFile {
			files.ServeHTTP(w, r)
			return
		}
		if !served(w, r, ModulesFile) {
			return
		}
		http.ServeContent(w, r, ModulesFile, time.Time{}, bytes.NewReader(list))
	})
}

// ModulesFile is the name under which Handler lists the library's ES
// modules (a JSON array of their paths, relative to where it is mounted,
// sorted): every one, those an app loads only on demand too, so that a
// service worker can cache them all while the page is online (the demo's
// does: an offline page may need one it never loaded, src/wiped.js when
// it finds its database wiped, say).
const ModulesFile = "modules.json"

// modules is ModulesFile's content for the library lib: its .js files.
func modules(lib fs.FS) ([]byte, error) {
	list := []string{}
	err := fs.WalkDir(lib, ".", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && path.Ext(p) == ".js" {
			list = append(list, p) // lexical order, WalkDir's
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list the library's modules: %w", err)
	}
	return json.Marshal(list)
}

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
		name := r.URL.Path
		if name == "" || strings.HasSuffix(name, "/") {
			name += "index.html"
		}
		if served(w, r, name) {
			files.ServeHTTP(w, r)
		}
	})
}

// served answers 405 to a method other than GET and HEAD and reports
// false; otherwise it sets the headers of file name (its content type,
// nosniff, no-cache) and reports true.
func served(w http.ResponseWriter, r *http.Request, name string) bool {
	h := w.Header()
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return false
	}
	if ct, ok := contentTypes[path.Ext(name)]; ok {
		h.Set("Content-Type", ct)
	}
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-cache")
	return true
}
