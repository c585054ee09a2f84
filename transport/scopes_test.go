package transport

import (
	"bytes"
	"net/http"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/crdt/scope"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/transport/proto"
)

// withRules swaps ts's engine for one on the same store with the rules of
// a rules file, its config edited by edit when given.
func (ts *testServer) withRules(t *testing.T, rules string, edit ...func(*engine.Config)) {
	t.Helper()
	rs, err := engine.ParseRules([]byte(rules))
	if err != nil {
		t.Fatal(err)
	}
	cfg := engine.Config{Store: ts.store, Replica: "srv-rules", PollInterval: -1, Rules: rs}
	for _, e := range edit {
		e(&cfg)
	}
	eng, err := engine.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Close() })
	ts.srv.eng = eng
	ts.eng = eng
}

func mustScope(t *testing.T, text string) *scope.Pred {
	t.Helper()
	p, err := scope.Parse(text)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

var setCount atomic.Uint32

// set is a change setting fields of id, stamped now by the pusher (each
// later than the one before within a millisecond).
func set(t *testing.T, coll, id string, fields map[string]any) crdt.Change {
	t.Helper()
	r := crdt.Record{ID: id, Fields: map[string]crdt.Field{}}
	st := crdt.Stamp{Wall: time.Now().UnixMilli(), Logical: uint32(setCount.Add(1) % 60000), Replica: ownReplica}
	for name, v := range fields {
		r.Fields[name] = crdt.Field{Stamp: st, Value: mustValue(t, v)}
	}
	return crdt.Change{Collection: coll, Record: r}
}

// pullAll pulls coll from cursor under a client scope until more is
// false: the ids of the records and the leave entries received, and the
// cursor after.
func (ts *testServer) pullAll(t *testing.T, token, coll string, cursor []byte, sc *scope.Pred) (ids []string, leaves [][]byte, next []byte) {
	t.Helper()
	for {
		a := ts.post(t, proto.PathPull, token, proto.PullRequest{Collection: coll, Cursor: cursor, Scope: sc.Encode()})
		if a.status != http.StatusOK {
			t.Fatalf("pull: %d %s", a.status, a.errorCode(t))
		}
		var resp proto.PullResponse
		if err := proto.Decode(a.body, &resp); err != nil {
			t.Fatal(err)
		}
		if len(resp.Seals) != len(resp.Records) {
			t.Fatalf("%d seals for %d records", len(resp.Seals), len(resp.Records))
		}
		for _, r := range resp.Records {
			ids = append(ids, r.ID)
		}
		leaves = append(leaves, resp.Leaves...)
		cursor = resp.Next
		if !resp.More {
			slices.Sort(ids)
			return ids, leaves, cursor
		}
	}
}

func leavesOf(coll string, ids ...string) [][]byte {
	var out [][]byte
	for _, id := range ids {
		out = append(out, proto.LeaveDigest(coll, id))
	}
	return out
}

func sameLeaves(got, want [][]byte) bool {
	if len(got) != len(want) {
		return false
	}
	for _, w := range want {
		if !slices.ContainsFunc(got, func(g []byte) bool { return bytes.Equal(g, w) }) {
			return false
		}
	}
	return true
}

// A pull that says it holds nothing (key 7) gets its scope's records and
// no leave entries on its first pass; without key 7, the same pull carries
// a leave for every other record.
func TestFreshScopedPull(t *testing.T) {
	ts := newTestServer(t, nil)
	tok := ts.token(t, "alice", []string{"notes"}, []string{"notes"})
	ts.push(t, tok,
		set(t, "notes", "n1", map[string]any{"list": "a"}),
		set(t, "notes", "n2", map[string]any{"list": "b"}),
		set(t, "notes", "n3", map[string]any{"list": "b"}),
	)
	listA := mustScope(t, `list == "a"`)
	a := ts.post(t, proto.PathPull, tok, proto.PullRequest{Collection: "notes", Scope: listA.Encode(), Fresh: true})
	var resp proto.PullResponse
	if err := proto.Decode(a.body, &resp); err != nil || a.status != http.StatusOK {
		t.Fatalf("fresh pull: %d %v", a.status, err)
	}
	if len(resp.Records) != 1 || resp.Records[0].ID != "n1" || len(resp.Leaves) != 0 || resp.More {
		t.Fatalf("fresh pull: %d records, %d leaves, more %v", len(resp.Records), len(resp.Leaves), resp.More)
	}
	// From there on, leaves as usual.
	ts.push(t, tok, set(t, "notes", "n1", map[string]any{"list": "b"}))
	ids, leaves, _ := ts.pullAll(t, tok, "notes", resp.Next, listA)
	if len(ids) != 0 || !sameLeaves(leaves, leavesOf("notes", "n1")) {
		t.Fatalf("after the first pass: %v, %d leaves", ids, len(leaves))
	}
	_, leaves, _ = ts.pullAll(t, tok, "notes", nil, listA)
	if !sameLeaves(leaves, leavesOf("notes", "n1", "n2", "n3")) {
		t.Fatalf("without key 7: %d leaves, want 3", len(leaves))
	}
}

// A client's scope narrows its pull: matching records come whole, the
// others as leave entries; a record moved out later is a leave; a changed
// scope from the same cursor gets the difference.
func TestScopedPull(t *testing.T) {
	ts := newTestServer(t, nil)
	tok := ts.token(t, "alice", []string{"notes"}, []string{"notes"})
	ts.push(t, tok,
		set(t, "notes", "n1", map[string]any{"list": "a"}),
		set(t, "notes", "n2", map[string]any{"list": "b"}),
		set(t, "notes", "n3", map[string]any{"list": "a"}),
	)
	listA := mustScope(t, `list == "a"`)
	ids, leaves, cur := ts.pullAll(t, tok, "notes", nil, listA)
	if !slices.Equal(ids, []string{"n1", "n3"}) || !sameLeaves(leaves, leavesOf("notes", "n2")) {
		t.Fatalf("first pull: %v, %d leaves", ids, len(leaves))
	}

	// n1 moves out: a leave, no value.
	ts.push(t, tok, set(t, "notes", "n1", map[string]any{"list": "b"}))
	ids, leaves, cur = ts.pullAll(t, tok, "notes", cur, listA)
	if len(ids) != 0 || !sameLeaves(leaves, leavesOf("notes", "n1")) {
		t.Fatalf("after the move: %v, %d leaves", ids, len(leaves))
	}

	// The client switches to list b from the same cursor: it gets n1 and
	// n2 (newly in), a leave for n3 (out), nothing else.
	ids, leaves, cur = ts.pullAll(t, tok, "notes", cur, mustScope(t, `list == "b"`))
	if !slices.Equal(ids, []string{"n1", "n2"}) || !sameLeaves(leaves, leavesOf("notes", "n3")) {
		t.Fatalf("after the scope change: %v, %d leaves", ids, len(leaves))
	}
	ids, leaves, _ = ts.pullAll(t, tok, "notes", cur, mustScope(t, `list == "b"`))
	if len(ids) != 0 || len(leaves) != 0 {
		t.Fatalf("caught up: %v, %d leaves", ids, len(leaves))
	}

	// Unscoped reads are as before: every record, tombstones included.
	ids, leaves, _ = ts.pullAll(t, tok, "notes", nil, nil)
	if len(ids) != 3 || len(leaves) != 0 {
		t.Fatalf("unscoped: %v, %d leaves", ids, len(leaves))
	}

	// A scope that does not decode, or names a claim the token lacks, is
	// invalid.
	for _, bad := range [][]byte{{0x01}, mustScope(t, `team == $claims.team`).Encode()} {
		a := ts.post(t, proto.PathPull, tok, proto.PullRequest{Collection: "notes", Scope: bad})
		if a.status != http.StatusBadRequest || a.errorCode(t) != proto.CodeInvalid {
			t.Fatalf("scope %x: %d", bad, a.status)
		}
	}
}

// The rules' write scope holds pushes: a create outside, a move out and an
// edit of a record outside are refused out_of_scope, a delete inside
// passes; the rules' schema refuses schema; reads are held to the rules'
// read scope.
func TestWriteRules(t *testing.T) {
	ts := newTestServer(t, nil)
	ts.withRules(t, `{"todos": {"scope": "owner == $sub",
		"schema": {"fields": {"owner": {"type": "string", "required": true}, "title": {"type": "string", "maxBytes": 10}}}}}`)
	alice := ts.token(t, "alice", []string{"todos"}, []string{"todos"})
	bob := ts.token(t, "bob", []string{"todos"}, []string{"todos"})
	if res := ts.push(t, bob, set(t, "todos", "b1", map[string]any{"owner": "bob", "title": "bob's"})); res[0].Status != proto.StatusApplied {
		t.Fatalf("bob's own: %+v", res[0])
	}
	res := ts.push(t, alice,
		set(t, "todos", "a1", map[string]any{"owner": "alice", "title": "mine"}),
		set(t, "todos", "a2", map[string]any{"owner": "bob", "title": "for bob"}), // create outside
		set(t, "todos", "b1", map[string]any{"title": "edited"}),                  // edit outside
		set(t, "todos", "a3", map[string]any{"owner": "alice", "title": "far too long a title"}),
		set(t, "todos", "a4", map[string]any{"title": "no owner"}),
	)
	want := []string{"", proto.CodeOutOfScope, proto.CodeOutOfScope, proto.CodeSchema, proto.CodeOutOfScope}
	for i, r := range res {
		if r.Code != want[i] {
			t.Errorf("change %d: %+v, want %q", i, r, want[i])
		}
	}
	// A move out is refused; a delete inside passes.
	if res := ts.push(t, alice, set(t, "todos", "a1", map[string]any{"owner": "bob"})); res[0].Code != proto.CodeOutOfScope {
		t.Fatalf("move out: %+v", res[0])
	}
	del := crdt.Change{Collection: "todos", Record: crdt.DeleteRecord("a1", crdt.Stamp{Wall: time.Now().UnixMilli(), Logical: 60001, Replica: ownReplica})}
	if res := ts.push(t, alice, del); res[0].Status != proto.StatusApplied {
		t.Fatalf("delete inside: %+v", res[0])
	}
	// Bob reads his record; the deleted one is a leave for him too.
	ids, leaves, _ := ts.pullAll(t, bob, "todos", nil, nil)
	if !slices.Equal(ids, []string{"b1"}) || !sameLeaves(leaves, leavesOf("todos", "a1")) {
		t.Fatalf("bob reads %v, %d leaves", ids, len(leaves))
	}
}

// A token's cvg_scopes hold its reads and writes, with its claims bound:
// $claims.teams.
func TestTokenScopes(t *testing.T) {
	ts := newTestServer(t, nil)
	admin := ts.token(t, "admin", []string{"docs"}, []string{"docs"})
	ts.push(t, admin,
		set(t, "docs", "d1", map[string]any{"team": "red"}),
		set(t, "docs", "d2", map[string]any{"team": "blue"}),
		set(t, "docs", "d3", map[string]any{"team": "green"}),
	)
	carol := ts.issue(t, TokenSpec{Subject: "carol", Read: []string{"docs"}, Write: []string{"docs"},
		Claims: map[string]any{"teams": []string{"red", "green"}},
		Scopes: map[string]*scope.Pred{"docs": mustScope(t, `team in $claims.teams`)}})
	p, err := ts.jwt.Authenticate(t.Context(), carol)
	if err != nil || p.Scopes["docs"] == nil || p.Claims["teams"] == nil {
		t.Fatalf("principal: %+v %v", p, err)
	}
	ids, leaves, _ := ts.pullAll(t, carol, "docs", nil, nil)
	if !slices.Equal(ids, []string{"d1", "d3"}) || !sameLeaves(leaves, leavesOf("docs", "d2")) {
		t.Fatalf("carol reads %v, %d leaves", ids, len(leaves))
	}
	res := ts.push(t, carol,
		set(t, "docs", "d1", map[string]any{"title": "ok"}),
		set(t, "docs", "d2", map[string]any{"title": "not mine"}),
		set(t, "docs", "d4", map[string]any{"team": "blue"}),
	)
	if res[0].Status != proto.StatusApplied || res[1].Code != proto.CodeOutOfScope || res[2].Code != proto.CodeOutOfScope {
		t.Fatalf("carol writes: %+v", res)
	}
	// A client may narrow, never widen.
	ids, _, _ = ts.pullAll(t, carol, "docs", nil, mustScope(t, `team == "blue" or team == "green"`))
	if !slices.Equal(ids, []string{"d3"}) {
		t.Fatalf("narrowed: %v", ids)
	}
	// A token whose imposed scope names a claim it lacks sees nothing.
	dave := ts.issue(t, TokenSpec{Subject: "dave", Read: []string{"docs"},
		Scopes: map[string]*scope.Pred{"docs": mustScope(t, `team in $claims.teams`)}})
	if ids, leaves, _ := ts.pullAll(t, dave, "docs", nil, nil); len(ids) != 0 || len(leaves) != 3 {
		t.Fatalf("dave reads %v, %d leaves", ids, len(leaves))
	}
	// An invalid cvg_scopes makes the token unauthenticated.
	bad, err := ts.jwt.IssueToken(TokenSpec{Subject: "eve", Read: []string{"docs"}, TTL: time.Hour,
		Claims: map[string]any{"x": 1}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ts.jwt.IssueToken(TokenSpec{Subject: "eve", TTL: time.Hour, Claims: map[string]any{proto.ClaimScopes: map[string]any{}}}); err == nil {
		t.Fatal("IssueToken let Claims set cvg_scopes")
	}
	if code := ts.pullCode(t, bad, "docs"); code != "" {
		t.Fatalf("plain token: %s", code)
	}
	forged := signRaw(t, map[string]any{"sub": "eve", "exp": time.Now().Add(time.Hour).Unix(), "read": []string{"docs"},
		proto.ClaimScopes: map[string]any{"docs": []any{"eq", "team"}}})
	if code := ts.pullCode(t, forged, "docs"); code != proto.CodeUnauthenticated {
		t.Fatalf("invalid cvg_scopes: %q", code)
	}
	array := signRaw(t, map[string]any{"sub": "eve", "exp": time.Now().Add(time.Hour).Unix(), "read": []string{"docs"},
		proto.ClaimScopes: map[string]any{"docs": []any{"eq", "team", "blue"}}})
	if ids, _, _ := ts.pullAll(t, array, "docs", nil, nil); !slices.Equal(ids, []string{"d2"}) {
		t.Fatalf("array form: %v", ids)
	}
}

// Restore admits a sealed record only inside the restorer's read scope.
func TestRestoreOutsideScope(t *testing.T) {
	ts := newTestServer(t, nil)
	admin := ts.token(t, "admin", []string{"docs"}, []string{"docs"})
	ts.push(t, admin, set(t, "docs", "d1", map[string]any{"team": "red"}), set(t, "docs", "d2", map[string]any{"team": "blue"}))
	resp := ts.pull(t, admin, "docs", 0)
	red := ts.issue(t, TokenSpec{Subject: "red", Read: []string{"docs"},
		Scopes: map[string]*scope.Pred{"docs": mustScope(t, `team == "red"`)}})
	var sealed []proto.SealedRecord
	for i, r := range resp.Records {
		sealed = append(sealed, proto.SealedRecord{Record: r, Seal: resp.Seals[i]})
	}
	a := ts.post(t, proto.PathRestore, red, proto.RestoreRequest{Collection: "docs", Records: sealed})
	var res proto.RestoreResponse
	if err := proto.Decode(a.body, &res); err != nil || len(res.Results) != 2 {
		t.Fatalf("restore: %d %v", a.status, err)
	}
	for i, r := range resp.Records {
		want := ""
		if r.ID == "d2" {
			want = proto.CodeOutOfScope
		}
		if res.Results[i].Code != want {
			t.Errorf("%s: %+v, want %q", r.ID, res.Results[i], want)
		}
	}
}

// Two subscriptions of one collection with different scopes get different
// frames from one push, and neither ever receives a record outside its
// scope.
func TestLiveScopes(t *testing.T) {
	ts := newTestServer(t, nil)
	tok := ts.token(t, "alice", []string{"notes"}, []string{"notes"})
	listA, listB := mustScope(t, `list == "a"`), mustScope(t, `list == "b"`)
	a, _ := ts.open(t, tok)
	b, _ := ts.open(t, tok)
	a.send(proto.Sub{Collection: "notes", Scope: listA.Encode()})
	b.send(proto.Sub{Collection: "notes", Scope: listB.Encode()})
	for _, c := range []*liveClient{a, b} {
		if m, ok := c.recv().(proto.Changes); !ok || len(m.Records) != 0 {
			t.Fatalf("first page: %#v", m)
		}
	}
	ts.push(t, tok, set(t, "notes", "n1", map[string]any{"list": "a"}), set(t, "notes", "n2", map[string]any{"list": "b"}))
	check := func(c *liveClient, sc *scope.Pred, id string, leave string) {
		t.Helper()
		var got []string
		var leaves [][]byte
		for len(got) == 0 || len(leaves) == 0 {
			m, ok := c.recv().(proto.Changes)
			if !ok {
				t.Fatalf("got %#v", m)
			}
			for _, r := range m.Records {
				if !sc.Match(r) {
					t.Fatalf("record %s outside the subscription's scope", r.ID)
				}
				got = append(got, r.ID)
			}
			leaves = append(leaves, m.Leaves...)
		}
		if !slices.Equal(got, []string{id}) || !sameLeaves(leaves, leavesOf("notes", leave)) {
			t.Fatalf("got %v and %d leaves, want %s and a leave for %s", got, len(leaves), id, leave)
		}
	}
	check(a, listA, "n1", "n2")
	check(b, listB, "n2", "n1")
	// One group per scope.
	ts.srv.hub.mu.Lock()
	groups := len(ts.srv.hub.groups)
	ts.srv.hub.mu.Unlock()
	if groups != 2 {
		t.Fatalf("%d broadcast groups, want 2", groups)
	}
	// A client scope that does not decode is refused for its sub alone.
	a.send(proto.Sub{Collection: "notes", Scope: []byte{0x01}})
	if m, ok := a.recv().(proto.ErrorMessage); !ok || m.Code != proto.CodeInvalid || m.Collection != "notes" {
		t.Fatalf("bad scope: %#v", m)
	}
}

// signRaw signs claims as they are, as an issuer of its own would.
func signRaw(t *testing.T, claims map[string]any) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims(claims)).SignedString(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// A cursor is the client's to hold, not to write: the scope a client puts
// into one must not decide which leave entries it is sent. A reader held
// to team "red" that forges cursors carrying a scope of its choosing
// (salary == 100, salary == 200) would otherwise learn, from whether a
// blue record comes back as a leave, whether that record matches: an
// oracle on values outside its scope. Whatever scope its cursor claims,
// it is told of the same records outside its scope, over pull and sub.
func TestForgedCursorScopeLearnsNothing(t *testing.T) {
	ts := newTestServer(t, nil)
	admin := ts.token(t, "admin", []string{"docs"}, []string{"docs"})
	ts.push(t, admin,
		set(t, "docs", "d1", map[string]any{"team": "red"}),
		set(t, "docs", "d2", map[string]any{"team": "blue", "salary": 100}),
		set(t, "docs", "d3", map[string]any{"team": "blue", "salary": 200}),
	)
	red := ts.issue(t, TokenSpec{Subject: "red", Read: []string{"docs"},
		Scopes: map[string]*scope.Pred{"docs": mustScope(t, `team == "red"`)}})
	// A cursor at the head whose scope is the attacker's guess: what a
	// client can write byte by byte, made here by the engine.
	forge := func(guess string) []byte {
		t.Helper()
		page, err := ts.eng.PullScoped(t.Context(), "docs", engine.Cursor{}, engine.PageLimit{}, mustScope(t, guess))
		if err != nil || page.More {
			t.Fatalf("forging a cursor under %s: %v", guess, err)
		}
		return page.Next.Bytes()
	}
	leavesFor := func(guess string) [][]byte {
		t.Helper()
		ids, leaves, _ := ts.pullAll(t, red, "docs", forge(guess), nil)
		if slices.Contains(ids, "d2") || slices.Contains(ids, "d3") {
			t.Fatalf("a record outside the scope was sent: %v", ids)
		}
		return leaves
	}
	byPull := map[string][][]byte{}
	for _, guess := range []string{`salary == 100`, `salary == 200`} {
		byPull[guess] = leavesFor(guess)
	}
	if !sameLeaves(byPull[`salary == 100`], byPull[`salary == 200`]) {
		t.Fatalf("pull: the leave entries depend on the scope the cursor claims: %d for salary 100, %d for salary 200",
			len(byPull[`salary == 100`]), len(byPull[`salary == 200`]))
	}

	// The same over a live subscription.
	bySub := map[string][][]byte{}
	for _, guess := range []string{`salary == 100`, `salary == 200`} {
		c, _ := ts.open(t, red)
		c.send(proto.Sub{Collection: "docs", Cursor: forge(guess)})
		for {
			m, ok := c.recv().(proto.Changes)
			if !ok {
				t.Fatalf("sub: %#v", m)
			}
			bySub[guess] = append(bySub[guess], m.Leaves...)
			if !m.More {
				break
			}
		}
	}
	if !sameLeaves(bySub[`salary == 100`], bySub[`salary == 200`]) {
		t.Fatalf("sub: the leave entries depend on the scope the cursor claims: %d for salary 100, %d for salary 200",
			len(bySub[`salary == 100`]), len(bySub[`salary == 200`]))
	}
}
