package transport

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/convergo/convergo/transport/proto"
)

// A client that floods its session with subs and unsubs, none of them
// waited for, leaves nothing behind once it has unsubscribed: no
// subscription counted against its subject, no broadcast group, and no
// goroutine beyond the pools' workers, which linger a while.
func TestLiveSubChurnHoldsNothing(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.Limits.Rate = -1 })
	tok := ts.token(t, "alice", []string{"*"}, []string{"*"})
	const colls, rounds = 20, 500
	for i := range colls {
		ts.push(t, tok, change(t, fmt.Sprintf("c%d", i), "r", "f", i))
	}
	c, _ := ts.open(t, tok)
	base := runtime.NumGoroutine()
	for i := range rounds {
		coll := fmt.Sprintf("c%d", i%colls)
		c.send(proto.Sub{Collection: coll})
		c.send(proto.Unsub{Collection: coll})
	}
	c.send(proto.Ping{Nonce: 1})
	for m := c.recv(); m.MessageType() != proto.TypePong; m = c.recv() {
		if e, ok := m.(proto.ErrorMessage); ok {
			t.Fatalf("during the churn: %+v", e)
		}
	}
	waitFor(t, "no subscription held", func() bool { return ts.heldSubscriptions() == 0 })
	waitFor(t, "no broadcast group", func() bool {
		ts.srv.hub.mu.Lock()
		defer ts.srv.hub.mu.Unlock()
		return len(ts.srv.hub.groups) == 0
	})
	// The readers' and writers' pools may have grown to their size.
	pools := 2 * max(8, 4*runtime.GOMAXPROCS(0))
	waitFor(t, "the churn's goroutines ended", func() bool { return runtime.NumGoroutine() <= base+pools })
	// The session is still served.
	// (Pages of the churn's subs may still arrive: read past them.)
	c.send(proto.Sub{Collection: "c0"})
	c.send(proto.Ping{Nonce: 2})
	for m := c.recv(); m.MessageType() != proto.TypePong || m.(proto.Pong).Nonce != 2; m = c.recv() {
		if e, ok := m.(proto.ErrorMessage); ok {
			t.Fatalf("after the churn: %+v", e)
		}
	}
	if n := ts.heldSubscriptions(); n != 1 {
		t.Fatalf("%d subscriptions held after a sub, want 1", n)
	}
}
