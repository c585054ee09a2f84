package client

import (
	"context"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/transport/proto"
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
	if got, want := f.cursorSeq(t, a.Cursor("c")), f.mustHead(t, "c"); got != want {
		t.Fatalf("cursor at %d, want head %d", got, want)
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
	c := f.client(t, "a", func(cfg *Config) {
		cfg.PingInterval = 30 * time.Millisecond
		cfg.SilenceTimeout = 60 * time.Millisecond
	})
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
		err := c.Live(t.Context(), map[string][]byte{"c": nil}, func(string, Page) {}, nil)
		if !errors.Is(err, ErrUnauthenticated) {
			t.Fatalf("got %v, want ErrUnauthenticated", err)
		}
	})
	t.Run("forbidden", func(t *testing.T) {
		f := newFakeServer(t)
		c := f.client(t, "a", nil)
		errc := make(chan error, 1)
		go func() {
			errc <- c.Live(t.Context(), map[string][]byte{"c": nil}, func(string, Page) {}, nil)
		}()
		eventually(t, "a live connection", func() bool { return f.liveConns() == 1 })
		f.control("forbid")
		select {
		case err := <-errc:
			var e *Error
			if !errors.As(err, &e) || e.Code != proto.CodeForbidden || e.Status != 0 {
				t.Fatalf("got %v, want a forbidden error message", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Live kept going after a fatal error")
		}
	})
	t.Run("refused upgrade", func(t *testing.T) {
		f := newFakeServer(t)
		f.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			writeError(w, http.StatusForbidden, proto.CodeForbidden, "origin not allowed")
		})
		c := f.client(t, "a", nil)
		err := c.Live(t.Context(), map[string][]byte{"c": nil}, func(string, Page) {}, nil)
		var e *Error
		if !errors.As(err, &e) || e.Status != 403 || e.Message != "origin not allowed" {
			t.Fatalf("got %v, want the 403 answer", err)
		}
	})
	t.Run("invalid collection", func(t *testing.T) {
		f := newFakeServer(t)
		c := f.client(t, "a", nil)
		if err := c.Live(t.Context(), map[string][]byte{"a:b": nil}, func(string, Page) {}, nil); err == nil {
			t.Fatal("Live accepted an invalid collection")
		}
		if err := c.Live(t.Context(), map[string][]byte{"c": nil}, nil, nil); err == nil {
			t.Fatal("Live accepted a nil onChanges")
		}
	})
}

func TestLiveRetriesUnavailable(t *testing.T) {
	f := newFakeServer(t)
	inner := f.srv.Config.Handler
	var n int
	f.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == proto.PathLive {
			n++
			if n <= 2 {
				writeError(w, http.StatusServiceUnavailable, proto.CodeUnavailable, "down")
				return
			}
		}
		inner.ServeHTTP(w, r)
	})
	a := newReplica(t, f, "a", nil, "c")
	runLive(t, a)
	eventually(t, "a live connection after two refusals", func() bool { return f.liveConns() == 1 })
}

// onlyConn returns the fake's one live connection.
func (f *fakeServer) onlyConn(t *testing.T) any {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.conns) != 1 {
		t.Fatalf("%d live connections, want 1", len(f.conns))
	}
	for conn := range f.conns {
		return conn
	}
	return nil
}

func TestLiveIgnoresUnknownTypesAndKeys(t *testing.T) {
	f := newFakeServer(t)
	a := newReplica(t, f, "a", nil, "c")
	runLive(t, a)
	eventually(t, "a live connection", func() bool { return f.liveConns() == 1 })
	conn := f.onlyConn(t)
	rec := crdt.SetField("r", "f", mustValue(t, 1), crdt.Stamp{Wall: 1, Replica: "x"})
	// A message type of a later version, then a changes message with a key
	// of a later version: the first is skipped, the second read.
	unknown := map[int]any{0: "gossip", 1: "hi"}
	changes := map[int]any{0: proto.TypeChanges, 1: "c", 2: []crdt.Record{rec}, 3: []byte{}, 4: false, 9: "later"}
	for _, m := range []any{unknown, changes} {
		b, err := crdt.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		f.control("raw:" + hex.EncodeToString(b))
	}
	eventually(t, "the record of the changes message", func() bool { return hasValue(a, "c", "r", "f") })
	if f.onlyConn(t) != conn {
		t.Fatal("the session was redialled")
	}
}

