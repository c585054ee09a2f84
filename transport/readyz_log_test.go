package transport

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// recordHandler keeps every record logged through it.
type recordHandler struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r.Clone())
	return nil
}
func (h *recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordHandler) WithGroup(string) slog.Handler      { return h }

// readiness returns the records about readiness (their message starts
// "readiness") logged from the from-th on, and the count of all records.
func (h *recordHandler) readiness(from int) (recs []slog.Record, n int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range h.records[from:] {
		if strings.HasPrefix(r.Message, "readiness") {
			recs = append(recs, r)
		}
	}
	return recs, len(h.records)
}

func attr(r slog.Record, key string) (v slog.Value, ok bool) {
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v, ok = a.Value, true
			return false
		}
		return true
	})
	return v, ok
}

// /readyz logged a WARN at every call that failed: a load balancer
// probing every second while the store is down filled the log with one
// line a second per prober. It logs the transition now (ready to not
// ready, with the error, at WARN; back, at INFO) and, while it stays not
// ready, the error again at most once per readyLogEvery of the server's
// clock.
func TestReadyzLogsTransitionsNotEveryCall(t *testing.T) {
	logs := &recordHandler{}
	var clock atomic.Int64
	clock.Store(time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC).UnixNano())
	ts := newTestServer(t, func(c *Config) {
		c.Logger = slog.New(logs)
		c.Now = func() time.Time { return time.Unix(0, clock.Load()) }
	})
	st := &probeCountingStore{Store: ts.store}
	ts.serveOver(t, st)
	if code, _ := ts.get(t, "/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz %d, want 200", code)
	}
	if recs, _ := logs.readiness(0); len(recs) != 0 {
		t.Fatalf("ready from the start: %d records about readiness, want none", len(recs))
	}

	// The store goes down: wait for /readyz to see it, then call it on.
	st.down.Store(true)
	_, from := logs.readiness(0)
	deadline := time.Now().Add(2*readyProbeFresh + 5*time.Second)
	for {
		code, _ := ts.get(t, "/readyz")
		if code == http.StatusServiceUnavailable {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz still %d after the store went down", code)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for range 50 {
		if code, _ := ts.get(t, "/readyz"); code != http.StatusServiceUnavailable {
			t.Fatalf("/readyz %d with the store down, want 503", code)
		}
	}
	recs, next := logs.readiness(from)
	if len(recs) != 1 {
		t.Fatalf("51 failing calls of /readyz logged %d records about readiness, want 1 (the transition)", len(recs))
	}
	if r := recs[0]; r.Level != slog.LevelWarn {
		t.Fatalf("the transition to not ready logged at %v, want WARN", r.Level)
	} else if e, ok := attr(r, "err"); !ok || e.String() == "" {
		t.Fatalf("the transition to not ready logged without the error: %q", r.Message)
	}

	// Still down a readyLogEvery later: said once more.
	clock.Add(int64(readyLogEvery))
	for range 20 {
		ts.get(t, "/readyz")
	}
	if recs, n := logs.readiness(next); len(recs) != 1 || recs[0].Level != slog.LevelWarn {
		t.Fatalf("still down after %v: %d records, want 1 WARN", readyLogEvery, len(recs))
	} else {
		next = n
	}

	// Back: one INFO, and no more.
	st.down.Store(false)
	deadline = time.Now().Add(2*readyProbeFresh + 5*time.Second)
	for {
		code, _ := ts.get(t, "/readyz")
		if code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz still %d after the store came back", code)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for range 20 {
		ts.get(t, "/readyz")
	}
	if recs, _ := logs.readiness(next); len(recs) != 1 || recs[0].Level != slog.LevelInfo {
		t.Fatalf("back to ready: %d records about readiness, want 1 INFO", len(recs))
	}
}
