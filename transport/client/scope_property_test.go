package client_test

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/crdt/scope"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores/memory"
	"github.com/convergo/convergo/transport"
	"github.com/convergo/convergo/transport/client"
	"github.com/convergo/convergo/transport/proto"
)

// The client-level scope property (docs/protocol.md, section 12): over a
// real server whose rule holds readers of tasks to `team in $claims.teams`,
// an admin writes, moves, deletes and re-creates records, and readers
// pull, get their tokens reissued with other claims (the same Replica and
// cursor go on: Config.TokenFunc) and change their own narrowing. No reader
// ever receives a record outside its effective scope at the time of the
// pull, and after every pull (which reads to the end of the log) each
// reader holds exactly the server's records its effective scope matches.

const (
	spColl = "tasks"
	spRule = "team in $claims.teams"
)

var (
	spTeams   = []string{"t0", "t1", "t2", "t3"}
	spOwners  = []string{"u0", "u1", "x"}
	spIDs     = []string{"r0", "r1", "r2", "r3", "r4"}
	spReaders = []string{"u0", "u1", "u2"}
)

// spToken is one token of a reader: its claims as the test models them.
type spToken struct {
	// teams is the teams claim; noTeams means the token lacks it (the
	// rule cannot be bound: the reader sees nothing).
	teams   []string
	noTeams bool
	// own, when set, is the token's cvg_scopes scope of tasks, by kind:
	// "sub" is owner == $sub, "list" is owner in ["x", "u1"].
	own string
}

func (k spToken) String() string {
	var b strings.Builder
	if k.noTeams {
		b.WriteString("no teams claim")
	} else {
		fmt.Fprintf(&b, "teams %v", k.teams)
	}
	if k.own != "" {
		fmt.Fprintf(&b, ", cvg_scopes %s", spTokenScopes[k.own])
	}
	return b.String()
}

var spTokenScopes = map[string]string{"sub": "owner == $sub", "list": `owner in ["x", "u1"]`}

// spNarrowings are the texts a reader's own named scopes take; "" is
// SetScope with nil (the whole collection).
var spNarrowings = []string{`owner == "x"`, "owner == $sub", `owner in ["u0", "x"]`, `team == "t1"`, ""}

// spReader is one reader and the model of its effective scope.
type spReader struct {
	sub    string
	r      *client.Replica
	token  atomic.Value // string: what TokenFunc hands out
	claims spToken
	narrow map[string]string // name → text of the reader's own scopes
	watch  *spWatch
}

// want reports whether the reader's effective scope, as the test models it
// without the scope package, holds rec.
func (rd *spReader) want(rec crdt.Record) bool {
	if !rec.Exists() || rd.claims.noTeams {
		return false
	}
	vals := rec.Values()
	is := func(field, v string) bool { return bytes.Equal(vals[field], spValue(v)) }
	in := func(field string, vs ...string) bool {
		return slices.ContainsFunc(vs, func(v string) bool { return is(field, v) })
	}
	if !in("team", rd.claims.teams...) {
		return false
	}
	switch rd.claims.own {
	case "sub":
		if !is("owner", rd.sub) {
			return false
		}
	case "list":
		if !in("owner", "x", "u1") {
			return false
		}
	}
	if len(rd.narrow) == 0 {
		return true
	}
	for _, text := range rd.narrow {
		switch text {
		case "":
			return true
		case `owner == "x"`:
			if is("owner", "x") {
				return true
			}
		case "owner == $sub":
			if is("owner", rd.sub) {
				return true
			}
		case `owner in ["u0", "x"]`:
			if in("owner", "u0", "x") {
				return true
			}
		case `team == "t1"`:
			if is("team", "t1") {
				return true
			}
		}
	}
	return false
}

