package client

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/transport/proto"
)

// liveOpen waits until r's client has a live session to push over.
func liveOpen(t *testing.T, r *Replica) {
	t.Helper()
	eventually(t, "a live session open for pushes", func() bool { return r.Client().link() != nil })
}

// liveSession runs c.Live on collection c, ignoring its pages, until the
// test ends, and waits until the session is open for pushes.
func liveSession(t *testing.T, c *Client) {
	t.Helper()
	live, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { errc <- c.Live(live, map[string][]byte{"c": nil}, func(string, Page) {}, nil) }()
	t.Cleanup(func() { cancel(); <-errc })
	eventually(t, "a live session", func() bool { return c.link() != nil })
}

// setFlush sets field f of record id in collection c to v and flushes the
// outbox.
func setFlush(t *testing.T, r *Replica, id string, v any) {
	t.Helper()
	if err := r.Set("c", id, "f", v); err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// While Live holds a session open, the outbox goes over it; without one,
// over HTTP.
func TestLivePushGoesOverTheSession(t *testing.T) {
	f := newFakeServer(t)
	ctx := t.Context()
	a := newReplica(t, f, "a", nil, "c")
	setFlush(t, a, "before", 1)
	if f.pushes.Load() != 1 || f.livePushes.Load() != 0 {
		t.Fatalf("without a session: %d pushes, %d live", f.pushes.Load(), f.livePushes.Load())
	}
	runLive(t, a)
	liveOpen(t, a)
	for i := range 3 {
		setFlush(t, a, "r", i)
	}
	if f.pushes.Load() != 4 || f.livePushes.Load() != 3 {
		t.Fatalf("with a session: %d pushes, %d live; want 4, 3", f.pushes.Load(), f.livePushes.Load())
	}
	if p := a.Pending(); len(p) != 0 {
		t.Fatalf("outbox %+v", p)
	}
	rec, err := f.eng.Get(ctx, "c", "r")
	if err != nil || rec["f"] == nil {
		t.Fatalf("server record %+v, %v", rec, err)
	}
}

// A session lost with a push in flight: the push goes again, over HTTP,
// and the server, which applied it, answers duplicate.
func TestLivePushLostSession(t *testing.T) {
	f := newFakeServer(t)
	ctx := t.Context()
	a := newReplica(t, f, "a", nil, "c")
	runLive(t, a)
	liveOpen(t, a)
	f.holdLive.Store(true)
	if err := a.Set("c", "r", "f", 1); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Flush(ctx) }()
	eventually(t, "the live push held", func() bool { return f.livePushes.Load() == 1 })
	f.holdLive.Store(false)
	if f.control("drop") != 1 {
		t.Fatal("no session to drop")
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if p := a.Pending(); len(p) != 0 {
		t.Fatalf("outbox %+v after the push went again", p)
	}
	if n := f.pushedOf("c", "r"); n != 2 {
		t.Fatalf("pushed %d times, want 2 (over the lost session, then over HTTP)", n)
	}
	if f.pushes.Load() != 2 || f.livePushes.Load() != 1 {
		t.Fatalf("%d pushes, %d live; want 2, 1", f.pushes.Load(), f.livePushes.Load())
	}
}

// A batch refused whole for now over the session (unavailable) goes again
// over HTTP; one refused for good is the push's error.
func TestLivePushRefusedWhole(t *testing.T) {
	f := newFakeServer(t)
	ctx := t.Context()
	c := f.client(t, "a", nil)
	liveSession(t, c)
	ch := setChange(t, c, "c", "r", "f", 1)

	fails := 1
	f.failWith(func(path string) (int, string) {
		if path == proto.PathPush && fails > 0 {
			fails--
			return http.StatusServiceUnavailable, proto.CodeUnavailable
		}
		return 0, ""
	})
	rs, err := c.Push(ctx, []crdt.Change{ch})
	if err != nil || len(rs) != 1 || rs[0].Status != StatusApplied {
		t.Fatalf("push: %+v, %v", rs, err)
	}
	if f.livePushes.Load() != 1 || f.pushes.Load() != 1 {
		t.Fatalf("%d live pushes (refused), %d served; want 1, 1 (over HTTP)", f.livePushes.Load(), f.pushes.Load())
	}

	f.failWith(func(path string) (int, string) { return http.StatusForbidden, proto.CodeForbidden })
	_, err = c.Push(ctx, []crdt.Change{setChange(t, c, "c", "r2", "f", 1)})
	if e, ok := err.(*Error); !ok || e.Code != proto.CodeForbidden || e.RequestID != livePushID(2) {
		t.Fatalf("push refused forbidden: %v; want request id %s", err, livePushID(2))
	}
	if f.livePushes.Load() != 2 || f.pushes.Load() != 1 {
		t.Fatalf("%d live pushes, %d served; want 2, 1 (not again over HTTP)", f.livePushes.Load(), f.pushes.Load())
	}
}

// A push the server never answers, on a session it keeps alive (pongs),
// ends the session after PushTimeout: the batch goes over HTTP (answered
// duplicate, the server having applied it) and Live dials again.
func TestLivePushUnanswered(t *testing.T) {
	f := newFakeServer(t)
	ctx := t.Context()
	c := f.client(t, "a", func(cfg *Config) {
		cfg.PushTimeout = 300 * time.Millisecond
		cfg.PingInterval = 50 * time.Millisecond // the session stays heard
	})
	r, err := NewReplica(c, ReplicaConfig{Collections: []string{"c"}})
	if err != nil {
		t.Fatal(err)
	}
	runLive(t, r)
	liveOpen(t, r)
	first := c.link()
	f.holdLive.Store(true)
	if err := r.Set("c", "r", "f", 1); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Fatalf("flushed after %v, before the push timeout", took)
	}
	if p := r.Pending(); len(p) != 0 {
		t.Fatalf("outbox %+v", p)
	}
	if f.livePushes.Load() != 1 || f.pushes.Load() != 2 {
		t.Fatalf("%d pushes, %d live; want 2 (the live one, then HTTP), 1", f.pushes.Load(), f.livePushes.Load())
	}
	f.smu.Lock()
	n := f.pushed["c/r"]
	f.smu.Unlock()
	if n != 2 {
		t.Fatalf("the change reached the server %d times, want 2", n)
	}
	f.holdLive.Store(false)
	eventually(t, "a new session", func() bool { l := c.link(); return l != nil && l != first })
}

