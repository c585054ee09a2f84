package transport

import (
	"context"
	"io"
	"net/http"
	"time"
)

// probeCollection is the collection /readyz reads the head of, within
// readyTimeout. /readyz also fails while the engine's commits keep failing
// (engine.WriteHealth): a store can answer reads while refusing writes;
// and while the server's clock is off the store's (engine.ClockHealth,
// clockRefusal).
const (
	probeCollection = "convergo.readyz"
	readyTimeout    = 5 * time.Second
)

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.WriteString(w, "ok\n")
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
	defer cancel()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if s.isClosing() {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "shutting down\n")
		return
	}
	if _, err := s.eng.Head(ctx, probeCollection); err != nil {
		s.log.Warn("readiness probe failed", "err", err)
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "store unavailable\n")
		return
	}
	if err := s.eng.WriteHealth(); err != nil {
		s.log.Warn("readiness: store writes failing", "err", err)
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "store writes failing\n")
		return
	}
	if err := s.eng.ClockHealth(); err != nil {
		// The engine logs it at ERROR at each check (clockRefusal).
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "server clock off the store's: "+err.Error()+"\n")
		return
	}
	_, _ = io.WriteString(w, "ok\n")
}
