package transport

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/crdt/scope"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/transport/proto"
)

func postDemoToken(t *testing.T, ts *testServer, method, name string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, ts.URL+PathDemoToken+"?name="+url.QueryEscape(name), nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, body
}

func TestDemoToken(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.Demo = true })
	res, body := postDemoToken(t, ts, http.MethodPost, "alice")
	if res.StatusCode != http.StatusOK {
		t.Fatalf("POST %s: %d %s", PathDemoToken, res.StatusCode, body)
	}
	if got := res.Header.Get("Cache-Control"); got != "no-store" {
		t.Errorf("Cache-Control %q, want no-store", got)
	}
	var dt DemoToken
	if err := json.Unmarshal(body, &dt); err != nil {
		t.Fatalf("answer %s: %v", body, err)
	}
	p, err := ts.jwt.Authenticate(context.Background(), dt.Token)
	if err != nil {
		t.Fatalf("the server's own token: %v", err)
	}
	if p.Subject != "demo:alice" || dt.Subject != p.Subject {
		t.Errorf("subject %q (answer %q), want demo:alice", p.Subject, dt.Subject)
	}
	if !slices.Equal(p.Read, []string{DemoNotesCollection}) || !slices.Equal(p.Write, []string{DemoNotesCollection}) {
		t.Errorf("read %v write %v, want only %s", p.Read, p.Write, DemoNotesCollection)
	}
	if p.CanRead(DemoCollection) || p.CanWrite("demo.other") {
		t.Error("a demo token grants more than the notes")
	}
	if ttl := time.Until(p.Expires); ttl <= 0 || ttl > DemoTokenTTL {
		t.Errorf("expires in %v, want within %v", ttl, DemoTokenTTL)
	}
	if got, want := dt.Expires, p.Expires.UnixMilli(); got < want-1000 || got > want+1000 {
		t.Errorf("answer expires %d, token %d", got, want)
	}
}

func TestDemoTokenRefuses(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.Demo = true })
	for _, tc := range []struct {
		name, method, who string
		status            int
		code              string
	}{
		{"empty name", http.MethodPost, "", 400, proto.CodeInvalid},
		{"upper case", http.MethodPost, "Alice", 400, proto.CodeInvalid},
		{"a colon", http.MethodPost, "a:b", 400, proto.CodeInvalid},
		{"too long", http.MethodPost, "abcdefghijklmnopqrstuvwxyz0123456", 400, proto.CodeInvalid},
		{"GET", http.MethodGet, "alice", 405, proto.CodeMethodNotAllowed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, body := postDemoToken(t, ts, tc.method, tc.who)
			if res.StatusCode != tc.status {
				t.Fatalf("status %d, want %d (%s)", res.StatusCode, tc.status, body)
			}
			// The demo page reads this endpoint's answers as JSON, its
			// refusals too: {"code", "message", "requestId"}, the code also
			// in the protocol's error header.
			if ct := res.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q, want application/json", ct)
			}
			var e DemoTokenError
			if err := json.Unmarshal(body, &e); err != nil {
				t.Fatalf("refusal %q is not JSON: %v", body, err)
			}
			if e.Code != tc.code || res.Header.Get(proto.HeaderError) != tc.code {
				t.Errorf("code %q (header %q), want %q", e.Code, res.Header.Get(proto.HeaderError), tc.code)
			}
			if e.Message == "" || e.RequestID == "" || e.RequestID != res.Header.Get(proto.HeaderRequestID) {
				t.Errorf("refusal %+v: want a message and the request id %q", e, res.Header.Get(proto.HeaderRequestID))
			}
		})
	}
}

// Without the demo there is no endpoint: the path is the demo app's, and
// the server's mux answers it not found.
func TestDemoTokenOnlyWithDemo(t *testing.T) {
	ts := newTestServer(t, nil)
	res, body := postDemoToken(t, ts, http.MethodPost, "alice")
	if res.StatusCode != http.StatusNotFound {
		t.Fatalf("without the demo: %d %s, want 404", res.StatusCode, body)
	}
}

func TestDemoNotesRule(t *testing.T) {
	r := DemoNotesRule()
	if r.Pattern != DemoNotesCollection || r.Read == nil || r.Write != nil {
		t.Fatalf("rule %+v", r)
	}
	want, err := scope.Parse(DemoNotesScope)
	if err != nil {
		t.Fatal(err)
	}
	if r.Read.String() != want.String() {
		t.Errorf("read scope %s, want %s", r.Read, want)
	}

	other := engine.Rule{Pattern: "demo.*"}
	for _, tc := range []struct {
		name  string
		rules []engine.Rule
		want  []string
	}{
		{"no rules", nil, []string{DemoNotesCollection}},
		{"rules of other collections", []engine.Rule{{Pattern: "tasks"}}, []string{"tasks", DemoNotesCollection}},
		{"the operator's rule for the notes wins", []engine.Rule{other}, []string{"demo.*"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, r := range WithDemoRules(tc.rules) {
				got = append(got, r.Pattern)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("patterns %v, want %v", got, tc.want)
			}
		})
	}
}

// demoTokenOf asks the endpoint for name's token.
func demoTokenOf(t *testing.T, ts *testServer, name string) string {
	t.Helper()
	res, body := postDemoToken(t, ts, http.MethodPost, name)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("demo token for %s: %d %s", name, res.StatusCode, body)
	}
	var dt DemoToken
	if err := json.Unmarshal(body, &dt); err != nil {
		t.Fatal(err)
	}
	return dt.Token
}

