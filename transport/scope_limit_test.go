package transport

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/crdt/scope"
	"github.com/convergo/convergo/transport/proto"
)

// An effective read scope over the scope limits (a client's narrowing
// within them alone, and the rules' scope beside it) is refused invalid
// over HTTP (the engine's check, engine/pull.go) and so is a live sub of
// it: error invalid naming the collection, as for a scope that does not
// decode, never a resync that sends the client to an HTTP pull only to
// be refused there, and the session goes on.
func TestEffectiveScopeOverLimitRefusedInvalid(t *testing.T) {
	ts := newTestServer(t, nil)
	ts.withRules(t, `{"notes": {"scope": "owner == $sub"}}`)
	alice := ts.token(t, "alice", []string{"notes"}, []string{"notes"})
	ts.push(t, alice, ts.bind(t, alice, []crdt.Change{change(t, "notes", "n1", "owner", "alice")})...)
	// The client's own narrowing, as large as the limits let it be alone.
	var tags []string
	for i := 0; ; i++ {
		next := append(tags, fmt.Sprintf("%q", fmt.Sprintf("t%d", i)))
		if _, err := scope.Parse("tag in [" + strings.Join(next, ", ") + "]"); err != nil {
			break
		}
		tags = next
	}
	own := mustScope(t, "tag in ["+strings.Join(tags, ", ")+"]").Encode()
	a := ts.post(t, proto.PathPull, alice, proto.PullRequest{Collection: "notes", Scope: own})
	if a.status != http.StatusBadRequest || a.errorCode(t) != proto.CodeInvalid {
		t.Fatalf("pull: %d %s, want 400 invalid", a.status, a.errorCode(t))
	}
	c, _ := ts.open(t, alice)
	c.send(proto.Sub{Collection: "notes", Scope: own})
	m, err := c.recvErr(5 * time.Second)
	if e, ok := m.(proto.ErrorMessage); err != nil || !ok || e.Code != proto.CodeInvalid || e.Collection != "notes" {
		t.Fatalf("sub: got %T %+v (%v), want error invalid for notes", m, m, err)
	}
	c.send(proto.Ping{Nonce: 7})
	if m, err := c.recvErr(5 * time.Second); err != nil {
		t.Fatalf("after the refused sub: %v, want the session to go on", err)
	} else if p, ok := m.(proto.Pong); !ok || p.Nonce != 7 {
		t.Fatalf("after the refused sub: %T %+v, want pong 7", m, m)
	}
}
