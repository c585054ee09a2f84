package transport_test

import (
	"context"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/jsclient"
	"github.com/convergo/convergo/stores/memory"
	"github.com/convergo/convergo/transport"
	"github.com/convergo/convergo/transport/client"
)

// An app mounts the sync server under /sync on its own mux, beside its
// pages and the browser library; metrics are served only where the app
// puts them; one call stops it all.
func ExampleServer_Mount() {
	store := memory.New()
	defer store.Close()
	eng, err := engine.Open(engine.Config{Store: store})
	if err != nil {
		log.Fatal(err)
	}
	defer eng.Close()
	srv, err := transport.New(transport.Config{Engine: eng, Demo: true})
	if err != nil {
		log.Fatal(err)
	}

	mux := http.NewServeMux()
	srv.Mount(mux, "/sync")
	mux.Handle("/convergo/", http.StripPrefix("/convergo/", jsclient.Handler()))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "the app") })
	ops := http.NewServeMux() // an internal listener, in a real app
	ops.Handle("/metrics", srv.MetricsHandler())

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(ln)
	base := "http://" + ln.Addr().String()

	// The Go client (like the browser's) takes the prefixed URL as its base.
	c, err := client.New(client.Config{URL: base + "/sync", Device: "tab1"})
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	if _, err := c.Hello(ctx); err != nil {
		log.Fatal(err)
	}
	r, err := client.NewReplica(c, client.ReplicaConfig{Collections: []string{transport.DemoCollection}})
	if err != nil {
		log.Fatal(err)
	}
	if err := r.SetDoc(transport.DemoCollection, "t1", map[string]any{"title": "Buy milk"}); err != nil {
		log.Fatal(err)
	}
	if err := r.Sync(ctx); err != nil {
		log.Fatal(err)
	}
	doc, _ := eng.Get(ctx, transport.DemoCollection, "t1")
	fmt.Println("the engine holds:", doc["title"])

	for _, p := range []string{"/sync/healthz", "/sync/metrics", "/convergo/index.js"} {
		resp, err := http.Get(base + p)
		if err != nil {
			log.Fatal(err)
		}
		resp.Body.Close()
		fmt.Println(p, resp.StatusCode)
	}
	rec := httptest.NewRecorder()
	ops.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	fmt.Println("ops /metrics", rec.Code, strings.Contains(rec.Body.String(), "convergo_push_changes_total"))

	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	fmt.Println("shutdown:", srv.ShutdownServers(sctx, hs))
	// Output:
	// the engine holds: Buy milk
	// /sync/healthz 200
	// /sync/metrics 404
	// /convergo/index.js 200
	// ops /metrics 200 true
	// shutdown: <nil>
}
