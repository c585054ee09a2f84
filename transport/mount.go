package transport

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
)

// Embedding the server in an application's own HTTP server: Handler (the
// protocol and health checks, never /metrics), Mount (the same under a
// path prefix of the app's mux), MetricsHandler (opt-in: the app decides
// where its metrics are served, if at all) and ShutdownServers (one call
// that ends live sessions and drains HTTP together).

// Handler returns the protocol's endpoints and /healthz and /readyz (the
// Server itself): never /metrics, which an app serves only where it
// chooses (MetricsHandler).
func (s *Server) Handler() http.Handler { return s }

// Mount serves Handler on mux under prefix ("/sync": the protocol at
// /sync/v2/..., health at /sync/healthz). Clients take the prefixed URL as
// their base ("https://app.example.com/sync"); both the browser library
// and the Go client append the protocol's paths to it. An empty prefix
// mounts at the root. Mount panics, as http.ServeMux.Handle does, when
// prefix is not empty and not a path starting with "/" without a trailing
// "/", or when the pattern is already registered.
func (s *Server) Mount(mux *http.ServeMux, prefix string) {
	if prefix != "" && (!strings.HasPrefix(prefix, "/") || strings.HasSuffix(prefix, "/")) {
		panic(fmt.Sprintf("transport: Mount prefix %q: want \"\" or /path without a trailing /", prefix))
	}
	mux.Handle(prefix+"/", http.StripPrefix(prefix, s.Handler()))
}

// MetricsHandler returns the Prometheus handler of the server's registry
// (Config.Metrics when it is a prometheus.Gatherer, else the server's
// own), or a handler answering 404 when there is none. Metrics name
// routes, counts and limits, so an app serves them only where operators
// reach them: on an internal listener, or behind its own auth.
func (s *Server) MetricsHandler() http.Handler {
	h := s.metricsHandler
	if h == nil {
		h = http.NotFoundHandler()
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.setDeadlines(w) // the same deadlines as every route of the server
		h.ServeHTTP(w, r)
	})
}

// WithMetrics returns the server with MetricsHandler at /metrics beside
// it, as the binary serves them on one listener. It routes by the exact
// path, where an http.ServeMux in front would answer a path it cleans
// (/v2//hello, /v2) with a redirect page of its own, before the server
// answers it in the protocol's error form (docs/protocol.md, section 1).
func (s *Server) WithMetrics() http.Handler {
	metrics := s.MetricsHandler()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/metrics" {
			metrics.ServeHTTP(w, r)
			return
		}
		s.ServeHTTP(w, r)
	})
}

// ShutdownServers stops gracefully in one call: it closes the server's
// live sessions (Shutdown) and drains the HTTP servers that serve it
// (http.Server.Shutdown, which does not see hijacked WebSockets) at the
// same time, and waits for both or for ctx. It returns their errors
// joined.
func (s *Server) ShutdownServers(ctx context.Context, servers ...*http.Server) error {
	errs := make([]error, len(servers)+1)
	var wg sync.WaitGroup
	for i, hs := range servers {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = hs.Shutdown(ctx) }()
	}
	errs[len(servers)] = s.Shutdown(ctx)
	wg.Wait()
	return errors.Join(errs...)
}
