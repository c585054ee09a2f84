package transport

import (
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/transport/proto"
)

// rawPushResults posts body, a push in raw CBOR, and returns its results;
// the push must be answered 200.
func (ts *testServer) rawPushResults(t *testing.T, token string, body map[int]any) []proto.PushResult {
	t.Helper()
	raw, err := crdt.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	a := ts.post(t, proto.PathPush, token, raw)
	if a.status != http.StatusOK {
		t.Fatalf("push: status %d, code %s", a.status, a.errorCode(t))
	}
	var resp proto.PushResponse
	if err := proto.Decode(a.body, &resp); err != nil {
		t.Fatal(err)
	}
	return resp.Results
}

// rawChange is a change in wire form setting field x of record id to 1,
// stamped [wall, logical, who], who a replica id or a table index.
func rawChange(coll, id string, wall uint64, logical uint64, who any) map[int]any {
	return map[int]any{1: coll, 2: map[int]any{1: id, 3: map[string]any{"x": []any{wall, logical, who, 1}}}}
}

// Compact stamps at their edges (docs/protocol.md, "Compact stamps"): a
// hostile push refuses only its own changes, with the documented codes,
// and an honest change beside them, and the next honest push, apply.
func TestAttackCompactStampEdges(t *testing.T) {
	ts := newTestServer(t, nil)
	tok := ts.token(t, "mallory", []string{"m.*"}, []string{"m.*"})
	own := proto.ReplicaFor("mallory", "d1")
	now := uint64(time.Now().UnixMilli())
	honest := func(id string) map[int]any { return rawChange("m.notes", id, now, 0, uint64(0)) }

	dup := make([]string, crdt.MaxContainerItems-1) // key 7 at its item bound, every entry the pusher itself
	for i := range dup {
		dup[i] = own
	}
	for _, tc := range []struct {
		name string
		body map[int]any
		want []string // per change: "" applied, else the code
	}{
		{"base at MaxWall, a wall one past it", map[int]any{1: own, 2: []any{rawChange("m.notes", "a", 1, 0, uint64(0))}, 8: uint64(crdt.MaxWall)},
			[]string{proto.CodeInvalid}},
		{"wall at MaxWall", map[int]any{1: own, 2: []any{rawChange("m.notes", "a", crdt.MaxWall, 0, uint64(0)), honest("h1")}},
			[]string{proto.CodeClockDrift, ""}},
		{"wall past MaxWall", map[int]any{1: own, 2: []any{rawChange("m.notes", "a", crdt.MaxWall+1, 0, uint64(0)), honest("h2")}},
			[]string{proto.CodeInvalid, ""}},
		{"index 2^64-1", map[int]any{1: own, 2: []any{rawChange("m.notes", "a", now, 0, uint64(1<<64-1)), honest("h3")}},
			[]string{proto.CodeMalformed, ""}},
		{"index just past the table", map[int]any{1: own, 2: []any{rawChange("m.notes", "a", now, 0, uint64(2)), honest("h4")}, 7: []string{own}},
			[]string{proto.CodeMalformed, ""}},
		{"table of duplicates, last index", map[int]any{1: own, 2: []any{rawChange("m.notes", "a", now, 0, uint64(len(dup))), honest("h5")}, 7: dup},
			[]string{"", ""}},
		{"counter one past what a clock issues", map[int]any{1: own, 2: []any{rawChange("m.notes", "a", now, crdt.MaxIssuedLogical+1, uint64(0)), honest("h6")}},
			[]string{proto.CodeInvalid, ""}},
		{"counter 2^64-1", map[int]any{1: own, 2: []any{rawChange("m.notes", "a", now, 1<<64-1, uint64(0)), honest("h7")}},
			[]string{proto.CodeMalformed, ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := ts.rawPushResults(t, tok, tc.body)
			var got []string
			for _, r := range res {
				got = append(got, r.Code)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("codes %q, want %q (%+v)", got, tc.want, res)
			}
		})
	}
	// A base outside its range is an envelope key of the wrong value: the
	// push is malformed whole, as a table of something other than ids.
	raw, err := crdt.Marshal(map[int]any{1: own, 2: []any{rawChange("m.notes", "a", 0, 0, uint64(0))}, 8: uint64(1) << 63})
	if err != nil {
		t.Fatal(err)
	}
	if a := ts.post(t, proto.PathPush, tok, raw); a.status != http.StatusBadRequest || a.errorCode(t) != proto.CodeMalformed {
		t.Fatalf("base past MaxWall: status %d, want 400 malformed", a.status)
	}
	if r := ts.push(t, tok, change(t, "m.notes", "after", "x", 1)); r[0].Status != proto.StatusApplied {
		t.Fatalf("an honest push after the attacks: %+v", r[0])
	}
}
