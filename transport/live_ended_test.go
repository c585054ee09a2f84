package transport

import (
	"fmt"
	"sync"
	"testing"

	"github.com/gobwas/ws"

	"github.com/convergo/convergo/transport/proto"
)

// A session can end from another goroutine (abort: a write that failed
// or timed out, a queue that stayed full) while its reader still handles
// messages it had read. A sub handled then, before or while the session
// ends, must not leave a subscription behind: a member of a broadcast
// group whose connection is gone would stay in its group, read for and
// keeping the group and its engine subscription, for the server's life.
func TestLiveSubAsSessionEnds(t *testing.T) {
	ts := newTestServer(t, nil)
	tok := ts.token(t, "alice", []string{"*"}, nil)
	for i := range 50 {
		c, _ := ts.open(t, tok)
		conn := ts.onlyConn(t)
		sub, err := proto.EncodeMessage(proto.Sub{Collection: fmt.Sprintf("c%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); conn.abort(errClosedByUs) }()
		conn.rmu.Lock() // as the reader holds it
		_ = conn.handle(ws.OpBinary, sub)
		conn.rmu.Unlock()
		wg.Wait()
		waitFor(t, "the session ended", func() bool { return ts.liveCount() == 0 })
		_ = c.ws.CloseNow()
	}
	if n := ts.heldSubscriptions(); n != 0 {
		t.Errorf("%d subscriptions still counted for the subject after every session ended, want 0", n)
	}
	ts.srv.hub.mu.Lock()
	defer ts.srv.hub.mu.Unlock()
	if n := len(ts.srv.hub.groups); n != 0 {
		for k, g := range ts.srv.hub.groups {
			g.mu.Lock()
			t.Logf("group %s: %d members", k.collection, len(g.members))
			g.mu.Unlock()
		}
		t.Fatalf("%d broadcast groups left after every session ended, want 0", n)
	}
}

// onlyConn returns the server's one live session.
func (ts *testServer) onlyConn(t *testing.T) *liveConn {
	t.Helper()
	ts.srv.mu.Lock()
	defer ts.srv.mu.Unlock()
	if len(ts.srv.live) != 1 {
		t.Fatalf("%d live sessions, want 1", len(ts.srv.live))
	}
	for c := range ts.srv.live {
		return c
	}
	return nil
}

func (ts *testServer) liveCount() int {
	ts.srv.mu.Lock()
	defer ts.srv.mu.Unlock()
	return len(ts.srv.live)
}

// heldSubscriptions returns the subscriptions counted against their
// subjects (Limits.MaxSubscriptionsPerSubject), all subjects together.
func (ts *testServer) heldSubscriptions() int {
	c := ts.srv.subscriptions
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, k := range c.n {
		n += k
	}
	return n
}
