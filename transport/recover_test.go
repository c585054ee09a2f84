package transport

import (
	"context"
	"testing"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/memory"
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