// pred is the reader's effective read scope as section 12 builds it: the
// rule's, the token's and its own, bound with its subject and claims.
func (rd *spReader) pred(t *rapid.T) *scope.Pred {
	claims := map[string]any{"sub": rd.sub}
	if !rd.claims.noTeams {
		teams := make([]any, len(rd.claims.teams))
		for i, x := range rd.claims.teams {
			teams[i] = x
		}
		claims["teams"] = teams
	}
	params := scope.Params{"sub": rd.sub, "claims": claims}
	bind := func(text string) *scope.Pred {
		p, err := spParse(text).Bind(params)
		if err != nil {
			return scope.Or() // an imposed scope that cannot be bound: nothing
		}
		return p
	}
	var token *scope.Pred
	if rd.claims.own != "" {
		token = bind(spTokenScopes[rd.claims.own])
	}
	var own *scope.Pred
	if len(rd.narrow) > 0 {
		var ps []*scope.Pred
		for _, name := range slices.Sorted(maps.Keys(rd.narrow)) {
			if rd.narrow[name] == "" {
				ps = append(ps, nil)
				continue
			}
			p, err := spParse(rd.narrow[name]).Bind(params)
			if err != nil {
				t.Fatalf("bind %s: %v", rd.narrow[name], err)
			}
			ps = append(ps, p)
		}
		own = scope.Or(ps...)
	}
	return scope.And(bind(spRule), token, own)
}

func (rd *spReader) String() string {
	var own []string
	for _, name := range slices.Sorted(maps.Keys(rd.narrow)) {
		text := rd.narrow[name]
		if text == "" {
			text = "all"
		}
		own = append(own, name+": "+text)
	}
	return fmt.Sprintf("%s (%s; own scopes %v)", rd.sub, rd.claims, own)
}

// spWatch checks every pull answer a reader receives against its model at
// the time of the pull.
type spWatch struct {
	mu    sync.Mutex
	check func(crdt.Record) bool // the reader's model now
	bad   []string
	seen  int
}

func (w *spWatch) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil || req.URL.Path != proto.PathPull || resp.StatusCode != http.StatusOK {
		return resp, err
	}
	b, err := peekBody(resp)
	if err != nil {
		return nil, err
	}
	var a proto.PullResponse
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := proto.Decode(b, &a); err != nil {
		w.bad = append(w.bad, fmt.Sprintf("pull answer: %v", err))
		return resp, nil
	}
	for _, rec := range a.Records {
		w.seen++
		if !w.check(rec) {
			w.bad = append(w.bad, fmt.Sprintf("%s %s", rec.ID, spFormat(rec)))
		}
	}
	return resp, nil
}

func spValue(s string) []byte {
	v, err := crdt.EncodeValue(s)
	if err != nil {
		panic(err)
	}
	return v
}

func spParse(text string) *scope.Pred {
	p, err := scope.Parse(text)
	if err != nil {
		panic(fmt.Sprintf("parse %s: %v", text, err))
	}
	return p
}

func spFormat(rec crdt.Record) string {
	if !rec.Exists() {
		return "(deleted)"
	}
	vals := rec.Values()
	var parts []string
	for _, name := range slices.Sorted(maps.Keys(vals)) {
		var v any
		if err := crdt.DecodeValue(vals[name], &v); err != nil {
			v = fmt.Sprintf("%x", vals[name])
		}
		parts = append(parts, fmt.Sprintf("%s=%v", name, v))
	}
	return "{" + strings.Join(parts, " ") + "}"
}

// spServerRecords reads every record of tasks from the server's engine:
// the log from the start, unscoped.
func spServerRecords(t *rapid.T, eng *engine.Engine) map[string]crdt.Record {
	out := map[string]crdt.Record{}
	var cur engine.Cursor
	for {
		p, err := eng.Pull(context.Background(), spColl, cur, engine.PageLimit{})
		if err != nil {
			t.Fatal(err)
		}
		for _, en := range p.Entries {
			out[en.Record.ID] = en.Record
		}
		cur = p.Next
		if !p.More {
			return out
		}
	}
}