// A change refused in a live push carries the push's request id (pushed
// key 4), as one refused over HTTP carries the request's, and the rejected
// change keeps it.
func TestLivePushRefusalRequestID(t *testing.T) {
	f := newFakeServer(t)
	a := newReplica(t, f, "a", nil, "c")
	runLive(t, a)
	liveOpen(t, a)
	setFlush(t, a, "ok", 1)
	// Every stamp from now on is before the write horizon: refused collected.
	f.horizon.Store(time.Now().Add(time.Hour).UnixMilli())
	setFlush(t, a, "late", 1)
	if f.livePushes.Load() < 2 || f.pushes.Load() != f.livePushes.Load() {
		t.Fatalf("%d pushes, %d live: want all live", f.pushes.Load(), f.livePushes.Load())
	}
	// The last live push refused it (a change refused collected is
	// written again with fresh stamps, and refused again).
	rej := a.Rejected()
	if want := livePushID(f.livePushes.Load()); len(rej) != 1 || rej[0].RequestID != want {
		t.Fatalf("rejected %+v: want the request id %s of the live push", rej, want)
	}
}

// A batch over the session's message limit goes over HTTP.
func TestLivePushTooLargeForTheSession(t *testing.T) {
	f := newFakeServer(t)
	f.maxMessage.Store(1 << 10)
	ctx := t.Context()
	a := newReplica(t, f, "a", nil, "c")
	runLive(t, a)
	liveOpen(t, a)
	if err := a.Set("c", "big", "f", strings.Repeat("x", 2<<10)); err != nil {
		t.Fatal(err)
	}
	if err := a.Set("c", "small", "f", 1); err != nil {
		t.Fatal(err)
	}
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if f.pushes.Load() != 1 || f.livePushes.Load() != 0 {
		t.Fatalf("%d pushes, %d live; want the batch over HTTP", f.pushes.Load(), f.livePushes.Load())
	}
	setFlush(t, a, "small", 2)
	if f.livePushes.Load() != 1 {
		t.Fatalf("%d live pushes; want the small batch over the session", f.livePushes.Load())
	}
}