// The demo's notes end to end: tokens from the endpoint, the built-in
// rule on the engine (as convergo serve gives it). Each person reads their
// own notes and the shared ones, and only the owner can unshare.
func TestDemoNotes(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.Demo = true })
	eng, err := engine.Open(engine.Config{Store: ts.store, Replica: "srv-demo", PollInterval: -1, Rules: WithDemoRules(nil)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Close() })
	ts.srv.eng, ts.eng = eng, eng
	alice, bob := demoTokenOf(t, ts, "alice"), demoTokenOf(t, ts, "bob")
	note := func(id, owner string, shared bool) crdt.Change {
		return set(t, DemoNotesCollection, id, map[string]any{"title": id, "owner": owner, "shared": shared})
	}
	statuses := func(rs []proto.PushResult) (out []string) {
		for _, r := range rs {
			out = append(out, fmt.Sprintf("%d %s", r.Status, r.Code))
		}
		return out
	}
	applied := []string{"0 ", "0 "}
	if got := statuses(ts.push(t, alice, ts.bind(t, alice, []crdt.Change{note("a-private", "demo:alice", false), note("a-shared", "demo:alice", true)})...)); !slices.Equal(got, applied) {
		t.Fatalf("alice's notes: %v, want %v", got, applied)
	}
	if got := statuses(ts.push(t, bob, ts.bind(t, bob, []crdt.Change{note("b-private", "demo:bob", false)})...)); !slices.Equal(got, applied[:1]) {
		t.Fatalf("bob's note: %v", got)
	}
	for _, tc := range []struct {
		who, token string
		want       []string
	}{
		{"alice", alice, []string{"a-private", "a-shared"}},
		{"bob", bob, []string{"a-shared", "b-private"}},
	} {
		ids, _, _ := ts.pullAll(t, tc.token, DemoNotesCollection, nil, nil)
		slices.Sort(ids)
		if !slices.Equal(ids, tc.want) {
			t.Errorf("%s reads %v, want %v", tc.who, ids, tc.want)
		}
	}
	// Bob can neither unshare Alice's note nor write one as hers.
	refused := fmt.Sprintf("%d %s", proto.StatusRefused, proto.CodeOutOfScope)
	got := statuses(ts.push(t, bob, ts.bind(t, bob, []crdt.Change{
		set(t, DemoNotesCollection, "a-shared", map[string]any{"shared": false}),
		note("forged", "demo:alice", false),
	})...))
	if !slices.Equal(got, []string{refused, refused}) {
		t.Errorf("bob's writes to alice's notes: %v, want both %q", got, refused)
	}
	// A demo token reads nothing else, and the anonymous principal no notes.
	if a := ts.post(t, proto.PathPull, alice, proto.PullRequest{Collection: DemoCollection}); a.status != http.StatusForbidden {
		t.Errorf("a demo token pulls %s: %d", DemoCollection, a.status)
	}
	if a := ts.post(t, proto.PathPull, "", proto.PullRequest{Collection: DemoNotesCollection}); a.status != http.StatusForbidden {
		t.Errorf("anonymous pull of %s: %d", DemoNotesCollection, a.status)
	}
}

// Anyone may mint a demo subject, so a demo subject is no client of its
// own: its requests are rate limited by its address, as the anonymous
// principal's are. Keyed by subject, one address minting names got a
// full bucket per name, and so as many requests as it cared to ask for.
func TestDemoSubjectsRateByAddress(t *testing.T) {
	ts := newTestServer(t, func(c *Config) {
		c.Demo = true
		c.Limits.Rate = 1
		c.Limits.Burst = 2
	})
	var toks []string
	for _, name := range []string{"a", "b"} { // the address's two requests
		res, body := postDemoToken(t, ts, http.MethodPost, name)
		if res.StatusCode != http.StatusOK {
			t.Fatalf("POST %s: %d %s", PathDemoToken, res.StatusCode, body)
		}
		var dt DemoToken
		if err := json.Unmarshal(body, &dt); err != nil {
			t.Fatal(err)
		}
		toks = append(toks, dt.Token)
	}
	for i, tok := range toks {
		a := ts.post(t, proto.PathPull, tok, proto.PullRequest{Collection: DemoNotesCollection})
		if a.status != http.StatusTooManyRequests {
			t.Fatalf("pull %d as a fresh demo subject of an address over its rate: status %d, want 429", i, a.status)
		}
	}
}

// A name given more than once is refused invalid, naming the parameter:
// taking the first (or the last) would issue a token for a subject the
// caller may not have meant, as another reader of the same URL (a proxy,
// a log) might pick the other.
func TestDemoTokenRefusesARepeatedName(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.Demo = true })
	for _, query := range []string{"name=a&name=b", "name=a&name=a", "name=a&name="} {
		t.Run(query, func(t *testing.T) {
			res, err := http.Post(ts.URL+PathDemoToken+"?"+query, "", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			body, err := io.ReadAll(res.Body)
			if err != nil {
				t.Fatal(err)
			}
			var e DemoTokenError
			if res.StatusCode != http.StatusBadRequest || json.Unmarshal(body, &e) != nil || e.Code != proto.CodeInvalid ||
				res.Header.Get(proto.HeaderError) != proto.CodeInvalid || !strings.Contains(e.Message, `"name"`) {
				t.Fatalf("?%s: %d %s, want 400 invalid naming the parameter \"name\"", query, res.StatusCode, body)
			}
		})
	}
}
