package client

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"
)

// runLive runs r.Live in the background until the test ends and returns
// its error channel.
func runLive(t *testing.T, r *Replica) <-chan error {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { errc <- r.Live(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("live: %v", err)
		}
	})
	return errc
}

func hasValue(r *Replica, coll, id, field string) bool {
	rec, ok := r.Get(coll, id)
	return ok && rec.Values()[field] != nil
}

func TestLiveStreamsChanges(t *testing.T) {
	f := newFakeServer(t)
	ctx := t.Context()
	a := newReplica(t, f, "a", nil, "c")
	b := newReplica(t, f, "b", nil, "c")
	if err := b.Set("c", "before", "f", 1); err != nil {
		t.Fatal(err)
	}
	if err := b.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	runLive(t, a)
	eventually(t, "the record written before subscribing", func() bool { return hasValue(a, "c", "before", "f") })
	if err := b.Set("c", "after", "f", 2); err != nil {
		t.Fatal(err)
	}
	if err := b.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the record written while subscribed", func() bool { return hasValue(a, "c", "after", "f") })
	if got, want := a.Cursor("c"), f.mustHead(t, "c"); got != want {
		t.Fatalf("cursor %d, want head %d", got, want)
	}
	if info, ok := a.Client().Info(); !ok || info.ServerReplica != "srv" {
		t.Fatalf("welcome not recorded: %+v", info)
	}
}

func TestLiveRedialsAndResumes(t *testing.T) {
	f := newFakeServer(t)
	ctx := t.Context()
	a := newReplica(t, f, "a", nil, "c")
	b := newReplica(t, f, "b", nil, "c")
	runLive(t, a)
	eventually(t, "a live connection", func() bool { return f.liveConns() == 1 })
	if f.control("drop") != 1 {
		t.Fatal("no connection to drop")
	}
	if err := b.Set("c", "r", "f", 1); err != nil {
		t.Fatal(err)
	}
	if err := b.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the change written while disconnected", func() bool { return hasValue(a, "c", "r", "f") })
}

func TestLiveResyncPullsAndResubscribes(t *testing.T) {
	f := newFakeServer(t)
	ctx := t.Context()
	a := newReplica(t, f, "a", nil, "c")
	b := newReplica(t, f, "b", nil, "c")
	runLive(t, a)
	eventually(t, "a live connection", func() bool { return f.liveConns() == 1 })
	// Write, then tell the client its stream stopped: it must catch up by
	// pulling and then receive later changes over the new subscription.
	if err := b.Set("c", "r1", "f", 1); err != nil {
		t.Fatal(err)
	}
	if err := b.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	f.control("resync:c")
	eventually(t, "the change before the resync", func() bool { return hasValue(a, "c", "r1", "f") })
	if err := b.Set("c", "r2", "f", 1); err != nil {
		t.Fatal(err)
	}
	if err := b.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the change after the resync", func() bool { return hasValue(a, "c", "r2", "f") })
	if f.liveConns() != 1 {
		t.Fatalf("resync redialled: %d connections", f.liveConns())
	}
}

func TestLiveDropsASilentConnection(t *testing.T) {
	f := newFakeServer(t)
	c := f.client(t, "a", func(cfg *Config) { cfg.PingInterval = 30 * time.Millisecond })
	r, err := NewReplica(c, ReplicaConfig{Collections: []string{"c"}})
	if err != nil {
		t.Fatal(err)
	}
	runLive(t, r)
	eventually(t, "a live connection", func() bool { return f.liveConns() == 1 })
	var first any
	f.mu.Lock()
	for conn := range f.conns {
		first = conn
	}
	f.mu.Unlock()
	f.control("mute")
	eventually(t, "a new connection after the old went silent", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		for conn := range f.conns {
			if any(conn) != first {
				return true
			}
		}
		return false
	})
}

func TestLiveStopsOnFatalErrors(t *testing.T) {
	t.Run("unauthenticated", func(t *testing.T) {
		f := newFakeServer(t)
		c := f.client(t, "a", func(cfg *Config) { cfg.Token = "bad" })
		err := c.Live(t.Context(), map[string]uint64{"c": 0}, func(string, []Entry, uint64) {})
		if !errors.Is(err, ErrUnauthenticated) {
			t.Fatalf("got %v, want ErrUnauthenticated", err)
		}
	})
	t.Run("forbidden", func(t *testing.T) {
		f := newFakeServer(t)
		c := f.client(t, "a", nil)
		errc := make(chan error, 1)
		go func() { errc <- c.Live(t.Context(), map[string]uint64{"c": 0}, func(string, []Entry, uint64) {}) }()
		eventually(t, "a live connection", func() bool { return f.liveConns() == 1 })
		f.control("forbid")
		select {
		case err := <-errc:
			var e *Error
			if !errors.As(err, &e) || e.Code != CodeForbidden || e.Status != 0 {
				t.Fatalf("got %v, want a forbidden error message", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Live kept going after a fatal error")
		}
	})
	t.Run("refused upgrade", func(t *testing.T) {
		f := newFakeServer(t)
		f.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			writeError(w, http.StatusForbidden, CodeForbidden, "origin not allowed")
		})
		c := f.client(t, "a", nil)
		err := c.Live(t.Context(), map[string]uint64{"c": 0}, func(string, []Entry, uint64) {})
		var e *Error
		if !errors.As(err, &e) || e.Status != 403 || e.Message != "origin not allowed" {
			t.Fatalf("got %v, want the 403 answer", err)
		}
	})
	t.Run("invalid collection", func(t *testing.T) {
		f := newFakeServer(t)
		c := f.client(t, "a", nil)
		if err := c.Live(t.Context(), map[string]uint64{"a:b": 0}, func(string, []Entry, uint64) {}); err == nil {
			t.Fatal("Live accepted an invalid collection")
		}
		if err := c.Live(t.Context(), map[string]uint64{"c": 0}, nil); err == nil {
			t.Fatal("Live accepted a nil onChanges")
		}
	})
}

func TestLiveRetriesUnavailable(t *testing.T) {
	f := newFakeServer(t)
	inner := f.srv.Config.Handler
	var n int
	f.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/live" {
			n++
			if n <= 2 {
				writeError(w, http.StatusServiceUnavailable, CodeUnavailable, "down")
				return
			}
		}
		inner.ServeHTTP(w, r)
	})
	a := newReplica(t, f, "a", nil, "c")
	runLive(t, a)
	eventually(t, "a live connection after two refusals", func() bool { return f.liveConns() == 1 })
}
