package transport

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/transport/proto"
)

// sibling starts a second server on ts's engine, as a second instance on
// the same store.
func (ts *testServer) sibling(t *testing.T) *testServer {
	t.Helper()
	srv, err := New(Config{Engine: ts.eng, Authorizer: ts.jwt})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		hs.Close()
	})
	return &testServer{Server: hs, srv: srv, eng: ts.eng, store: ts.store, jwt: ts.jwt}
}

// eventually retries cond for a few seconds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 5s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (ts *testServer) pullCode(t *testing.T, token, coll string) string {
	t.Helper()
	a := ts.post(t, proto.PathPull, token, proto.PullRequest{Collection: coll})
	if a.status == http.StatusOK {
		return ""
	}
	return a.errorCode(t)
}

func (ts *testServer) issue(t *testing.T, spec TokenSpec) string {
	t.Helper()
	if spec.TTL == 0 {
		spec.TTL = time.Hour
	}
	tok, err := ts.jwt.IssueToken(spec)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// A subject put on the deny list is refused revoked by every server on the
// store, over HTTP and in new live sessions, and its open sessions end
// with revoked; allowing it again restores access. Token ids and entries
// with an end work the same way.
func TestDenyList(t *testing.T) {
	a := newTestServer(t, nil)
	b := a.sibling(t)
	ctx := context.Background()
	alice := a.token(t, "alice", []string{"notes"}, []string{"notes"})
	bob := a.token(t, "bob", []string{"notes"}, []string{"notes"})
	for _, s := range []*testServer{a, b} {
		if code := s.pullCode(t, alice, "notes"); code != "" {
			t.Fatalf("before: %s", code)
		}
	}
	live, _ := b.open(t, alice)
	live.send(proto.Sub{Collection: "notes"})
	if _, ok := live.recv().(proto.Changes); !ok {
		t.Fatal("no first page")
	}

	if err := Deny(ctx, a.eng, DenyEntry{ID: DenySubject + "alice", Reason: "left the company", By: "ops"}); err != nil {
		t.Fatal(err)
	}
	m, ok := live.recv().(proto.ErrorMessage)
	if !ok || m.Code != proto.CodeRevoked {
		t.Fatalf("open session: got %#v, want error revoked", m)
	}
	if _, err := live.recvErr(5 * time.Second); err == nil {
		t.Fatal("the session stays open after revoked")
	}
	for _, s := range []*testServer{a, b} {
		eventually(t, "revoked over HTTP", func() bool { return s.pullCode(t, alice, "notes") == proto.CodeRevoked })
		if code := s.pullCode(t, bob, "notes"); code != "" {
			t.Fatalf("bob: %s", code)
		}
	}
	c, _, err := b.dial(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.send(proto.Hello{Protocol: proto.Version, Replica: "c1", Token: alice})
	if m, ok := c.recv().(proto.ErrorMessage); !ok || m.Code != proto.CodeRevoked {
		t.Fatalf("hello: got %#v, want error revoked", m)
	}
	list, err := DenyEntries(ctx, a.eng)
	if err != nil || len(list) != 1 || list[0].ID != "sub:alice" || list[0].Reason != "left the company" || !list[0].Until.IsZero() {
		t.Fatalf("list: %+v %v", list, err)
	}

	if err := Allow(ctx, a.eng, DenySubject+"alice"); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*testServer{a, b} {
		eventually(t, "allowed again", func() bool { return s.pullCode(t, alice, "notes") == "" })
	}

	// A token id: that token alone.
	carol1 := a.issue(t, TokenSpec{Subject: "carol", Read: []string{"notes"}, ID: "tok-1"})
	carol2 := a.issue(t, TokenSpec{Subject: "carol", Read: []string{"notes"}, ID: "tok-2"})
	if err := Deny(ctx, a.eng, DenyEntry{ID: DenyTokenID + "tok-1"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "token revoked", func() bool { return b.pullCode(t, carol1, "notes") == proto.CodeRevoked })
	if code := b.pullCode(t, carol2, "notes"); code != "" {
		t.Fatalf("the other token: %s", code)
	}

	// An entry whose end has passed denies nothing; one in the future does.
	if err := Deny(ctx, a.eng, DenyEntry{ID: DenySubject + "bob", Until: time.Now().Add(-time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if err := Deny(ctx, a.eng, DenyEntry{ID: DenySubject + "dave", Until: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	dave := a.token(t, "dave", []string{"notes"}, nil)
	eventually(t, "dave revoked", func() bool { return b.pullCode(t, dave, "notes") == proto.CodeRevoked })
	if code := b.pullCode(t, bob, "notes"); code != "" {
		t.Fatalf("bob after his entry ended: %s", code)
	}
}

// No pattern grants the server's own collections: not even "*".
func TestReservedCollections(t *testing.T) {
	ts := newTestServer(t, nil)
	tok := ts.token(t, "root", []string{"*"}, []string{"*"})
	if code := ts.pullCode(t, tok, proto.DenyCollection); code != proto.CodeForbidden {
		t.Fatalf("pull: %q, want forbidden", code)
	}
	res := ts.push(t, tok, change(t, proto.DenyCollection, "sub:bob", "reason", "x"))
	if res[0].Code != proto.CodeForbidden {
		t.Fatalf("push: %+v, want forbidden", res[0])
	}
	a := ts.post(t, proto.PathRestore, tok, proto.RestoreRequest{Collection: proto.DenyCollection,
		Records: []proto.SealedRecord{{Record: crdt.SetField("sub:bob", "reason", mustValue(t, "x"), crdt.Stamp{Wall: 1, Replica: "x"}), Seal: make([]byte, 16)}}})
	if a.status != http.StatusForbidden || a.errorCode(t) != proto.CodeForbidden {
		t.Fatalf("restore: %d", a.status)
	}
	c, _ := ts.open(t, tok)
	c.send(proto.Sub{Collection: proto.ReservedPrefix + "anything"})
	if m, ok := c.recv().(proto.ErrorMessage); !ok || m.Code != proto.CodeForbidden {
		t.Fatalf("sub: got %#v, want error forbidden", m)
	}
	list, err := DenyEntries(context.Background(), ts.eng)
	if err != nil || len(list) != 0 {
		t.Fatalf("the push reached the deny list: %+v %v", list, err)
	}
}

// TestDenyIDs: Deny and Allow take only ids that name a subject or a token
// id.
func TestDenyIDs(t *testing.T) {
	ts := newTestServer(t, nil)
	ctx := context.Background()
	for _, id := range []string{"", "alice", DenySubject, DenyTokenID, "user:alice"} {
		if err := Deny(ctx, ts.eng, DenyEntry{ID: id}); err == nil {
			t.Errorf("Deny(%q) succeeded", id)
		}
		if err := Allow(ctx, ts.eng, id); err == nil {
			t.Errorf("Allow(%q) succeeded", id)
		}
	}
	for _, id := range []string{DenySubject + "alice", DenyTokenID + "t1"} {
		if err := Deny(ctx, ts.eng, DenyEntry{ID: id}); err != nil {
			t.Errorf("Deny(%q): %v", id, err)
		}
		if err := Allow(ctx, ts.eng, id); err != nil {
			t.Errorf("Allow(%q): %v", id, err)
		}
	}
}
