package jsclient_test

import (
	"encoding/json"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/convergo/convergo/jsclient"
)

func serveLibrary(t *testing.T, method, p string) *httptest.ResponseRecorder {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("/convergo/", http.StripPrefix("/convergo/", jsclient.Handler()))
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(method, p, nil))
	return rec
}

// The list of modules is what a service worker precaches (the demo's
// does): every ES module the handler serves, the ones an app loads only
// on demand too, and nothing else.
func TestHandlerListsEveryModule(t *testing.T) {
	rec := serveLibrary(t, http.MethodGet, "/convergo/"+jsclient.ModulesFile)
	if rec.Code != http.StatusOK {
		t.Fatalf("GET %s: got status %d, want 200", jsclient.ModulesFile, rec.Code)
	}
	for k, want := range map[string]string{"Content-Type": "application/json", "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"} {
		if got := rec.Header().Get(k); got != want {
			t.Errorf("%s: got %q, want %q", k, got, want)
		}
	}
	var listed []string
	if err := json.Unmarshal(rec.Body.Bytes(), &listed); err != nil {
		t.Fatalf("decode %s: %v\n%s", jsclient.ModulesFile, err, rec.Body)
	}
	var want []string
	err := fs.WalkDir(jsclient.Library(), ".", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".js") {
			want = append(want, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(listed, want) {
		t.Errorf("listed %q, want every .js file of the library %q", listed, want)
	}
	for _, m := range []string{"index.js", "leader.js", "upgrade.js", "wiped.js"} {
		if !slices.Contains(listed, m) {
			t.Errorf("%s is not listed", m)
		}
	}
	for _, m := range listed {
		if rec := serveLibrary(t, http.MethodGet, "/convergo/"+m); rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "text/javascript; charset=utf-8" {
			t.Errorf("GET %s: got %d %q, want 200 text/javascript", m, rec.Code, rec.Header().Get("Content-Type"))
		}
	}
}

func TestHandlerModulesFileMethods(t *testing.T) {
	if rec := serveLibrary(t, http.MethodHead, "/convergo/"+jsclient.ModulesFile); rec.Code != http.StatusOK || rec.Body.Len() != 0 {
		t.Errorf("HEAD: got %d with %d bytes, want 200 with none", rec.Code, rec.Body.Len())
	}
	rec := serveLibrary(t, http.MethodPost, "/convergo/"+jsclient.ModulesFile)
	if rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Allow") != "GET, HEAD" {
		t.Errorf("POST: got %d, Allow %q, want 405, Allow \"GET, HEAD\"", rec.Code, rec.Header().Get("Allow"))
	}
}
