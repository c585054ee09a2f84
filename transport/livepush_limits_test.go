package transport

import (
	"context"
	"strings"
	"testing"

	"github.com/coder/websocket"

	"github.com/convergo/convergo/transport/proto"
)

// A live push carries no more than an HTTP push may: with MaxMessageBytes
// raised above MaxBodyBytes, a push message over MaxBodyBytes is refused
// whole with too_large, not applied, and the session goes on.
func TestLivePushOverMaxBody(t *testing.T) {
	ts := newTestServer(t, func(c *Config) {
		c.Limits.MaxBodyBytes = 4 << 10
		c.Limits.MaxMessageBytes = 64 << 10
	})
	tok := ts.token(t, "alice", []string{"notes"}, []string{"notes"})
	c, s := ts.openPusher(t, tok)
	ts.pushLive(t, c, s, tok, change(t, "notes", "big", "f", strings.Repeat("x", 8<<10)))
	if p := recvPushed(t, c); p.Code != proto.CodeTooLarge {
		t.Fatalf("push over max body bytes: %+v, want too_large", p)
	}
	if got := ts.pull(t, tok, "notes", 0); len(got.Records) != 0 {
		t.Fatalf("the push over max body bytes was applied: %+v", got.Records)
	}
	ts.pushLive(t, c, s, tok, change(t, "notes", "small", "f", 1))
	if p := recvPushed(t, c); len(p.Results) != 1 || p.Results[0].Status != proto.StatusApplied {
		t.Fatalf("push after: %+v", p)
	}
	if got := ts.metric(t, "convergo_body_bytes_in_flight"); got != 0 {
		t.Fatalf("%v bytes still in flight", got)
	}
}

// A push message takes its room among the bodies in flight before it is
// decoded: with no room, even an unreadable one is answered unavailable
// (nothing of it is decoded), and once decoded and refused its room is
// given back.
func TestLivePushBudgetBeforeDecode(t *testing.T) {
	ts, gate, _, a, b, _ := newFullBudget(t)
	unreadable := []byte("\xa2\x00\x64push\x02\x01") // changes not an array
	if err := b.ws.Write(context.Background(), websocket.MessageBinary, unreadable); err != nil {
		t.Fatal(err)
	}
	if p := recvPushed(t, b); p.Code != proto.CodeUnavailable {
		t.Fatalf("unreadable push without room: %+v, want unavailable", p)
	}
	gate.open()
	if p := recvPushed(t, a); len(p.Results) != 1 || p.Results[0].Status != proto.StatusApplied {
		t.Fatalf("held push: %+v", p)
	}
	if err := b.ws.Write(context.Background(), websocket.MessageBinary, unreadable); err != nil {
		t.Fatal(err)
	}
	if p := recvPushed(t, b); p.Code != proto.CodeMalformed && p.Code != proto.CodeInvalid {
		t.Fatalf("unreadable push with room: %+v, want malformed or invalid", p)
	}
	if got := ts.metric(t, "convergo_body_bytes_in_flight"); got != 0 {
		t.Fatalf("%v bytes still in flight", got)
	}
}