func TestScopePropertyClients(t *testing.T) {
	rules, err := engine.ParseRules([]byte(`{"tasks": {"scope": "` + spRule + `"}}`))
	if err != nil {
		t.Fatal(err)
	}
	auth, err := transport.NewJWT([]byte("client-test-secret-0123456789"), nil)
	if err != nil {
		t.Fatal(err)
	}
	rapid.Check(t, func(t *rapid.T) {
		ctx := context.Background()
		eng, err := engine.Open(engine.Config{Store: memory.New(), Rules: rules})
		if err != nil {
			t.Fatal(err)
		}
		srv, err := transport.New(transport.Config{Engine: eng, Authorizer: auth})
		if err != nil {
			t.Fatal(err)
		}
		hs := httptest.NewServer(srv)
		defer func() {
			hs.CloseClientConnections()
			hs.Close()
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			srv.Shutdown(sctx)
			eng.Close()
		}()

		issue := func(sub string, k spToken) string {
			spec := transport.TokenSpec{Subject: sub, Read: []string{spColl}, TTL: time.Hour}
			if sub == "admin" {
				spec.Write = []string{spColl}
			}
			if !k.noTeams {
				teams := make([]any, len(k.teams))
				for i, x := range k.teams {
					teams[i] = x
				}
				spec.Claims = map[string]any{"teams": teams}
			}
			if k.own != "" {
				spec.Scopes = map[string]*scope.Pred{spColl: spParse(spTokenScopes[k.own])}
			}
			tok, err := auth.IssueToken(spec)
			if err != nil {
				t.Fatal(err)
			}
			return tok
		}
		drawToken := func(label string) spToken {
			var k spToken
			switch rapid.IntRange(0, 9).Draw(t, label+" claim") {
			case 0:
				k.noTeams = true
			case 1:
				k.teams = []string{}
			default:
				k.teams = rapid.SliceOfNDistinct(rapid.SampledFrom(spTeams), 1, -1, rapid.ID[string]).Draw(t, label+" teams")
			}
			k.own = rapid.SampledFrom([]string{"", "", "", "sub", "list"}).Draw(t, label+" cvg_scopes")
			return k
		}

		// The admin writes through a replica of its own.
		ac, err := client.New(client.Config{URL: hs.URL, Token: issue("admin", spToken{teams: spTeams}), Device: "desk"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ac.Hello(ctx); err != nil {
			t.Fatal(err)
		}
		admin, err := client.NewReplica(ac, client.ReplicaConfig{Collections: []string{spColl}})
		if err != nil {
			t.Fatal(err)
		}
		exists := map[string]bool{} // the admin is the only writer
		n := 0

		readers := make([]*spReader, rapid.IntRange(2, 3).Draw(t, "readers"))
		for i := range readers {
			rd := &spReader{sub: spReaders[i], claims: drawToken(fmt.Sprintf("reader %d", i)), narrow: map[string]string{}}
			rd.token.Store(issue(rd.sub, rd.claims))
			rd.watch = &spWatch{check: rd.want}
			ccfg := client.Config{URL: hs.URL, Device: "phone", HTTPClient: &http.Client{Transport: rd.watch},
				TokenFunc: func(context.Context) (string, error) { return rd.token.Load().(string), nil }}
			if rapid.Bool().Draw(t, fmt.Sprintf("reader %d narrowed", i)) {
				text := rapid.SampledFrom(spNarrowings[:4]).Draw(t, fmt.Sprintf("reader %d narrowing", i))
				rd.narrow["a"] = text
				ccfg.Scopes = map[string]map[string]*scope.Pred{spColl: {"a": spParse(text)}}
			}
			c, err := client.New(ccfg)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Hello(ctx); err != nil {
				t.Fatal(err)
			}
			rd.r, err = client.NewReplica(c, client.ReplicaConfig{Collections: []string{spColl}})
			if err != nil {
				t.Fatal(err)
			}
			readers[i] = rd
		}

		var log []string // the steps so far, for the failure message
		fail := func(format string, args ...any) {
			t.Fatalf("after steps:\n  %s\n%s", strings.Join(log, "\n  "), fmt.Sprintf(format, args...))
		}
		// check compares what rd holds with the server's records.
		check := func(rd *spReader) {
			rd.watch.mu.Lock()
			bad := slices.Clone(rd.watch.bad)
			rd.watch.mu.Unlock()
			if len(bad) > 0 {
				fail("reader %s received records outside its scope:\n  %s", rd, strings.Join(bad, "\n  "))
			}
			pred := rd.pred(t)
			server := spServerRecords(t, eng)
			held := map[string]crdt.Record{}
			for id, rec := range rd.r.Records(spColl) {
				if rec.Exists() {
					held[id] = rec
				}
			}
			for _, id := range spIDs {
				srec, ok := server[id]
				want := ok && pred.Match(srec)
				if ok && want != rd.want(srec) {
					fail("the effective scope %s and the model of reader %s disagree on %s %s", pred, rd, id, spFormat(srec))
				}
				got, has := held[id]
				switch {
				case want && !has:
					fail("reader %s (scope %s) lacks %s; the server holds %s", rd, pred, id, spFormat(srec))
				case !want && has:
					fail("reader %s (scope %s) holds %s as %s; the server holds %s", rd, pred, id, spFormat(got), spFormat(srec))
				case want && !got.Equal(srec):
					fail("reader %s holds %s as %v, the server as %v", rd, id, got, srec)
				}
			}
			if len(rd.r.Pending()) != 0 {
				fail("reader %s has an outbox", rd)
			}
		}
		pull := func(rd *spReader) {
			rd.watch.mu.Lock()
			rd.watch.check = rd.want
			rd.watch.mu.Unlock()
			if err := rd.r.Pull(ctx); err != nil {
				fail("reader %s: pull: %v", rd, err)
			}
			check(rd)
		}

		steps := rapid.IntRange(8, 50).Draw(t, "steps")
		for range steps {
			switch rapid.IntRange(0, 9).Draw(t, "step") {
			case 0, 1, 2, 3: // the admin writes
				id := rapid.SampledFrom(spIDs).Draw(t, "id")
				op := rapid.SampledFrom([]string{"create", "team", "owner", "edit", "delete"}).Draw(t, "op")
				if !exists[id] && op != "delete" {
					op = "create"
				}
				var desc string
				set := func(field string, v any) {
					if err := admin.Set(spColl, id, field, v); err != nil {
						t.Fatal(err)
					}
					desc += fmt.Sprintf(" %s=%v", field, v)
				}
				switch op {
				case "create": // create, re-create or rewrite whole (team first: the write scope)
					n++
					set("team", rapid.SampledFrom(spTeams).Draw(t, "team"))
					set("owner", rapid.SampledFrom(spOwners).Draw(t, "owner"))
					set("v", n)
				case "team":
					set("team", rapid.SampledFrom(spTeams).Draw(t, "team"))
				case "owner":
					set("owner", rapid.SampledFrom(spOwners).Draw(t, "owner"))
				case "edit":
					n++
					set("v", n)
				case "delete":
					if err := admin.Delete(spColl, id); err != nil {
						t.Fatal(err)
					}
				}
				exists[id] = op != "delete"
				if err := admin.Flush(ctx); err != nil {
					t.Fatal(err)
				}
				if rej := admin.Rejected(); len(rej) != 0 {
					fail("the admin's %s of %s was refused: %+v", op, id, rej)
				}
				log = append(log, fmt.Sprintf("admin %s %s%s", op, id, desc))
			case 4, 5, 6: // a reader pulls to the end
				i := rapid.IntRange(0, len(readers)-1).Draw(t, "reader")
				log = append(log, fmt.Sprintf("reader %s pulls", readers[i]))
				pull(readers[i])
			case 7: // a reader reads one small page only
				i := rapid.IntRange(0, len(readers)-1).Draw(t, "reader")
				rd := readers[i]
				limit := rapid.IntRange(1, 3).Draw(t, "limit")
				log = append(log, fmt.Sprintf("reader %s reads a page of %d", rd, limit))
				rd.watch.mu.Lock()
				rd.watch.check = rd.want
				rd.watch.mu.Unlock()
				p, err := rd.r.Client().Pull(ctx, spColl, rd.r.Cursor(spColl), limit)
				if err != nil {
					fail("reader %s: pull a page: %v", rd, err)
				}
				rd.r.Apply(spColl, p)
			case 8: // a reader's token is reissued with other claims
				i := rapid.IntRange(0, len(readers)-1).Draw(t, "reader")
				rd := readers[i]
				old := rd.String()
				rd.claims = drawToken("reissued")
				rd.token.Store(issue(rd.sub, rd.claims))
				log = append(log, fmt.Sprintf("reader %s gets a new token: now %s", old, rd))
			case 9: // a reader changes its own scopes
				i := rapid.IntRange(0, len(readers)-1).Draw(t, "reader")
				rd := readers[i]
				old := rd.String()
				name := rapid.SampledFrom([]string{"a", "b"}).Draw(t, "name")
				if rapid.IntRange(0, 3).Draw(t, "remove") == 0 {
					rd.r.Client().RemoveScope(spColl, name)
					delete(rd.narrow, name)
				} else {
					text := rapid.SampledFrom(spNarrowings).Draw(t, "narrowing")
					var p *scope.Pred
					if text != "" {
						p = spParse(text)
					}
					if err := rd.r.Client().SetScope(spColl, name, p); err != nil {
						t.Fatal(err)
					}
					rd.narrow[name] = text
				}
				log = append(log, fmt.Sprintf("reader %s changes its own scope %s: now %s", old, name, rd))
			}
		}
		log = append(log, "every reader pulls")
		for _, rd := range readers {
			pull(rd)
		}
	})
}
