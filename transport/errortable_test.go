package transport

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/crdt/scope"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/transport/proto"
)

// errorRow is a row of the error table of docs/protocol.md.
type errorRow struct {
	code      string
	status    int  // 0 for a code that only refuses single changes
	perChange bool // "per change" in the HTTP column
}

var rowRE = regexp.MustCompile("^\\| `([a-z_]+)` \\| (\\d{3}|per change) \\|")

// readErrorTable reads the error table of docs/protocol.md, section 5.
func readErrorTable(t *testing.T) []errorRow {
	t.Helper()
	doc, err := os.ReadFile("../docs/protocol.md")
	if err != nil {
		t.Fatal(err)
	}
	start := strings.Index(string(doc), "| code | HTTP | when | retry? |")
	if start < 0 {
		t.Fatal("docs/protocol.md has no error table")
	}
	var rows []errorRow
	for _, line := range strings.Split(string(doc[start:]), "\n")[2:] {
		if !strings.HasPrefix(line, "|") {
			break
		}
		m := rowRE.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("error table row %q is not `code` | status", line)
		}
		r := errorRow{code: m[1], perChange: m[2] == "per change"}
		if !r.perChange {
			r.status, _ = strconv.Atoi(m[2])
		}
		rows = append(rows, r)
	}
	return rows
}

// corruptStore reads damaged data, as a store written behind its back.
type corruptStore struct{ stores.Store }

func (corruptStore) Pull(context.Context, string, uint64, stores.PageLimit) (stores.Page, error) {
	return stores.Page{}, fmt.Errorf("%w: record r1 is not a record", stores.ErrCorrupt)
}

// panicking is an Authorizer with a bug.
type panicking struct{}

func (panicking) Authenticate(context.Context, string) (Principal, error) { panic("a bug") }

