package jsclient_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/convergo/convergo/jsclient"
)

// An app serves the browser library from its own mux, beside its pages.
func ExampleHandler() {
	mux := http.NewServeMux()
	mux.Handle("/convergo/", http.StripPrefix("/convergo/", jsclient.Handler()))

	for _, p := range []string{"/convergo/index.js", "/convergo/index.d.ts"} {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("GET", p, nil))
		fmt.Println(p, rec.Code, rec.Header().Get("Content-Type"))
	}
	// Output:
	// /convergo/index.js 200 text/javascript; charset=utf-8
	// /convergo/index.d.ts 200 application/typescript; charset=utf-8
}
