package client

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/transport/proto"
)

// A server that is broken or hostile: whatever it sends, the client loses
// nothing it holds or has queued, keeps a cursor the server can read, and
// neither pulls for ever nor stops for good. Each test names what the
// server does wrong.

// brokenPulls answers the pulls of replica as rewrite says, counting
// them; past limit of them it answers as the engine does, so that a
// client that would pull for ever ends and the test fails, not hangs.
func brokenPulls(f *fakeServer, replica string, limit int64, rewrite func(req proto.PullRequest, a proto.PullResponse) proto.PullResponse) *atomic.Int64 {
	var n atomic.Int64
	rw := func(req proto.PullRequest, a proto.PullResponse) proto.PullResponse {
		if req.Replica != replica || n.Add(1) > limit {
			return a
		}
		return rewrite(req, a)
	}
	f.rewritePull.Store(&rw)
	return &n
}

// hostileReader is a Replica of "todos", with one pending write, on a
// server that holds three records of another writer's.
func hostileReader(t *testing.T, f *fakeServer) *Replica {
	t.Helper()
	w := newReplica(t, f, "w", nil, "todos")
	for _, id := range []string{"p0", "p1", "p2"} {
		if err := w.Set("todos", id, "n", 1); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	r := newReplica(t, f, "r", nil, "todos")
	if err := r.Set("todos", "mine", "n", 2); err != nil {
		t.Fatal(err)
	}
	return r
}

// mended checks that once the server answers as it should, r pulls what
// it holds and pushes its pending write.
func mended(t *testing.T, f *fakeServer, r *Replica) {
	t.Helper()
	f.rewritePull.Store(nil)
	if err := r.Sync(t.Context()); err != nil {
		t.Fatalf("sync once the server mended: %v", err)
	}
	if n := len(r.Pending()); n != 0 {
		t.Fatalf("%d changes pending once the server mended, want 0", n)
	}
	for _, id := range []string{"p0", "p1", "p2", "mine"} {
		if _, ok := r.Get("todos", id); !ok {
			t.Fatalf("todos/%s missing once the server mended", id)
		}
	}
	if f.pushedOf("todos", "mine") == 0 {
		t.Fatal("the pending write never reached the server")
	}
}

func TestPullSayingMoreFromACursorAskedFromFails(t *testing.T) {
	for _, tc := range []struct {
		name string
		next func(asked []byte) []byte
	}{
		{"the cursor it was asked from", func(asked []byte) []byte { return asked }},
		{"the beginning again", func([]byte) []byte { return []byte{} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeServer(t)
			r := hostileReader(t, f)
			// The first page is the engine's, saying there is more; every
			// page after it says more again, from the cursor next gives.
			pulls := brokenPulls(f, "r", 20, func(req proto.PullRequest, a proto.PullResponse) proto.PullResponse {
				if len(req.Cursor) == 0 {
					a.More = true
					return a
				}
				return proto.PullResponse{Records: []crdt.Record{}, Next: tc.next(req.Cursor), More: true}
			})
			err := r.Pull(t.Context())
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("pull: got %v, want ErrProtocol", err)
			}
			if n := pulls.Load(); n > 2 {
				t.Fatalf("%d pulls before the error, want 2", n)
			}
			if _, ok := r.Get("todos", "p0"); !ok {
				t.Fatal("the first page was not kept")
			}
			if n := len(r.Pending()); n != 1 {
				t.Fatalf("%d changes pending, want the local write", n)
			}
			mended(t, f, r)
		})
	}
}

func TestPullResetForEverFails(t *testing.T) {
	f := newFakeServer(t)
	r := hostileReader(t, f)
	pulls := brokenPulls(f, "r", 20, func(proto.PullRequest, proto.PullResponse) proto.PullResponse {
		return proto.PullResponse{Records: []crdt.Record{}, Next: []byte{}, Reset: &proto.ResetInfo{Reason: proto.ResetLeaseExpired, Message: "again"}}
	})
	err := r.Pull(t.Context())
	if !errors.Is(err, ErrProtocol) {
		t.Fatalf("pull: got %v, want ErrProtocol", err)
	}
	if n := pulls.Load(); n > proto.MaxPullResets+1 {
		t.Fatalf("%d pulls before the error, want %d", n, proto.MaxPullResets+1)
	}
	if n := len(r.Pending()); n != 1 {
		t.Fatalf("%d changes pending, want the local write", n)
	}
	mended(t, f, r)
}

