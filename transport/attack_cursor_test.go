package transport

import (
	"bytes"
	"net/http"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt/scope"
	"github.com/convergo/convergo/transport/proto"
)

// A cursor the server made is not tied to its reader: red, held to team
// red, replays a cursor made for a reader of both teams (one it got from
// that reader), over pull and sub. It is a change of scope from the
// cursor's, so red is told of blue records only by leave entries, as from
// the beginning, and never of a blue id or value.
func TestAttackCursorOfAWiderReader(t *testing.T) {
	ts := newTestServer(t, nil)
	admin := ts.token(t, "admin", []string{"docs"}, []string{"docs"})
	ts.push(t, admin,
		set(t, "docs", "r1", map[string]any{"team": "red", "title": "red one"}),
		set(t, "docs", "blue-secret-id", map[string]any{"team": "blue", "title": bobsSecret}))
	both := ts.issue(t, TokenSpec{Subject: "both", Read: []string{"docs"},
		Scopes: map[string]*scope.Pred{"docs": mustScope(t, `team in ["red", "blue"]`)}})
	red := ts.issue(t, TokenSpec{Subject: "red", Read: []string{"docs"},
		Scopes: map[string]*scope.Pred{"docs": mustScope(t, `team == "red"`)}})
	ids, _, wide := ts.pullAll(t, both, "docs", nil, nil)
	if len(ids) != 2 {
		t.Fatalf("the wide reader read %v", ids)
	}
	// A blue change after the cursor, and one of the record both held.
	ts.push(t, admin, set(t, "docs", "blue-secret-id", map[string]any{"title": bobsSecret + "!"}),
		set(t, "docs", "b2", map[string]any{"team": "blue", "title": bobsSecret}))
	leaks := func(b []byte) bool {
		return bytes.Contains(b, []byte("blue-secret-id")) || bytes.Contains(b, []byte(bobsSecret)) || bytes.Contains(b, []byte("b2"))
	}
	if a := ts.post(t, proto.PathPull, both, proto.PullRequest{Collection: "docs", Cursor: wide}); !leaks(a.body) {
		t.Fatal("the wide reader's pull carries no blue record: the check below would see nothing")
	}
	cursor := wide
	for pages := 0; pages < 10; pages++ {
		a := ts.post(t, proto.PathPull, red, proto.PullRequest{Collection: "docs", Cursor: cursor})
		if a.status != http.StatusOK {
			t.Fatalf("red's pull: %d %s", a.status, a.errorCode(t))
		}
		if leaks(a.body) {
			t.Fatalf("red's pull from the wide cursor carries a blue record")
		}
		var p proto.PullResponse
		if err := proto.Decode(a.body, &p); err != nil {
			t.Fatal(err)
		}
		for _, r := range p.Records {
			if r.ID != "r1" {
				t.Fatalf("red was sent %s", r.ID)
			}
		}
		if cursor = p.Next; !p.More {
			break
		}
	}
	c, _ := ts.open(t, red)
	c.send(proto.Sub{Collection: "docs", Cursor: wide})
	for {
		m, err := c.recvErr(time.Second)
		if err != nil {
			break
		}
		if ch, ok := m.(proto.Changes); ok {
			for _, r := range ch.Records {
				if r.ID != "r1" {
					t.Fatalf("red's sub from the wide cursor was sent %s", r.ID)
				}
			}
			if !ch.More {
				break
			}
		}
	}
}
