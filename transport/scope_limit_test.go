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

// An effective read scope nested deeper, or of more predicates, than the
// scope limits allow (a client's narrowing within them alone, and the
// rules' scope beside it) is refused invalid too, over HTTP and live.
// Served, its pages' cursors carry it, and the server reads back no
// cursor whose scope is over the limits: the reader was answered a page,
// then refused invalid at its next pull from that cursor.
func TestEffectiveScopeOverDepthOrCountRefusedInvalid(t *testing.T) {
	ts := newTestServer(t, nil)
	ts.withRules(t, `{"notes": {"scope": "owner == $sub"}}`)
	alice := ts.token(t, "alice", []string{"notes"}, []string{"notes"})
	ts.push(t, alice, ts.bind(t, alice, []crdt.Change{change(t, "notes", "n1", "owner", "alice")})...)
	// As deep as the limits let a scope be alone, an "or" at the top,
	// which the rules' "and" beside it nests one level deeper.
	deep := []any{"eq", "tag", "t1"}
	for d := 2; d <= scope.MaxDepth; d++ {
		op := "and"
		if d%2 == 0 {
			op = "or"
		}
		deep = []any{op, deep, []any{"eq", "tag", fmt.Sprint("t", d)}}
	}
	// As many predicates as the limits let a scope hold alone.
	many := []any{"or"}
	for i := range scope.MaxNodes - 1 {
		many = append(many, []any{"eq", "n", i})
	}
	for name, v := range map[string][]any{"deep": deep, "many": many} {
		t.Run(name, func(t *testing.T) {
			own, err := scope.FromValue(v)
			if err != nil {
				t.Fatalf("the client's scope alone: %v", err)
			}
			a := ts.post(t, proto.PathPull, alice, proto.PullRequest{Collection: "notes", Scope: own.Encode()})
			if a.status == http.StatusOK {
				var p proto.PullResponse
				if err := proto.Decode(a.body, &p); err != nil {
					t.Fatal(err)
				}
				next := ts.post(t, proto.PathPull, alice, proto.PullRequest{Collection: "notes", Cursor: p.Next, Scope: own.Encode()})
				t.Fatalf("pull: 200, want 400 invalid; the pull from its next cursor: %d %s", next.status, next.errorCode(t))
			}
			if a.status != http.StatusBadRequest || a.errorCode(t) != proto.CodeInvalid {
				t.Fatalf("pull: %d %s, want 400 invalid", a.status, a.errorCode(t))
			}
			c, _ := ts.open(t, alice)
			c.send(proto.Sub{Collection: "notes", Scope: own.Encode()})
			m, err := c.recvErr(5 * time.Second)
			if e, ok := m.(proto.ErrorMessage); err != nil || !ok || e.Code != proto.CodeInvalid || e.Collection != "notes" {
				t.Fatalf("sub: got %T %+v (%v), want error invalid for notes", m, m, err)
			}
		})
	}
}

// A client's own scope over proto.MaxScopeBytes (the one byte limit both
// clients refuse locally with the same code: the Go client's
// ErrScopeTooLarge, which matches ErrInvalid, the browser client's
// setScope) is refused invalid by the server, over HTTP and live: the
// code the clients use for it is the server's.
func TestOwnScopeOverByteLimitRefusedInvalid(t *testing.T) {
	ts := newTestServer(t, nil)
	alice := ts.token(t, "alice", []string{"notes"}, []string{"notes"})
	values := []any{}
	var own []byte
	for i := 0; len(own) <= proto.MaxScopeBytes; i++ {
		values = append(values, fmt.Sprintf("value-%04d", i))
		var err error
		if own, err = crdt.Marshal([]any{"in", "tag", values}); err != nil {
			t.Fatal(err)
		}
	}
	a := ts.post(t, proto.PathPull, alice, proto.PullRequest{Collection: "notes", Scope: own})
	if a.status != http.StatusBadRequest || a.errorCode(t) != proto.CodeInvalid {
		t.Fatalf("pull with a scope of %d bytes: %d %s, want 400 invalid", len(own), a.status, a.errorCode(t))
	}
	c, _ := ts.open(t, alice)
	c.send(proto.Sub{Collection: "notes", Scope: own})
	m, err := c.recvErr(5 * time.Second)
	if e, ok := m.(proto.ErrorMessage); err != nil || !ok || e.Code != proto.CodeInvalid || e.Collection != "notes" {
		t.Fatalf("sub with a scope of %d bytes: got %T %+v (%v), want error invalid for notes", len(own), m, m, err)
	}
}
