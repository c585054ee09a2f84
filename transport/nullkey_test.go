package transport

import (
	"net/http"
	"testing"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/transport/proto"
)

// TestNullMapKeyUnderSchema: a value that is a map with a null key is a
// valid field value, and a collection whose schema types the field
// decodes it to check its type. That decoding panicked (a nil key has no
// reflect type), which over HTTP was answered internal and over a live
// session ended the server process: any client allowed to write the
// collection could stop the server for every tenant. The change is now
// judged as any other value: refused schema (a map is no string).
func TestNullMapKeyUnderSchema(t *testing.T) {
	ts := newTestServer(t, nil)
	ts.withRules(t, `{"todos": {"schema": {"fields": {"title": {"type": "string"}}}}}`)
	tok := ts.token(t, "alice", []string{"todos"}, []string{"todos"})
	nullKey := func(id string) crdt.Change {
		c := set(t, "todos", id, map[string]any{"title": "x"})
		f := c.Record.Fields["title"]
		f.Value = []byte{0xa1, 0xf6, 0x00} // {null: 0}
		c.Record.Fields["title"] = f
		return c
	}

	a := ts.post(t, proto.PathPush, tok, proto.PushRequest{Replica: proto.ReplicaFor("alice", ownReplica), Changes: ts.bind(t, tok, []crdt.Change{nullKey("h")})})
	if a.status != http.StatusOK {
		t.Fatalf("HTTP push: status %d %s; want 200", a.status, a.errorCode(t))
	}
	var resp proto.PushResponse
	if err := proto.Decode(a.body, &resp); err != nil {
		t.Fatal(err)
	}
	if len(resp.Results) != 1 || resp.Results[0].Code != proto.CodeSchema {
		t.Fatalf("HTTP push: %+v; want refused schema", resp.Results)
	}

	c, s := ts.openPusher(t, tok)
	ts.pushLive(t, c, s, tok, nullKey("l"))
	p := recvPushed(t, c)
	if len(p.Results) != 1 || p.Results[0].Code != proto.CodeSchema {
		t.Fatalf("live push: %+v; want refused schema", p)
	}
}
