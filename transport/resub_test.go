package transport

import (
	"testing"

	"github.com/convergo/convergo/transport/proto"
)

// A sub of a collection the session streams already ends the old
// subscription, whether the new one is taken or refused: a refused sub
// (an error with key 3) leaves its collection not streamed
// (docs/protocol.md, section 9), so no page of the old subscription may
// follow the refusal, as none follows an unsub. A client that changes its
// scope to one the server refuses must not go on receiving pages read
// under the old one, nor hold the subscription (and its subject's count)
// it was told it does not have.
func TestLiveResubRefusedEndsTheOld(t *testing.T) {
	for _, tc := range []struct {
		name string
		sub  proto.Sub
		code string
	}{
		{"unreadable cursor", proto.Sub{Collection: "a", Cursor: []byte("garbage")}, proto.CodeInvalid},
		{"unbound scope", proto.Sub{Collection: "a", Scope: mustValue(t, []any{"eq", "f", map[string]any{"$": "claims.none"}})}, proto.CodeInvalid},
		{"version ahead", proto.Sub{Collection: "a", Version: 7}, proto.CodeSchemaAhead},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestServer(t, func(c *Config) { c.Limits.Rate = -1 })
			tok := ts.token(t, "alice", []string{"a", "b"}, []string{"a", "b"})
			cl, _ := ts.open(t, tok)
			cl.send(proto.Sub{Collection: "a"})
			if m, ok := cl.recv().(proto.Changes); !ok || m.Collection != "a" {
				t.Fatalf("first page of a: %#v", m)
			}
			cl.send(tc.sub)
			if m, ok := cl.recv().(proto.ErrorMessage); !ok || m.Code != tc.code || m.Collection != "a" {
				t.Fatalf("second sub of a: got %#v, want error %s with collection a", m, tc.code)
			}
			c := ts.onlyConn(t)
			c.mu.Lock()
			_, still := c.subs["a"]
			c.mu.Unlock()
			if still {
				t.Fatalf("a refused sub of a left the old subscription of a streaming")
			}
			// Nor does any page of a reach the client after the refusal:
			// a change to a, then b's first page and a pong behind it.
			ts.push(t, tok, change(t, "a", "r1", "f", 1))
			cl.send(proto.Sub{Collection: "b"})
			cl.send(proto.Ping{Nonce: 1})
			for {
				m := cl.recv()
				if collectionOf(m) == "a" {
					t.Fatalf("a frame of a after its sub was refused: %#v", m)
				}
				if p, ok := m.(proto.Pong); ok && p.Nonce == 1 {
					break
				}
			}
		})
	}
}