// A ChangesFunc that pushes over the session while pages keep coming: the
// push's answer is read past the pages the callback has not taken yet.
func TestLivePushFromTheCallback(t *testing.T) {
	f := newFakeServer(t)
	ctx := t.Context()
	writer := f.client(t, "w", nil)
	c := f.client(t, "a", nil)
	stamp := func(c *Client) crdt.Stamp {
		s, err := c.Now()
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	const rounds = 5
	answered := make(chan error, rounds)
	pages := 0
	live, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() {
		errc <- c.Live(live, map[string][]byte{"c": nil}, func(coll string, p Page) {
			if pages++; pages > rounds {
				return
			}
			// Another page is on its way before this push is answered.
			if _, err := writer.Push(ctx, []crdt.Change{{Collection: "c", Record: crdt.SetField("w", "f", mustValue(t, pages), stamp(writer))}}); err != nil {
				answered <- err
				return
			}
			time.Sleep(20 * time.Millisecond)
			pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
			defer pcancel()
			_, err := c.Push(pctx, []crdt.Change{{Collection: "d", Record: crdt.SetField("x", "f", mustValue(t, pages), stamp(c))}})
			answered <- err
		}, nil)
	}()
	defer func() { cancel(); <-errc }()
	if _, err := writer.Hello(ctx); err != nil {
		t.Fatal(err)
	}
	for range rounds {
		select {
		case err := <-answered:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a push from the callback was not answered")
		}
	}
	if n := f.livePushes.Load(); n == 0 {
		t.Fatal("no push went over the session")
	}
}

// A live push the server refuses whole as unreadable (malformed, invalid:
// the two ends disagree on the live encoding) goes once over HTTP, which
// answers it change by change; refused there too, the push fails as an
// HTTP push does (for malformed: the server refuses a push of no changes
// too, so the fault is not the change's, docs/protocol.md, section 5).
func TestLivePushUnreadableGoesOverHTTP(t *testing.T) {
	for _, code := range []string{proto.CodeMalformed, proto.CodeInvalid} {
		t.Run(code, func(t *testing.T) {
			f := newFakeServer(t)
			ctx := t.Context()
			c := f.client(t, "a", nil)
			liveSession(t, c)
			fails := 1
			f.failWith(func(path string) (int, string) {
				if path == proto.PathPush && fails > 0 {
					fails--
					return http.StatusBadRequest, code
				}
				return 0, ""
			})
			rs, err := c.Push(ctx, []crdt.Change{setChange(t, c, "c", "r1", "f", 1)})
			if err != nil || len(rs) != 1 || rs[0].Status != StatusApplied {
				t.Fatalf("push: %+v, %v", rs, err)
			}
			if f.livePushes.Load() != 1 || f.pushes.Load() != 1 {
				t.Fatalf("%d live pushes (refused), %d served; want 1, 1 (over HTTP)", f.livePushes.Load(), f.pushes.Load())
			}

			f.failWith(func(path string) (int, string) { return http.StatusBadRequest, code })
			_, err = c.Push(ctx, []crdt.Change{setChange(t, c, "c", "r2", "f", 1)})
			if e, ok := err.(*Error); !ok || e.Code != code {
				t.Fatalf("push refused %s over both: %v", code, err)
			}
			if f.livePushes.Load() != 2 {
				t.Fatalf("%d live pushes, want 2 (the second not again over the session)", f.livePushes.Load())
			}
		})
	}
}