func TestPullCursorOverMaxCursorBytesIsNotStored(t *testing.T) {
	f := newFakeServer(t)
	r := hostileReader(t, f)
	brokenPulls(f, "r", 20, func(_ proto.PullRequest, a proto.PullResponse) proto.PullResponse {
		a.Next = bytes.Repeat([]byte{1}, proto.MaxCursorBytes+1)
		return a
	})
	err := r.Pull(t.Context())
	if !errors.Is(err, ErrProtocol) {
		t.Fatalf("pull: got %v, want ErrProtocol", err)
	}
	if c := r.Cursor("todos"); len(c) != 0 {
		t.Fatalf("stored a cursor of %d bytes, want none", len(c))
	}
	mended(t, f, r)
}

func TestLiveResyncWhosePullSaysMoreForEverIsTheCollectionsFailure(t *testing.T) {
	f := newFakeServer(t)
	errs := liveTodos(t, f.client(t, "r", nil))
	eventually(t, "a live connection", func() bool { return f.liveConns() == 1 })
	pulls := brokenPulls(f, "r", 20, func(req proto.PullRequest, _ proto.PullResponse) proto.PullResponse {
		return proto.PullResponse{Records: []crdt.Record{}, Next: req.Cursor, More: true}
	})
	f.control("resync:todos")
	eventually(t, "the collection's failure told", func() bool { return len(errs()) > 0 || pulls.Load() > 20 })
	if told := errs(); len(told) == 0 || !errors.Is(told[0], ErrProtocol) {
		t.Fatalf("after %d pulls: told %v, want ErrProtocol", pulls.Load(), told)
	}
	if f.liveConns() != 1 {
		t.Fatalf("%d live connections, want the session kept", f.liveConns())
	}
}

func TestLiveChangesWithACursorOverMaxCursorBytesIsNotStored(t *testing.T) {
	f := newFakeServer(t)
	r := newReplica(t, f, "r", nil, "c")
	runLive(t, r)
	eventually(t, "a live connection", func() bool { return f.liveConns() == 1 })
	rec := crdt.SetField("x", "f", mustValue(t, 1), crdt.Stamp{Wall: 1, Replica: "w"})
	b, err := crdt.Marshal(map[int]any{0: proto.TypeChanges, 1: "c", 2: []crdt.Record{rec}, 3: bytes.Repeat([]byte{1}, proto.MaxCursorBytes+1), 4: false})
	if err != nil {
		t.Fatal(err)
	}
	f.control("raw:" + hex.EncodeToString(b))
	// Unreadable, the message ends the session, which is dialled again.
	eventually(t, "the session dialled again", func() bool { return f.liveDials.Load() >= 2 })
	if c := r.Cursor("c"); len(c) > proto.MaxCursorBytes {
		t.Fatalf("stored a cursor of %d bytes", len(c))
	}
	if _, ok := r.Get("c", "x"); ok {
		t.Fatal("the records of the unreadable message were applied")
	}
}

func TestLiveResetStormIsTheCollectionsFailure(t *testing.T) {
	f := newFakeServer(t)
	f.resetSubs.Store(true)
	errs := liveTodos(t, f.client(t, "r", nil))
	// Without a bound, the client pulls and subscribes again at every
	// reset, back to back, for as long as the session lasts.
	eventually(t, "the collection's failure told", func() bool { return len(errs()) > 0 || f.subs.Load() > 50 })
	if told := errs(); len(told) == 0 || !errors.Is(told[0], ErrProtocol) {
		t.Fatalf("after %d subs: told %v, want ErrProtocol", f.subs.Load(), told)
	}
	if n := f.liveDials.Load(); n != 1 {
		t.Fatalf("%d live connections, want the session kept for the others", n)
	}
}

