package transport

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/memory"
	"github.com/convergo/convergo/stores/storetest"
	"github.com/convergo/convergo/transport/proto"
)

// panicPull is a memory store whose Pull of collection "crash" panics: a
// bug met reading a page.
type panicPull struct{ *memory.Store }

func (p panicPull) Pull(ctx context.Context, collection string, after uint64, limit stores.PageLimit) (stores.Page, error) {
	if collection == "crash" {
		panic("a bug reading a page")
	}
	return p.Store.Pull(ctx, collection, after, limit)
}

// TestLiveBugFailsOneOperation: a bug (a panic) met while applying a live
// push or reading a live page fails that push (pushed internal) or that
// subscription (resync), as a request's handler answers internal; it
// does not end the server process, which every tenant's sessions share.
// The session goes on.
func TestLiveBugFailsOneOperation(t *testing.T) {
	st := panicPull{memory.New()}
	eng, err := engine.Open(engine.Config{Store: st, Replica: "srv-test", PollInterval: -1,
		Rules: []engine.Rule{{Pattern: "boom", Validate: func(context.Context, string, crdt.Record) error { panic("a bug in a validation function") }}}})
	if err != nil {
		t.Fatal(err)
	}
	ts := newTestServer(t, func(c *Config) { c.Engine = eng })
	t.Cleanup(func() { _ = eng.Close() })
	colls := []string{"boom", "crash", "notes"}
	tok := ts.token(t, "alice", colls, colls)
	c, s := ts.openPusher(t, tok)

	ts.pushLive(t, c, s, tok, change(t, "boom", "a", "f", 1))
	if p := recvPushed(t, c); p.Code != proto.CodeInternal {
		t.Fatalf("a push meeting a bug: %+v; want pushed internal", p)
	}

	c.send(proto.Sub{Collection: "crash"})
	if m, ok := c.recv().(proto.Resync); !ok || m.Collection != "crash" {
		t.Fatalf("a sub meeting a bug: %#v; want resync of crash", m)
	}

	ts.pushLive(t, c, s, tok, change(t, "notes", "n", "f", 1))
	if p := recvPushed(t, c); len(p.Results) != 1 || p.Results[0].Status != proto.StatusApplied {
		t.Fatalf("a push after: %+v; want applied", p)
	}
	c.subOK("after the bugs", "notes")
}

// panicAuth is an Authorizer that panics on the token "boom": a bug met on
// what a client sent, as the live session's reader handles it.
type panicAuth struct{ Authorizer }

func (a panicAuth) Authenticate(ctx context.Context, token string) (Principal, error) {
	if token == "boom" {
		panic("a bug reading a token")
	}
	return a.Authorizer.Authenticate(ctx, token)
}

// TestLiveReaderBugEndsOneSession: a bug (a panic) met handling a client's
// message on the reader of its session (here the hello's token) ends that
// session with internal (close 1011), as a request's handler answers
// internal; the reader and the server go on, and another session opens.
// Before, the panic on the reader's goroutine ended the process.
func TestLiveReaderBugEndsOneSession(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.Authorizer = panicAuth{c.Authorizer} })
	c, _, err := ts.dial(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.send(proto.Hello{Protocol: proto.Version, Replica: "c1", Token: "boom"})
	if m, ok := c.recv().(proto.ErrorMessage); !ok || m.Code != proto.CodeInternal {
		t.Fatalf("a hello meeting a bug: %#v; want error internal", m)
	}
	if _, err := c.recvErr(5 * time.Second); websocket.CloseStatus(err) != websocket.StatusInternalError {
		t.Fatalf("close: %v; want 1011", err)
	}
	tok := ts.token(t, "alice", []string{"notes"}, []string{"notes"})
	c2, _ := ts.open(t, tok)
	c2.subOK("after the bug", "notes")
}

// panicDenyOnce is a memory store whose first Pull of the deny list
// panics: a bug met reading it.
type panicDenyOnce struct {
	*memory.Store
	done *atomic.Bool
}

func (p panicDenyOnce) Pull(ctx context.Context, collection string, after uint64, limit stores.PageLimit) (stores.Page, error) {
	if collection == proto.DenyCollection && p.done.CompareAndSwap(false, true) {
		panic("a bug reading the deny list")
	}
	return p.Store.Pull(ctx, collection, after, limit)
}

// TestDenyListBugRetries: a bug (a panic) met by the deny list's follower,
// a goroutine of the server's own, fails that reading as a store error
// does: it is logged at error level and the list is read again, so
// authentication is served once it is whole. Before, the panic ended the
// process.
func TestDenyListBugRetries(t *testing.T) {
	st := panicDenyOnce{memory.New(), new(atomic.Bool)}
	eng, err := engine.Open(engine.Config{Store: st, Replica: "srv-test", PollInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = eng.Close() })
	var logs storetest.LogBuffer
	ts := newTestServer(t, func(c *Config) {
		c.Engine = eng
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	tok := ts.token(t, "alice", []string{"notes"}, []string{"notes"})
	if res := ts.push(t, tok, change(t, "notes", "n", "f", 1)); len(res) != 1 || res[0].Status != proto.StatusApplied {
		t.Fatalf("a push once the deny list is read: %+v; want applied", res)
	}
	if !st.done.Load() {
		t.Fatal("the deny list was read without the bug")
	}
	if l := logs.String(); !strings.Contains(l, "level=ERROR") || !strings.Contains(l, "a bug reading the deny list") {
		t.Fatalf("logs %q; want the bug at error level", l)
	}
}
