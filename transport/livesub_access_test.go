package transport

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/convergo/convergo/transport/proto"
)

// A sub is a read: like a push (TestLivePushAfterDeny) it is refused
// once the deny list names the session's principal, before revokeLive has
// closed the session, and once its token has expired, before the expiry
// timer has fired: error revoked or token_expired, the session closes
// with 1008, and no changes are sent.
func TestLiveSubAfterDenyOrExpiry(t *testing.T) {
	t.Run("denied", func(t *testing.T) {
		ts := newTestServer(t, nil)
		tok := ts.token(t, "alice", []string{"notes"}, []string{"notes"})
		ts.push(t, tok, change(t, "notes", "n1", "title", "secret"))
		c, _ := ts.open(t, tok)
		ts.srv.deny.mu.Lock()
		ts.srv.deny.until[DenySubject+"alice"] = 0
		ts.srv.deny.mu.Unlock()
		c.send(proto.Sub{Collection: "notes"})
		recvRefused(t, c, proto.CodeRevoked)
	})
	t.Run("expired", func(t *testing.T) {
		var skew atomic.Int64 // how far the server's clock is ahead
		ts := newTestServer(t, func(c *Config) {
			c.Authorizer = tokenAuth{}
			c.Now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
		})
		tok := fmt.Sprintf("exp:%d", time.Now().Add(time.Hour).UnixMilli())
		c, _ := ts.open(t, tok)
		skew.Store(int64(2 * time.Hour)) // the token's hour has passed; its timer has not fired
		c.send(proto.Sub{Collection: "notes"})
		recvRefused(t, c, proto.CodeTokenExpired)
	})
}

// recvRefused expects an error message with code, no changes before it,
// then the close with 1008.
func recvRefused(t *testing.T, c *liveClient, code string) {
	t.Helper()
	m, err := c.recvErr(5 * time.Second)
	if e, ok := m.(proto.ErrorMessage); err != nil || !ok || e.Code != code {
		t.Fatalf("got %+v (%v), want error %s", m, err, code)
	}
	_, err = c.recvErr(5 * time.Second)
	if got := websocket.CloseStatus(err); got != websocket.StatusPolicyViolation {
		t.Fatalf("close status %v (%v), want 1008", got, err)
	}
}
