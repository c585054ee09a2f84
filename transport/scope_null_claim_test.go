package transport

import (
	"net/http"
	"slices"
	"testing"

	"github.com/convergo/convergo/crdt/scope"
	"github.com/convergo/convergo/transport/proto"
)

// A claim that is null stands for a value the principal lacks, and binds
// no scope (protocol.md, section 12): `team == $claims.team` with a null
// team must not read the records whose team is null. A list claim that
// holds null is the same lack: a backend that writes the teams of a
// user without one as [null] gave `team in $claims.teams` the records of
// no team (team: null), which no one meant it to read or write. Such a
// scope is unbound: imposed, it matches nothing; sent by a client, it is
// invalid.
func TestNullInListClaimBindsNothing(t *testing.T) {
	ts := newTestServer(t, nil)
	admin := ts.token(t, "admin", []string{"docs"}, []string{"docs"})
	ts.push(t, admin,
		set(t, "docs", "d1", map[string]any{"team": "red"}),
		set(t, "docs", "d2", map[string]any{"team": nil}),
	)
	in := mustScope(t, `team in $claims.teams`)
	for _, teams := range [][]any{{nil}, {"red", nil}} {
		tok := ts.issue(t, TokenSpec{Subject: "carol", Read: []string{"docs"}, Write: []string{"docs"},
			Claims: map[string]any{"teams": teams}, Scopes: map[string]*scope.Pred{"docs": in}})
		if ids, _, _ := ts.pullAll(t, tok, "docs", nil, nil); len(ids) != 0 {
			t.Errorf("teams %v: imposed, reads %v, want nothing", teams, ids)
		}
		if res := ts.push(t, tok, set(t, "docs", "d3", map[string]any{"team": nil})); res[0].Code != proto.CodeOutOfScope {
			t.Errorf("teams %v: creates a record of team null: %+v", teams, res[0])
		}
		plain := ts.issue(t, TokenSpec{Subject: "carol", Read: []string{"docs"}, Claims: map[string]any{"teams": teams}})
		if a := ts.post(t, proto.PathPull, plain, proto.PullRequest{Collection: "docs", Scope: in.Encode()}); a.status == http.StatusOK || a.errorCode(t) != proto.CodeInvalid {
			code := "ok"
			if a.status != http.StatusOK {
				code = a.errorCode(t)
			}
			t.Errorf("teams %v: a client's own scope bound: %q, want invalid", teams, code)
		}
	}
	// A list without null binds as it is.
	tok := ts.issue(t, TokenSpec{Subject: "carol", Read: []string{"docs"},
		Claims: map[string]any{"teams": []any{"red"}}, Scopes: map[string]*scope.Pred{"docs": in}})
	if ids, _, _ := ts.pullAll(t, tok, "docs", nil, nil); !slices.Equal(ids, []string{"d1"}) {
		t.Fatalf("teams [red]: reads %v, want d1", ids)
	}
}