// TestErrorTable drives the server through every row of the error table in
// docs/protocol.md and checks the status and code it answers, and that the
// table and proto.Codes list the same codes with the same statuses.
func TestErrorTable(t *testing.T) {
	rows := readErrorTable(t)
	documented := map[string]errorRow{}
	for _, r := range rows {
		documented[r.code] = r
	}
	for _, c := range proto.Codes {
		r, ok := documented[c.Code]
		switch {
		case !ok:
			t.Errorf("code %s of proto.Codes is missing from the table", c.Code)
		case r.perChange != (c.HTTP == 0), !r.perChange && r.status != c.HTTP:
			t.Errorf("code %s: the table says %d (per change %v), proto.Codes %d", c.Code, r.status, r.perChange, c.HTTP)
		}
	}

	ts := newTestServer(t, func(c *Config) { c.Limits.MaxBodyBytes = 1 << 10 })
	tok := ts.token(t, "alice", []string{"notes"}, []string{"notes"})
	expired, err := ts.jwt.Issue("alice", []string{"*"}, nil, time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond)
	pull := proto.PullRequest{Collection: "notes"}
	now := time.Now().UnixMilli()
	get := func(path string) answer {
		resp, err := ts.Client().Get(ts.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return answer{status: resp.StatusCode, header: resp.Header}
	}
	// pushed pushes one change and answers with its result's code.
	pushed := func(c crdt.Change) (int, string) {
		res := ts.push(t, tok, c)
		return 0, res[0].Code
	}
	pushed2 := func(token string, c crdt.Change) (int, string) { return 0, ts.push(t, token, c)[0].Code }
	answered := func(a answer) (int, string) { return a.status, a.header.Get(proto.HeaderError) }

	triggers := map[string]func() (status int, code string){
		proto.CodeMalformed: func() (int, string) { return answered(ts.post(t, proto.PathPull, tok, []byte{0xff})) },
		proto.CodeInvalid: func() (int, string) {
			return answered(ts.post(t, proto.PathPull, tok, proto.PullRequest{Collection: "a b"}))
		},
		proto.CodeUnsupportedVersion: func() (int, string) {
			return answered(ts.post(t, proto.PathPull, tok, pull, func(r *http.Request) { r.Header.Set(proto.HeaderProtocol, "1") }))
		},
		proto.CodeUnauthenticated: func() (int, string) { return answered(ts.post(t, proto.PathPull, "", pull)) },
		proto.CodeTokenExpired:    func() (int, string) { return answered(ts.post(t, proto.PathPull, expired, pull)) },
		proto.CodeForbidden: func() (int, string) {
			return answered(ts.post(t, proto.PathPull, tok, proto.PullRequest{Collection: "secrets"}))
		},
		proto.CodeNotFound:         func() (int, string) { return answered(ts.post(t, "/v2/nope", tok, pull)) },
		proto.CodeMethodNotAllowed: func() (int, string) { return answered(get(proto.PathPull)) },
		proto.CodeTooLarge: func() (int, string) {
			return answered(ts.post(t, proto.PathPush, tok, make([]byte, 2<<10)))
		},
		proto.CodeUpgradeRequired: func() (int, string) { return answered(get(proto.PathLive)) },
		proto.CodeRateLimited: func() (int, string) {
			rl := newTestServer(t, func(c *Config) { c.Demo = true; c.Limits.Rate = 0.001; c.Limits.Burst = 1 })
			rl.post(t, proto.PathPull, "", proto.PullRequest{Collection: DemoCollection})
			return answered(rl.post(t, proto.PathPull, "", proto.PullRequest{Collection: DemoCollection}))
		},
		proto.CodeUnavailable: func() (int, string) {
			down := newTestServer(t, func(c *Config) { c.Demo = true })
			eng, err := engineOn(failingStore{down.store})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { eng.Close() })
			down.srv.eng = eng
			return answered(down.post(t, proto.PathPull, "", proto.PullRequest{Collection: DemoCollection}))
		},
		proto.CodeCorrupt: func() (int, string) {
			bad := newTestServer(t, func(c *Config) { c.Demo = true })
			eng, err := engineOn(corruptStore{bad.store})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { eng.Close() })
			bad.srv.eng = eng
			return answered(bad.post(t, proto.PathPull, "", proto.PullRequest{Collection: DemoCollection}))
		},
		proto.CodeInternal: func() (int, string) {
			buggy := newTestServer(t, func(c *Config) { c.Authorizer = panicking{} })
			return answered(buggy.post(t, proto.PathPull, "a-token", pull))
		},
		proto.CodeClockDrift: func() (int, string) {
			return pushed(crdt.Change{Collection: "notes", Record: crdt.SetField("r", "f", mustValue(t, 1),
				crdt.Stamp{Wall: now + time.Hour.Milliseconds(), Replica: ownReplica})})
		},
		proto.CodeQuotaExceeded: func() (int, string) {
			full := newTestServer(t, nil)
			eng, err := engine.Open(engine.Config{Store: full.store, Replica: "srv-test", PollInterval: -1,
				Quotas: []engine.Quota{{Pattern: "notes", MaxRecords: 1}}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { eng.Close() })
			full.srv.eng = eng
			ftok := full.token(t, "alice", []string{"notes"}, []string{"notes"})
			full.push(t, ftok, change(t, "notes", "r1", "f", 1))
			return 0, full.push(t, ftok, change(t, "notes", "r2", "f", 1))[0].Code
		},
		proto.CodeBadSeal: func() (int, string) {
			rec := crdt.SetField("r", "f", mustValue(t, 1), crdt.Stamp{Wall: now, Replica: "someone"})
			a := ts.post(t, proto.PathRestore, tok, proto.RestoreRequest{Collection: "notes",
				Records: []proto.SealedRecord{{Record: rec, Seal: make([]byte, 16)}}})
			var res proto.RestoreResponse
			if err := proto.Decode(a.body, &res); err != nil || len(res.Results) != 1 {
				t.Fatalf("restore: %d %x %v", a.status, a.body, err)
			}
			return 0, res.Results[0].Code
		},
		proto.CodeForgedReplica: func() (int, string) {
			return pushed(crdt.Change{Collection: "notes", Record: crdt.SetField("r", "f", mustValue(t, 1),
				crdt.Stamp{Wall: now, Replica: proto.ReplicaFor("bob", "d")})})
		},
		proto.CodeOutOfScope: func() (int, string) {
			scoped := ts.issue(t, TokenSpec{Subject: "alice", Read: []string{"notes"}, Write: []string{"notes"},
				Scopes: map[string]*scope.Pred{"notes": mustScope(t, "owner == $sub")}})
			return pushed2(scoped, set(t, "notes", "o1", map[string]any{"owner": "bob"}))
		},
		proto.CodeSchema: func() (int, string) {
			ruled := newTestServer(t, nil)
			ruled.withRules(t, `{"notes": {"schema": {"fields": {"title": {"type": "string"}}}}}`)
			rtok := ruled.token(t, "alice", []string{"notes"}, []string{"notes"})
			return 0, ruled.push(t, rtok, set(t, "notes", "s1", map[string]any{"title": 5}))[0].Code
		},
		proto.CodeUntranslatable: func() (int, string) {
			mig := newTestServer(t, nil)
			mig.withRules(t, `{"notes": {"migrations": {"version": 2, "steps": [{"to": 2, "ops": [
				{"op": "split", "from": "who", "to": ["first", "last"], "sep": " "}]}]}}}`)
			mtok := mig.token(t, "alice", []string{"notes"}, []string{"notes"})
			a := mig.post(t, proto.PathPush, mtok, proto.PushRequest{Replica: "c1", Versions: map[string]uint64{"notes": 1},
				Changes: []crdt.Change{set(t, "notes", "u1", map[string]any{"who": 5})}})
			var res proto.PushResponse
			if err := proto.Decode(a.body, &res); err != nil || len(res.Results) != 1 {
				t.Fatalf("push: %d %x %v", a.status, a.body, err)
			}
			return 0, res.Results[0].Code
		},
		proto.CodeSchemaAhead: func() (int, string) {
			return answered(ts.post(t, proto.PathPull, tok, proto.PullRequest{Collection: "notes", Version: 2}))
		},
		proto.CodeCollected: func() (int, string) {
			clock := newFakeClock()
			coll := newCollectingServer(t, clock)
			ctok := coll.token(t, "alice", []string{"notes"}, []string{"notes"})
			coll.push(t, ctok, set1("c0", clock.wall())) // the collection exists
			// The first horizon holds W for MaxOffline; the run after
			// raises it.
			for i := range 2 {
				if i > 0 {
					clock.advance(time.Hour + time.Minute)
				}
				if _, err := coll.eng.Collect(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
			return 0, coll.push(t, ctok, set1("c1", clock.stamp(-2*time.Hour)))[0].Code
		},
		proto.CodeRevoked: func() (int, string) {
			if err := Deny(context.Background(), ts.eng, DenyEntry{ID: DenySubject + "mallory"}); err != nil {
				t.Fatal(err)
			}
			mallory := ts.token(t, "mallory", []string{"notes"}, nil)
			eventually(t, "revoked", func() bool { return ts.pullCode(t, mallory, "notes") == proto.CodeRevoked })
			return answered(ts.post(t, proto.PathPull, mallory, pull))
		},
	}
	for _, r := range rows {
		t.Run(r.code, func(t *testing.T) {
			trigger, ok := triggers[r.code]
			if !ok {
				t.Fatalf("no trigger for code %s: add one to this test", r.code)
			}
			status, code := trigger()
			if status != r.status || code != r.code {
				t.Fatalf("got %d %q, want %d %q", status, code, r.status, r.code)
			}
		})
	}
}

// TestSessionCodesDocumented holds the paragraph of docs/protocol.md that
// says which failures are not one collection's ("Retrying") to the codes
// proto.Codes marks Session, from which both clients derive the rule.
func TestSessionCodesDocumented(t *testing.T) {
	doc, err := os.ReadFile("../docs/protocol.md")
	if err != nil {
		t.Fatal(err)
	}
	const lead = "A pull, restore or `sub` names one collection, and its failure is that\ncollection's unless"
	start := strings.Index(string(doc), lead)
	if start < 0 {
		t.Fatal("docs/protocol.md has no paragraph on one collection's failure")
	}
	para := string(doc[start:])
	para = para[:strings.Index(para, "): a client goes on with")]
	var documented []string
	for _, m := range regexp.MustCompile("`([a-z_]+)`").FindAllStringSubmatch(para, -1) {
		if m[1] != "sub" {
			documented = append(documented, m[1])
		}
	}
	var session []string
	for _, c := range proto.Codes {
		if c.Session {
			session = append(session, c.Code)
		}
	}
	slices.Sort(documented)
	slices.Sort(session)
	if !slices.Equal(documented, session) {
		t.Errorf("the paragraph names %q as not one collection's; proto.Codes marks Session %q", documented, session)
	}
}

// TestPushRefusalCodesDocumented holds the list of docs/protocol.md,
// section 5, of the codes a push refuses single changes with to
// proto.Codes: the per-change codes but those only a restore's results
// carry (RestoreOnly: bad_seal).
func TestPushRefusalCodesDocumented(t *testing.T) {
	doc, err := os.ReadFile("../docs/protocol.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "A push refuses single changes")
	if !ok {
		t.Fatal(`docs/protocol.md has no "A push refuses single changes" list`)
	}
	list, _, _ := strings.Cut(rest, ";")
	var documented []string
	for _, m := range regexp.MustCompile("`([a-z_]+)`").FindAllStringSubmatch(list, -1) {
		documented = append(documented, m[1])
	}
	var want []string
	for _, c := range proto.Codes {
		if c.PerChange && !c.RestoreOnly {
			want = append(want, c.Code)
		}
	}
	slices.Sort(documented)
	slices.Sort(want)
	if !slices.Equal(documented, want) {
		t.Errorf("docs/protocol.md: a push refuses single changes with %v; proto.Codes says %v", documented, want)
	}
}
