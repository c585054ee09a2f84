package transport

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/transport/proto"
)

// A push message that begins {0: "push", ... but breaks the encoding
// rules further in (a tag, an indefinite length, undefined, nesting or a
// container over the decoder's limits inside a change) is a push that does
// not decode as a whole: it is answered pushed malformed, as its HTTP body
// would be, and the session goes on (docs/protocol.md, "Pushing over a
// live session").
func TestLivePushUnreadableInside(t *testing.T) {
	ts := newTestServer(t, nil)
	tok := ts.token(t, "alice", []string{"notes"}, []string{"notes"})
	c, s := ts.openPusher(t, tok)
	good := ts.encodePush(t, s, tok, change(t, "notes", "a", "f", 1))
	// good is {0: "push", 2: [change]} and ends with the change's value,
	// the integer 1: each case puts another item in its place.
	if !bytes.HasPrefix(good, []byte("\xa2\x00\x64push\x02")) || !bytes.HasSuffix(good, []byte{0x01}) {
		t.Fatalf("push %x: not {0: \"push\", 2: [...]} ending with the value 1", good)
	}
	with := func(value []byte) []byte { return append(bytes.Clone(good[:len(good)-1]), value...) }
	many := append([]byte{0x99, 0xff, 0xff}, bytes.Repeat([]byte{0x01}, 0xffff)...)
	for name, value := range map[string][]byte{
		"tag":               {0xc1, 0x05},
		"indefinite length": {0x9f, 0x01, 0xff},
		"undefined":         {0xf7},
		"nesting":           append(bytes.Repeat([]byte{0x81}, crdt.MaxNestedLevels), 0x01),
		"too many items":    many,
	} {
		if err := c.ws.Write(context.Background(), websocket.MessageBinary, with(value)); err != nil {
			t.Fatal(err)
		}
		m, err := c.recvErr(5 * time.Second)
		if p, ok := m.(proto.Pushed); err != nil || !ok || p.Code != proto.CodeMalformed {
			t.Fatalf("%s: got %+v (%v), want pushed malformed", name, m, err)
		}
		// The same body over HTTP, the replica named by its device part.
		a := ts.post(t, proto.PathPush, tok, append([]byte("\xa2\x09\x62c1"), with(value)[len("\xa2\x00\x64push"):]...))
		if a.status != 400 || a.errorCode(t) != proto.CodeMalformed {
			t.Fatalf("%s over HTTP: %d, want 400 malformed", name, a.status)
		}
	}
	ts.pushLive(t, c, s, tok, change(t, "notes", "a", "f", 1))
	if p := recvPushed(t, c); len(p.Results) != 1 || p.Results[0].Status != proto.StatusApplied {
		t.Fatalf("push after the refusals: %+v", p)
	}
}

// A push without a change list (key 2 absent or null) is not readable as
// a whole: malformed, over HTTP and over a live session (docs/protocol.md,
// "Push"); an empty list is a push of no changes.
func TestPushWithoutChangeList(t *testing.T) {
	ts := newTestServer(t, nil)
	tok := ts.token(t, "alice", []string{"notes"}, []string{"notes"})
	c, _ := ts.openPusher(t, tok)
	for name, body := range map[string]string{
		"absent": "\xa1\x09\x62c1",
		"null":   "\xa2\x02\xf6\x09\x62c1",
		"empty":  "\xa2\x02\x80\x09\x62c1",
	} {
		want := proto.CodeMalformed
		if name == "empty" {
			want = ""
		}
		a := ts.post(t, proto.PathPush, tok, []byte(body))
		got := ""
		if a.status != 200 {
			got = a.errorCode(t)
		}
		if got != want {
			t.Errorf("HTTP push, change list %s: %d %q, want %q", name, a.status, got, want)
		}
		live := "\xa2\x00\x64push" + body[1:len(body)-4]
		if name == "absent" {
			live = "\xa1\x00\x64push"
		}
		if err := c.ws.Write(context.Background(), websocket.MessageBinary, []byte(live)); err != nil {
			t.Fatal(err)
		}
		p := recvPushed(t, c)
		if p.Code != want || (want == "" && (p.Results == nil || len(p.Results) != 0)) {
			t.Errorf("live push, change list %s: %+v, want %q", name, p, want)
		}
	}
}

// A live push's request id is the server's (docs/protocol.md, "Pushing
// over a live session"): a key 4 in the client's push, of whatever type
// or size, is an unknown envelope key, ignored; the answer carries an id
// the server made.
func TestLivePushClientRequestIDIgnored(t *testing.T) {
	ts := newTestServer(t, nil)
	tok := ts.token(t, "alice", []string{"notes"}, []string{"notes"})
	c, s := ts.openPusher(t, tok)
	good := ts.encodePush(t, s, tok, change(t, "notes", "a", "f", 1))
	if good[0] != 0xa2 {
		t.Fatalf("push %x: not a 2-key map", good)
	}
	for name, key4 := range map[string][]byte{
		"text":     []byte("\x66mine-1"),
		"negative": {0x24},
		"huge":     {0x1b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		"float":    {0xf9, 0x3c, 0x00},
		"map":      {0xa1, 0x01, 0x02},
	} {
		msg := append(append([]byte{0xa3}, good[1:]...), append([]byte{0x04}, key4...)...)
		if err := c.ws.Write(context.Background(), websocket.MessageBinary, msg); err != nil {
			t.Fatal(err)
		}
		p := recvPushed(t, c)
		if len(p.Results) != 1 || p.RequestID == "" || p.RequestID == "mine-1" || crdt.ValidateReplica(p.RequestID) != nil {
			t.Fatalf("key 4 %s: %+v, want the push applied under an id of the server's", name, p)
		}
	}
}