// liveTodos runs c.Live on collection todos until the test ends, and
// returns what its error callback was told so far.
func liveTodos(t *testing.T, c *Client) func() []error {
	var mu sync.Mutex
	var errs []error
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- c.Live(ctx, map[string][]byte{"todos": nil}, func(string, Page) {}, func(err error) {
			mu.Lock()
			defer mu.Unlock()
			errs = append(errs, err)
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
	return func() []error {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(errs)
	}
}

// liveFailures is a slog.Handler that keeps, in order, the backoff attempt
// of each live failure of a collection logged (liveFailedMsg).
type liveFailures struct {
	mu       sync.Mutex
	attempts map[string][]int64
}

func (h *liveFailures) Enabled(context.Context, slog.Level) bool { return true }
func (h *liveFailures) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *liveFailures) WithGroup(string) slog.Handler            { return h }

func (h *liveFailures) Handle(_ context.Context, r slog.Record) error {
	if r.Message != liveFailedMsg {
		return nil
	}
	var coll string
	attempt := int64(-1)
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "collection":
			coll = a.Value.String()
		case "attempt":
			attempt = a.Value.Int64()
		}
		return true
	})
	h.mu.Lock()
	defer h.mu.Unlock()
	h.attempts[coll] = append(h.attempts[coll], attempt)
	return nil
}

// of returns the attempts logged for coll so far.
func (h *liveFailures) of(coll string) []int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.attempts[coll])
}

// pageResetStorm runs Live over "todos" on a server that answers every
// sub of it with a page, then a reset. It returns the failures logged and
// the errors told to onError so far.
func pageResetStorm(t *testing.T) (*fakeServer, *liveFailures, func() []error) {
	t.Helper()
	f := newFakeServer(t)
	f.pageResetSubs.Store(true)
	logs := &liveFailures{attempts: map[string][]int64{}}
	c := f.client(t, "r", func(cfg *Config) { cfg.Logger = slog.New(logs) })
	return f, logs, liveTodos(t, c)
}

// increasing reports whether a is 0, 1, 2...
func increasing(a []int64) bool {
	for i, n := range a {
		if n != int64(i) {
			return false
		}
	}
	return true
}

func TestLiveResetStormAfterAPageBacksOffLongerEachTimeUntilTheNextSession(t *testing.T) {
	f, logs, _ := pageResetStorm(t)
	// A page of the collection before each reset must not start its
	// backoff over: else the client heals, pulls and subscribes it again
	// at the first step (near zero, with full jitter), back to back.
	eventually(t, "six failures of todos", func() bool { return len(logs.of("todos")) >= 6 })
	if got := logs.of("todos"); !increasing(got) {
		t.Fatalf("backoff attempts of todos %v, want 0, 1, 2... (growing while the session lasts)", got)
	}
	if n := f.liveDials.Load(); n != 1 {
		t.Fatalf("%d live connections, want the session kept", n)
	}
	// The next session starts it over.
	f.control("drop")
	var got []int64
	eventually(t, "a failure of todos in the next session", func() bool {
		got = logs.of("todos")
		return f.liveDials.Load() >= 2 && slices.Index(got[1:], 0) >= 0
	})
	k := 1 + slices.Index(got[1:], 0)
	if !increasing(got[:k]) || !increasing(got[k:]) {
		t.Fatalf("backoff attempts of todos %v, want 0, 1, 2... in each session", got)
	}
}

func TestLiveResetStormAfterAPageIsToldOnce(t *testing.T) {
	_, logs, told := pageResetStorm(t)
	eventually(t, "six failures of todos", func() bool { return len(logs.of("todos")) >= 6 })
	// The page before each reset does not serve the collection again: its
	// failure is told once, not at every try (a flood of the app's errors).
	errs := told()
	if len(errs) != 1 || !errors.Is(errs[0], ErrProtocol) {
		t.Fatalf("after %d failures: told %v, want one ErrProtocol", len(logs.of("todos")), errs)
	}
}

func TestLiveSecondWelcomeEndsTheSession(t *testing.T) {
	f := newFakeServer(t)
	liveTodos(t, f.client(t, "r", nil))
	eventually(t, "a live connection", func() bool { return f.liveConns() == 1 })
	// A welcome of a later server time: taken, it would move the base the
	// session's pushes write their walls from, which the server keeps at
	// the first (docs/protocol.md, section 9). A protocol error of the
	// server, as in the browser client: the session ends and is dialled
	// again.
	hello := f.helloAnswer()
	hello.ServerTime += 60_000
	b, err := proto.EncodeMessage(proto.Welcome{Hello: hello})
	if err != nil {
		t.Fatal(err)
	}
	f.control("raw:" + hex.EncodeToString(b))
	eventually(t, "the session dialled again", func() bool { return f.liveDials.Load() >= 2 })
}