func TestLivePingsKeepAQuietSessionOpen(t *testing.T) {
	f := newFakeServer(t)
	c := f.client(t, "a", func(cfg *Config) {
		// 1 s of silence allowed against pings every 100 ms: pongs come
		// back in time even on a loaded machine (20/100 ms did not).
		cfg.PingInterval = 100 * time.Millisecond
		cfg.SilenceTimeout = time.Second
	})
	r, err := NewReplica(c, ReplicaConfig{Collections: []string{"c"}})
	if err != nil {
		t.Fatal(err)
	}
	runLive(t, r)
	eventually(t, "a live connection", func() bool { return f.liveConns() == 1 })
	conn := f.onlyConn(t)
	// Nothing is written, so only pongs answer the client's pings: the
	// session must outlive several silence timeouts.
	time.Sleep(3 * time.Second)
	if f.onlyConn(t) != conn {
		t.Fatal("a quiet session that answers pings was dropped")
	}
}

// TestLiveRetriesFailingSub: a sub refused with an error of its
// collection's own (internal) is told once to ReplicaConfig.OnError and
// sent again after a backoff, on the same session, while the other
// collection streams; once served, the collection streams too.
func TestLiveRetriesFailingSub(t *testing.T) {
	f := newFakeServer(t)
	ctx := t.Context()
	var refusals atomic.Int64
	refuse := func(coll string) string {
		if coll == "a" && refusals.Add(1) <= 3 {
			return proto.CodeInternal
		}
		return ""
	}
	f.refuseSub.Store(&refuse)
	var mu sync.Mutex
	var told []error
	c := f.client(t, "r", nil)
	r, err := NewReplica(c, ReplicaConfig{Collections: []string{"a", "b"}, OnError: func(err error) {
		mu.Lock()
		defer mu.Unlock()
		told = append(told, err)
	}})
	if err != nil {
		t.Fatal(err)
	}
	w := newReplica(t, f, "w", nil)
	for _, coll := range []string{"a", "b"} {
		if err := w.Set(coll, "x", "f", 1); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	runLive(t, r)
	eventually(t, "b streamed", func() bool { return hasValue(r, "b", "x", "f") })
	eventually(t, "a served after its retries", func() bool { return hasValue(r, "a", "x", "f") })
	if n := refusals.Load(); n < 4 {
		t.Fatalf("a subscribed %d times, want its 3 refusals and the one served", n)
	}
	if n := f.liveDials.Load(); n != 1 {
		t.Fatalf("%d live dials, want the one session", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(told) != 1 || !errors.Is(told[0], ErrInternal) || !strings.Contains(told[0].Error(), "live a") {
		t.Fatalf("OnError was given %v, want one internal error of a", told)
	}
}

// TestLiveFailureOfAnotherCodeIsToldAgain: a collection's failure is told
// once until it is served again, unless its code changes: a sub refused
// internal, then schema_ahead (the server went back to older rules), has
// the schema_ahead told too (the app must upgrade), each code once
// however many times the server refuses it.
func TestLiveFailureOfAnotherCodeIsToldAgain(t *testing.T) {
	f := newFakeServer(t)
	var refusals atomic.Int64
	refuse := func(coll string) string {
		if coll != "a" {
			return ""
		}
		if refusals.Add(1) <= 3 {
			return proto.CodeInternal
		}
		return proto.CodeSchemaAhead
	}
	f.refuseSub.Store(&refuse)
	var mu sync.Mutex
	var told []error
	c := f.client(t, "r", nil)
	r, err := NewReplica(c, ReplicaConfig{Collections: []string{"a", "b"}, OnError: func(err error) {
		mu.Lock()
		defer mu.Unlock()
		told = append(told, err)
	}})
	if err != nil {
		t.Fatal(err)
	}
	runLive(t, r)
	eventually(t, "a refused schema_ahead again and again", func() bool { return refusals.Load() >= 7 })
	mu.Lock()
	defer mu.Unlock()
	if len(told) != 2 || !errors.Is(told[0], ErrInternal) || !errors.Is(told[1], ErrSchemaAhead) || !strings.Contains(told[1].Error(), "live a") {
		t.Fatalf("after %d refusals OnError was given %v, want a's internal then its schema_ahead, each once", refusals.Load(), told)
	}
}
