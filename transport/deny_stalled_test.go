package transport

import (
	"context"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/convergo/convergo/transport/proto"
)

// A denied principal's session that does not read (its writer stuck in a
// write to the socket, its queue full) does not hold the server's deny
// list: revoking it must not wait for that write, or the deny entries that
// follow (another tenant's revocation) would not be applied until it
// ended, up to WriteTimeout for each such session, while the principals
// they name went on being served.
func TestDenyStalledSessionHoldsNoRevocation(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.WriteTimeout = time.Hour })
	ctx := context.Background()
	mallory := ts.token(t, "mallory", []string{"notes"}, []string{"notes"})
	bob := ts.token(t, "bob", []string{"notes"}, []string{"notes"})
	if code := ts.pullCode(t, bob, "notes"); code != "" {
		t.Fatalf("bob before: %s", code)
	}
	ts.openPusher(t, mallory)
	var conn *liveConn
	eventually(t, "mallory's session", func() bool {
		ts.srv.mu.Lock()
		defer ts.srv.mu.Unlock()
		for lc := range ts.srv.live {
			if p, ok := lc.principal(); ok && p.Subject == "mallory" {
				conn = lc
			}
		}
		return conn != nil
	})
	// Her writer is in the middle of a write to a socket she does not
	// read (it holds wmu, up to WriteTimeout), and her queue is full.
	conn.wmu.Lock()
	released := false
	release := func() {
		if !released {
			released = true
			conn.wmu.Unlock()
		}
	}
	defer release()
	f := frame{data: encodeFrame(ws.OpBinary, make([]byte, 1024))}
	conn.qmu.Lock()
	for conn.fitsLocked(f) {
		conn.pushLocked(f)
	}
	conn.qmu.Unlock()

	if err := Deny(ctx, ts.eng, DenyEntry{ID: DenySubject + "mallory"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "mallory revoked over HTTP", func() bool { return ts.pullCode(t, mallory, "notes") == proto.CodeRevoked })
	if err := Deny(ctx, ts.eng, DenyEntry{ID: DenySubject + "bob"}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for ts.pullCode(t, bob, "notes") != proto.CodeRevoked {
		if time.Now().After(deadline) {
			t.Fatal("bob's pulls are still served 10s after his deny entry: the deny list waits for mallory's stalled session")
		}
		time.Sleep(20 * time.Millisecond)
	}
	release()
}
