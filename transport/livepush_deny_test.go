package transport

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/gobwas/ws"

	"github.com/convergo/convergo/transport/proto"
)

// The moment the server's deny list names alice (after apply, before
// revokeLive has closed her sessions, or while the close frame waits
// behind her queue), an HTTP push by her is refused revoked; a live push
// over her open session is too: error revoked, the session closes with
// 1008, and nothing of the push is applied.
func TestLivePushAfterDeny(t *testing.T) {
	ts := newTestServer(t, nil)
	tok := ts.token(t, "alice", []string{"notes"}, []string{"notes"})
	c, s := ts.openPusher(t, tok)
	ts.srv.deny.mu.Lock()
	ts.srv.deny.until[DenySubject+"alice"] = 0
	ts.srv.deny.mu.Unlock()
	a := ts.post(t, proto.PathPush, tok, proto.PushRequest{Replica: "c1", Changes: nil})
	if a.status != http.StatusForbidden || a.errorCode(t) != proto.CodeRevoked {
		t.Fatalf("HTTP push after deny: %d %s, want 403 revoked", a.status, a.errorCode(t))
	}
	ts.pushLive(t, c, s, tok, change(t, "notes", "n1", "title", "denied"))
	recvClosed(t, c, proto.CodeRevoked, websocket.StatusPolicyViolation)
	if rec, err := ts.eng.Get(context.Background(), "notes", "n1"); err == nil && rec != nil {
		t.Fatalf("a denied principal's live push was applied: %+v", rec)
	}
}

// After a fatal error raised off the read loop (revokeLive's, the expiry
// timer's) the session handles no client message, though its close frame
// has not been written yet: a push that arrives meanwhile is not applied.
func TestLivePushAfterFatal(t *testing.T) {
	read := make(chan bool, 64)
	ts := newTestServer(t, func(c *Config) {
		c.afterMessage = func(handled bool) {
			select {
			case read <- handled:
			default: // never hold the reader: the test reads the first two
			}
		}
	})
	tok := ts.token(t, "alice", []string{"notes"}, []string{"notes"})
	c, s := ts.openPusher(t, tok)
	// The hello: its welcome is written before the reader is done with it.
	if handled := <-read; !handled {
		t.Fatal("the session did not handle its hello")
	}
	ts.srv.mu.Lock()
	var conn *liveConn
	for lc := range ts.srv.live {
		conn = lc
	}
	ts.srv.mu.Unlock()
	conn.wmu.Lock() // the error and the close frame wait to be written
	conn.fatal(ws.StatusPolicyViolation, proto.Errorf(proto.CodeRevoked, "access to this server was revoked"))
	ts.pushLive(t, c, s, tok, change(t, "notes", "n1", "title", "after"))
	select {
	case handled := <-read:
		if handled {
			t.Error("the session handled a push after its fatal error")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the session did not read the push")
	}
	conn.wmu.Unlock()
	recvClosed(t, c, proto.CodeRevoked, websocket.StatusPolicyViolation)
	if rec, err := ts.eng.Get(context.Background(), "notes", "n1"); err == nil && rec != nil {
		t.Fatalf("a push after a fatal error was applied: %+v", rec)
	}
}
