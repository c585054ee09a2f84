package transport

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/gobwas/ws"

	"github.com/convergo/convergo/stores/storetest"
	"github.com/convergo/convergo/transport/proto"
)

// A hello handled once the session has begun to end (its connection
// dropped as the hello was read) is no internal error: nothing is logged
// as one, and no subject's session is held.
func TestHelloAsSessionEnds(t *testing.T) {
	var logs storetest.LogBuffer
	ts := newTestServer(t, func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	tok := ts.token(t, "alice", []string{"notes"}, []string{"notes"})
	if _, _, err := ts.dial(t, nil); err != nil {
		t.Fatal(err)
	}
	var conn *liveConn
	waitFor(t, "the session registered", func() bool {
		ts.srv.mu.Lock()
		defer ts.srv.mu.Unlock()
		for lc := range ts.srv.live {
			conn = lc
		}
		return conn != nil
	})
	conn.cancel() // the session ends: finish's first step
	hello, err := proto.EncodeMessage(proto.Hello{Protocol: proto.Version, Replica: proto.ReplicaFor("alice", ownReplica), Token: tok})
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.handle(ws.OpBinary, hello); err == nil {
		t.Fatal("a hello on an ended session: handled, want it refused")
	}
	if got := logs.String(); strings.Contains(got, "internal error") {
		t.Fatalf("a hello on an ended session logged as an internal error:\n%s", got)
	}
	ts.srv.sessions.mu.Lock()
	held := ts.srv.sessions.n["alice"]
	ts.srv.sessions.mu.Unlock()
	if held != 0 {
		t.Fatalf("alice holds %d sessions, want 0", held)
	}
}
