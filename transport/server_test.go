package transport

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convergo/convergo/transport/proto"

	"github.com/golang-jwt/jwt/v5"
	"pgregory.net/rapid"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/memory"
)

func TestHello(t *testing.T) {
	ts := newTestServer(t, nil)
	tok := ts.token(t, "alice", []string{"*"}, nil)
	a := ts.post(t, proto.PathHello, tok, proto.HelloRequest{Protocol: proto.Version, Replica: "c1"})
	if a.status != http.StatusOK {
		t.Fatalf("status %d", a.status)
	}
	if ct := a.header.Get("Content-Type"); ct != proto.ContentType {
		t.Fatalf("content type %q", ct)
	}
	var h proto.HelloResponse
	if err := proto.Decode(a.body, &h); err != nil {
		t.Fatal(err)
	}
	if h.Protocol != proto.Version || h.ServerReplica != "srv-test" || h.Subject != "alice" ||
		h.MaxPush != proto.DefaultMaxPushChanges || h.MaxPull != proto.DefaultMaxPullRecords ||
		h.MaxBodyBytes != proto.DefaultMaxBodyBytes || h.MaxDrift != uint64(crdt.DefaultMaxDrift.Milliseconds()) {
		t.Fatalf("hello answer %+v", h)
	}
	if d := time.Now().UnixMilli() - h.ServerTime; d < 0 || d > 5000 {
		t.Fatalf("server time %d is %d ms off", h.ServerTime, d)
	}
	for _, tc := range []struct {
		name string
		body any
		code string
	}{
		{"version 1", proto.HelloRequest{Protocol: 1, Replica: "c1"}, proto.CodeUnsupportedVersion},
		{"version 3", proto.HelloRequest{Protocol: 3, Replica: "c1"}, proto.CodeUnsupportedVersion},
		{"bad replica", proto.HelloRequest{Protocol: proto.Version, Replica: "a b"}, proto.CodeInvalid},
		{"garbage", []byte{0xff, 0x00}, proto.CodeMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ts.post(t, proto.PathHello, tok, tc.body).errorCode(t); got != tc.code {
				t.Fatalf("got %s, want %s", got, tc.code)
			}
		})
	}
}

func TestPushPull(t *testing.T) {
	ts := newTestServer(t, nil)
	tok := ts.token(t, "alice", []string{"notes"}, []string{"notes"})
	a := change(t, "notes", "r1", "title", "milk")
	b := change(t, "notes", "r2", "title", "eggs")
	res := ts.push(t, tok, a, b)
	if res[0].Status != proto.StatusApplied || res[1].Status != proto.StatusApplied {
		t.Fatalf("first push: %+v", res)
	}
	// Pushing again is a no-op: the answer a client lost is safe to repeat.
	res = ts.push(t, tok, a, b)
	if res[0].Status != proto.StatusDuplicate || res[1].Status != proto.StatusDuplicate {
		t.Fatalf("second push: %+v", res)
	}
	// An older write of a field is superseded: acknowledged, and the answer
	// names the field that lost.
	older := a
	older.Record = crdt.SetField("r1", "title", mustValue(t, "old"), crdt.Stamp{Wall: a.Record.Fields["title"].Stamp.Wall - 1, Replica: "c1"})
	res = ts.push(t, tok, older)
	if res[0].Status != proto.StatusSuperseded || len(res[0].Lost) != 1 || res[0].Lost[0] != "title" || !res[0].Status.Acknowledged() {
		t.Fatalf("older write: %+v", res)
	}
	page := ts.pull(t, tok, "notes", 0)
	if len(page.Records) != 2 || !ts.isCur(t, "notes", page.Next, 2) || page.More {
		t.Fatalf("pull: %+v", page)
	}
	bound := ts.bind(t, tok, []crdt.Change{a, b})
	if !page.Records[0].Equal(bound[0].Record) || !page.Records[1].Equal(bound[1].Record) {
		t.Fatalf("pulled %+v", page.Records)
	}
	// Cursor and limit.
	var p proto.PullResponse
	ans := ts.post(t, proto.PathPull, tok, proto.PullRequest{Collection: "notes", Cursor: nil, Limit: 1})
	if err := proto.Decode(ans.body, &p); err != nil || len(p.Records) != 1 || !ts.isCur(t, "notes", p.Next, 1) || !p.More {
		t.Fatalf("limited pull: %+v, %v", p, err)
	}
	if page := ts.pull(t, tok, "notes", 2); len(page.Records) != 0 || !ts.isCur(t, "notes", page.Next, 2) || page.More {
		t.Fatalf("pull at head: %+v", page)
	}
	// An empty page is an empty array on the wire, not null.
	ans = ts.post(t, proto.PathPull, tok, proto.PullRequest{Collection: "notes", Cursor: ts.cur(t, "notes", 2)})
	if !bytes.Contains(ans.body, []byte{0x01, 0x80}) {
		t.Fatalf("empty page body %x", ans.body)
	}
}

func TestPushRefusesPerChange(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.Demo = true })
	tok := ts.token(t, "alice", nil, []string{"notes"})
	ahead := crdt.Change{Collection: "notes", Record: crdt.SetField("r9", "x", mustValue(t, 1),
		crdt.Stamp{Wall: time.Now().Add(time.Hour).UnixMilli(), Replica: "c1"})}
	zeroField := crdt.Change{Collection: "notes", Record: crdt.Record{ID: "r8", Fields: map[string]crdt.Field{"x": {Value: mustValue(t, 1)}}}}
	res := ts.push(t, tok,
		change(t, "notes", "r1", "a", 1),
		change(t, "other", "r1", "a", 1),
		ahead,
		zeroField,
		change(t, "notes", "r2", "a", 2),
	)
	want := []struct {
		status proto.Status
		code   string
	}{{proto.StatusApplied, ""}, {proto.StatusRefused, proto.CodeForbidden}, {proto.StatusRefused, proto.CodeClockDrift}, {proto.StatusRefused, proto.CodeInvalid}, {proto.StatusApplied, ""}}
	for i, w := range want {
		if res[i].Status != w.status || res[i].Code != w.code {
			t.Errorf("change %d: got %+v, want status %d code %q", i, res[i], w.status, w.code)
		}
		if w.status == proto.StatusRefused && res[i].Message == "" {
			t.Errorf("change %d: refused without a message", i)
		}
	}
	if page := ts.pull(t, ts.token(t, "r", []string{"*"}, nil), "notes", 0); len(page.Records) != 2 {
		t.Fatalf("refused changes were applied: %+v", page.Records)
	}
}

func TestVersionAndMethod(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.Demo = true })
	for _, tc := range []struct {
		name   string
		header string
		code   string
	}{{"missing", "", proto.CodeUnsupportedVersion}, {"one", "1", proto.CodeUnsupportedVersion}, {"junk", "x", proto.CodeUnsupportedVersion}} {
		t.Run(tc.name, func(t *testing.T) {
			a := ts.post(t, proto.PathHello, "", proto.HelloRequest{Protocol: proto.Version, Replica: "c1"}, func(r *http.Request) { r.Header.Set(proto.HeaderProtocol, tc.header) })
			if a.status != http.StatusBadRequest || a.errorCode(t) != tc.code {
				t.Fatalf("got %d %s", a.status, a.errorCode(t))
			}
		})
	}
	resp, err := ts.Client().Get(ts.URL + proto.PathPull)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get(proto.HeaderError) != proto.CodeMethodNotAllowed {
		t.Fatalf("GET pull: %d %s", resp.StatusCode, resp.Header.Get(proto.HeaderError))
	}
	if a := ts.post(t, "/v2/nope", "", nil); a.status != http.StatusNotFound || a.errorCode(t) != proto.CodeNotFound {
		t.Fatalf("unknown path: %d", a.status)
	}
	// A version 1 client is told to upgrade, whatever it asks for.
	for _, path := range []string{"/v1/push", "/v1/hello", "/v1/live"} {
		a := ts.post(t, path, "", proto.HelloRequest{Protocol: 1, Replica: "c1"}, func(r *http.Request) { r.Header.Set(proto.HeaderProtocol, "1") })
		if a.status != http.StatusBadRequest || a.errorCode(t) != proto.CodeUnsupportedVersion {
			t.Fatalf("%s: got %d %s", path, a.status, a.errorCode(t))
		}
	}
	// Every answer carries a request id, and an error body repeats it.
	a := ts.post(t, proto.PathPull, "", proto.PullRequest{Collection: "x"})
	var body proto.ErrorBody
	if err := proto.Decode(a.body, &body); err != nil || body.RequestID == "" || body.RequestID != a.header.Get(proto.HeaderRequestID) {
		t.Fatalf("request id %q in body, %q in header (%v)", body.RequestID, a.header.Get(proto.HeaderRequestID), err)
	}
}

func TestAuth(t *testing.T) {
	ts := newTestServer(t, nil)
	sign := func(method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
		s, err := jwt.NewWithClaims(method, claims).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	exp := time.Now().Add(time.Hour).Unix()
	good := jwt.MapClaims{"sub": "alice", "exp": exp, "read": []string{"notes", "t1.*"}, "write": []string{"notes"}}
	noneTok := sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, good)
	cases := []struct {
		name  string
		token string
		path  string
		body  any
		code  string // "" means success
	}{
		{"no token", "", proto.PathPull, proto.PullRequest{Collection: "notes"}, proto.CodeUnauthenticated},
		{"garbage token", "abc.def.ghi", proto.PathPull, proto.PullRequest{Collection: "notes"}, proto.CodeUnauthenticated},
		{"good", sign(jwt.SigningMethodHS256, testSecret, good), proto.PathPull, proto.PullRequest{Collection: "notes"}, ""},
		{"prefix pattern", sign(jwt.SigningMethodHS256, testSecret, good), proto.PathPull, proto.PullRequest{Collection: "t1.a.b"}, ""},
		{"prefix is not the prefix", sign(jwt.SigningMethodHS256, testSecret, good), proto.PathPull, proto.PullRequest{Collection: "t1"}, proto.CodeForbidden},
		{"expired", sign(jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(-time.Minute).Unix(), "read": []string{"*"}}), proto.PathPull, proto.PullRequest{Collection: "notes"}, proto.CodeTokenExpired},
		{"no exp", sign(jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": "alice", "read": []string{"*"}}), proto.PathPull, proto.PullRequest{Collection: "notes"}, proto.CodeUnauthenticated},
		{"no sub", sign(jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"exp": exp, "read": []string{"*"}}), proto.PathPull, proto.PullRequest{Collection: "notes"}, proto.CodeUnauthenticated},
		{"forged", sign(jwt.SigningMethodHS256, []byte("another secret of 32 bytes......"), good), proto.PathPull, proto.PullRequest{Collection: "notes"}, proto.CodeUnauthenticated},
		{"forged and expired", sign(jwt.SigningMethodHS256, []byte("another secret of 32 bytes......"), jwt.MapClaims{"sub": "a", "exp": 1}), proto.PathPull, proto.PullRequest{Collection: "notes"}, proto.CodeUnauthenticated},
		{"wrong alg HS512", sign(jwt.SigningMethodHS512, testSecret, good), proto.PathPull, proto.PullRequest{Collection: "notes"}, proto.CodeUnauthenticated},
		{"alg none", noneTok, proto.PathPull, proto.PullRequest{Collection: "notes"}, proto.CodeUnauthenticated},
		{"bad pattern", sign(jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": "a", "exp": exp, "read": []string{"a b"}}), proto.PathPull, proto.PullRequest{Collection: "notes"}, proto.CodeUnauthenticated},
		{"out of scope read", sign(jwt.SigningMethodHS256, testSecret, good), proto.PathPull, proto.PullRequest{Collection: "secrets"}, proto.CodeForbidden},
		{"anonymous demo, demo off", "", proto.PathPull, proto.PullRequest{Collection: DemoCollection}, proto.CodeUnauthenticated},
		{"exp as a string", sign(jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": "alice", "exp": fmt.Sprint(exp), "read": []string{"*"}}), proto.PathPull, proto.PullRequest{Collection: "notes"}, proto.CodeUnauthenticated},
		{"nbf as a string", sign(jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": "alice", "exp": exp, "nbf": "1", "read": []string{"*"}}), proto.PathPull, proto.PullRequest{Collection: "notes"}, proto.CodeUnauthenticated},
		{"sub as a number", sign(jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": 42, "exp": exp, "read": []string{"*"}}), proto.PathPull, proto.PullRequest{Collection: "notes"}, proto.CodeUnauthenticated},
		{"read as a string", sign(jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": "alice", "exp": exp, "read": "*"}), proto.PathPull, proto.PullRequest{Collection: "notes"}, proto.CodeUnauthenticated},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := ts.post(t, tc.path, tc.token, tc.body)
			if tc.code == "" {
				if a.status != http.StatusOK {
					t.Fatalf("status %d, code %s", a.status, a.errorCode(t))
				}
				return
			}
			if got := a.errorCode(t); got != tc.code {
				t.Fatalf("got %s, want %s", got, tc.code)
			}
		})
	}
}

func TestDemoAccess(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.Demo = true })
	res := ts.push(t, "", change(t, DemoCollection, "r1", "title", "x"), change(t, "notes", "r1", "title", "x"))
	if res[0].Status != proto.StatusApplied || res[1].Code != proto.CodeForbidden {
		t.Fatalf("anonymous push: %+v", res)
	}
	if page := ts.pull(t, "", DemoCollection, 0); len(page.Records) != 1 {
		t.Fatalf("anonymous pull: %+v", page)
	}
	if got := ts.post(t, proto.PathPull, "", proto.PullRequest{Collection: "notes"}).errorCode(t); got != proto.CodeForbidden {
		t.Fatalf("anonymous pull of notes: %s", got)
	}
	// A bad token is not silently downgraded to anonymous.
	if got := ts.post(t, proto.PathPull, "junk", proto.PullRequest{Collection: DemoCollection}).errorCode(t); got != proto.CodeUnauthenticated {
		t.Fatalf("bad token in demo mode: %s", got)
	}
}

func TestLimits(t *testing.T) {
	ts := newTestServer(t, func(c *Config) {
		c.Limits = Limits{MaxBodyBytes: 64 << 10, MaxPushChanges: 3, MaxPullRecords: 2, Rate: 1, Burst: 5}
	})
	tok := ts.token(t, "alice", []string{"*"}, []string{"*"})
	t.Run("body too large", func(t *testing.T) {
		big := change(t, "notes", "r1", "title", strings.Repeat("x", 80<<10))
		if got := ts.post(t, proto.PathPush, tok, proto.PushRequest{Replica: "c1", Changes: []crdt.Change{big}}).errorCode(t); got != proto.CodeTooLarge {
			t.Fatalf("got %s", got)
		}
	})
	t.Run("too many changes", func(t *testing.T) {
		cs := []crdt.Change{change(t, "n", "a", "f", 1), change(t, "n", "b", "f", 1), change(t, "n", "c", "f", 1), change(t, "n", "d", "f", 1)}
		if got := ts.post(t, proto.PathPush, tok, proto.PushRequest{Replica: "c1", Changes: cs}).errorCode(t); got != proto.CodeTooLarge {
			t.Fatalf("got %s", got)
		}
	})
	t.Run("page size", func(t *testing.T) {
		// The budget of 5 is nearly spent; bob has his own.
		bob := ts.token(t, "bob", []string{"*"}, []string{"*"})
		ts.push(t, bob, change(t, "p", "a", "f", 1), change(t, "p", "b", "f", 1), change(t, "p", "c", "f", 1))
		if page := ts.pull(t, bob, "p", 0); len(page.Records) != 2 || !page.More {
			t.Fatalf("page of %d, more %v", len(page.Records), page.More)
		}
	})
	t.Run("rate", func(t *testing.T) {
		var limited answer
		for i := 0; i < 10; i++ {
			a := ts.post(t, proto.PathPull, tok, proto.PullRequest{Collection: "notes"})
			if a.status == http.StatusTooManyRequests {
				limited = a
				break
			}
		}
		if limited.status == 0 {
			t.Fatal("never rate limited")
		}
		if got := limited.errorCode(t); got != proto.CodeRateLimited {
			t.Fatalf("got %s", got)
		}
		if s, err := strconv.Atoi(limited.header.Get(proto.HeaderRetryAfter)); err != nil || s < 1 {
			t.Fatalf("Retry-After %q", limited.header.Get(proto.HeaderRetryAfter))
		}
		// Another client is still served.
		carol := ts.token(t, "carol", []string{"*"}, nil)
		if a := ts.post(t, proto.PathPull, carol, proto.PullRequest{Collection: "notes"}); a.status != http.StatusOK {
			t.Fatalf("other client: %d", a.status)
		}
	})
}

func TestMalformedBodies(t *testing.T) {
	ts := newTestServer(t, nil)
	tok := ts.token(t, "alice", []string{"*"}, []string{"*"})
	for _, tc := range []struct {
		name string
		path string
		body []byte
		code string
	}{
		{"empty", proto.PathPull, nil, proto.CodeMalformed},
		{"not cbor", proto.PathPush, []byte("{\"json\":1}"), proto.CodeMalformed},
		{"known key of the wrong type", proto.PathPull, []byte{0xa2, 0x01, 0x61, 'a', 0x02, 0x01}, proto.CodeMalformed},
		{"tagged", proto.PathPull, []byte{0xa1, 0x01, 0xc0, 0x61, 'a'}, proto.CodeMalformed},
		{"bad collection", proto.PathPull, []byte{0xa1, 0x01, 0x61, '{'}, proto.CodeInvalid},
		{"changes not an array", proto.PathPush, []byte{0xa2, 0x01, 0x61, 'c', 0x02, 0x01}, proto.CodeMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ts.post(t, tc.path, tok, tc.body).errorCode(t); got != tc.code {
				t.Fatalf("got %s, want %s", got, tc.code)
			}
		})
	}
}

// A push of no changes is read and answered with no results: clients
// send one to tell a change the server cannot read from a push it cannot
// read at all (docs/protocol.md, section 5, "A push refused whole").
func TestEmptyPush(t *testing.T) {
	ts := newTestServer(t, nil)
	tok := ts.token(t, "alice", []string{"*"}, []string{"*"})
	a := ts.post(t, proto.PathPush, tok, []byte{0xa2, 0x01, 0x61, 'c', 0x02, 0x80})  // {1: "c", 2: []}
	if a.status != http.StatusOK || !bytes.Equal(a.body, []byte{0xa1, 0x01, 0x80}) { // {1: []}
		t.Fatalf("got %d %x, want 200 a10180", a.status, a.body)
	}
}

// failingStore fails every call, as a store whose backend is down.
type failingStore struct{ stores.Store }

func (failingStore) Apply(context.Context, []crdt.Change) ([]stores.Result, error) {
	return nil, stores.ErrUnavailable
}
func (failingStore) Pull(context.Context, string, uint64, stores.PageLimit) (stores.Page, error) {
	return stores.Page{}, stores.ErrUnavailable
}
func (failingStore) Head(context.Context, string) (uint64, error) { return 0, stores.ErrUnavailable }

func TestStoreFailureIsUnavailable(t *testing.T) {
	ts := newTestServer(t, nil)
	// Swap the engine for one on a failing store.
	base := ts.store
	ts.serveOver(t, failingStore{base})
	tok := ts.token(t, "alice", []string{"*"}, []string{"*"})
	a := ts.post(t, proto.PathPush, tok, proto.PushRequest{Replica: "c1", Changes: []crdt.Change{change(t, "n", "a", "f", 1)}})
	if a.status != http.StatusServiceUnavailable || a.errorCode(t) != proto.CodeUnavailable {
		t.Fatalf("push: %d", a.status)
	}
	if got := ts.post(t, proto.PathPull, tok, proto.PullRequest{Collection: "n"}).errorCode(t); got != proto.CodeUnavailable {
		t.Fatalf("pull: %s", got)
	}
	if code, _ := ts.get(t, "/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("readyz: %d", code)
	}
	if code, _ := ts.get(t, "/healthz"); code != http.StatusOK {
		t.Fatalf("healthz: %d", code)
	}
}

func TestOriginHTTP(t *testing.T) {
	ts := newTestServer(t, func(c *Config) {
		c.Demo = true
		c.AllowedOrigins = []string{"app.example.com", "https://*.example.org", "dev.example.com:*"}
	})
	for _, tc := range []struct {
		origin string
		ok     bool
	}{
		{"", true},
		{"https://app.example.com", true},
		{"http://app.example.com", true},
		// A pattern names the port when the origin has one
		// (docs/operations.md, "Browser origins").
		{"http://app.example.com:5173", false},
		{"http://dev.example.com:5173", true},
		{"https://x.example.org", true},
		{"http://x.example.org", false},
		{"https://evil.example", false},
		{"null", false},
	} {
		t.Run(tc.origin, func(t *testing.T) {
			a := ts.post(t, proto.PathPull, "", proto.PullRequest{Collection: DemoCollection}, func(r *http.Request) {
				if tc.origin != "" {
					r.Header.Set("Origin", tc.origin)
				}
			})
			if !tc.ok {
				if got := a.errorCode(t); got != proto.CodeForbidden {
					t.Fatalf("got %s, want forbidden", got)
				}
				return
			}
			if a.status != http.StatusOK {
				t.Fatalf("status %d", a.status)
			}
			if tc.origin != "" && a.header.Get("Access-Control-Allow-Origin") != tc.origin {
				t.Fatalf("CORS header %q", a.header.Get("Access-Control-Allow-Origin"))
			}
		})
	}
	// The server's own origin needs no listing.
	a := ts.post(t, proto.PathPull, "", proto.PullRequest{Collection: DemoCollection}, func(r *http.Request) { r.Header.Set("Origin", ts.URL) })
	if a.status != http.StatusOK || a.header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("same origin: %d", a.status)
	}
}

func TestHealthAndMetrics(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.Demo = true })
	if code, body := ts.get(t, "/healthz"); code != 200 || body != "ok\n" {
		t.Fatalf("healthz: %d %q", code, body)
	}
	if code, _ := ts.get(t, "/readyz"); code != 200 {
		t.Fatalf("readyz: %d", code)
	}
	// The Server itself never serves its metrics: the program mounts
	// MetricsHandler where operators reach it (here, as the binary does).
	rec := httptest.NewRecorder()
	ts.srv.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusNotFound {
		t.Fatalf("the Server served /metrics itself: %d", rec.Code)
	}
	ts.push(t, "", change(t, DemoCollection, "a", "f", 1), change(t, DemoCollection, "b", "f", 1), change(t, "x", "b", "f", 1))
	ts.pull(t, "", DemoCollection, 0)
	c, _ := ts.open(t, "")
	c.send(proto.Sub{Collection: DemoCollection})
	if m, ok := c.recv().(proto.Changes); !ok || len(m.Records) != 2 {
		t.Fatalf("sub: %+v", m)
	}
	want := []string{
		`convergo_requests_total{code="200",route="push"} 1`,
		`convergo_requests_total{code="200",route="pull"} 1`,
		`convergo_requests_total{code="101",route="live"} 1`,
		`convergo_push_changes_total{status="applied"} 2`,
		`convergo_push_changes_total{status="refused"} 1`,
		`convergo_push_changes_total{status="duplicate"} 0`,
		`convergo_pull_records_total 4`,
		`convergo_live_connections 1`,
		`convergo_fanout_messages_total 1`,
		`convergo_live_messages_received_total{type="sub"} 1`,
		`convergo_request_duration_seconds_count{route="push"} 1`,
		`go_goroutines`,
	}
	// Counters move when a request's handler returns, which can be just
	// after the client got its answer: poll briefly.
	var missing []string
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		_, body := ts.get(t, "/metrics")
		missing = missing[:0]
		for _, w := range want {
			if !strings.Contains(body, w) {
				missing = append(missing, w)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
	}
	for _, w := range missing {
		t.Errorf("metrics lack %q", w)
	}
	// Servers do not share metrics.
	other := newTestServer(t, nil)
	if _, body := other.get(t, "/metrics"); strings.Contains(body, `route="push"`) {
		t.Error("a second server sees the first one's metrics")
	}
}

func TestNewValidates(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Fatal("New without engine: no error")
	}
	ts := newTestServer(t, nil)
	if _, err := New(Config{Engine: ts.eng, Limits: Limits{MaxPullRecords: 5000}}); err == nil {
		t.Fatal("page limit over the store's: no error")
	}
	if _, err := New(Config{Engine: ts.eng, AllowedOrigins: []string{"["}}); err == nil {
		t.Fatal("bad origin pattern: no error")
	}
	// The hello announces the max drift in whole ms, at least 1
	// (docs/protocol.md, section 6): an engine's below 1 ms would be
	// announced as 0.
	for _, d := range []time.Duration{time.Nanosecond, time.Millisecond - 1, time.Millisecond} {
		eng, err := engine.Open(engine.Config{Store: memory.New(), Replica: "srv-drift", PollInterval: -1, MaxDrift: d})
		if err != nil {
			t.Fatal(err)
		}
		_, err = New(Config{Engine: eng})
		eng.Close()
		if refused := err != nil; refused != (d < time.Millisecond) {
			t.Errorf("an engine's MaxDrift %v: New says %v; want it refused below 1ms", d, err)
		}
	}
}

func TestRateLimiter(t *testing.T) {
	l := newRateLimiter(10, 3)
	now := time.Unix(1000, 0)
	for i := 0; i < 3; i++ {
		if w := l.take("a", now); w != 0 {
			t.Fatalf("burst %d: wait %v", i, w)
		}
	}
	if w := l.take("a", now); w != 100*time.Millisecond {
		t.Fatalf("empty bucket: wait %v, want 100ms", w)
	}
	if w := l.take("b", now); w != 0 {
		t.Fatalf("other key: wait %v", w)
	}
	if w := l.take("a", now.Add(100*time.Millisecond)); w != 0 {
		t.Fatalf("after refill: wait %v", w)
	}
	// Full buckets are forgotten.
	l.take("c", now.Add(10*time.Second))
	l.mu.Lock()
	n := len(l.buckets)
	l.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d buckets kept, want 1", n)
	}
	if w := newRateLimiter(-1, 0).take("a", now); w != 0 {
		t.Fatalf("disabled limiter: wait %v", w)
	}
}

// TestRateLimiterSlowRate: a rate so slow that its refill period or a
// wait overflows time.Duration still limits: the bucket is kept, and the
// wait is the longest one, not a negative or a wrapped one.
func TestRateLimiterSlowRate(t *testing.T) {
	for _, rate := range []float64{1e-9, 1e-12, math.SmallestNonzeroFloat64} {
		l := newRateLimiter(rate, 2)
		now := time.Unix(1000, 0)
		for i := 0; i < 2; i++ {
			if w := l.take("a", now); w != 0 {
				t.Fatalf("rate %g, burst %d: wait %v", rate, i, w)
			}
		}
		for _, later := range []time.Duration{0, 2 * time.Second, time.Hour} {
			if w := l.take("a", now.Add(later)); w <= 0 {
				t.Errorf("rate %g, empty bucket %v later: wait %v, want a positive wait", rate, later, w)
			}
		}
	}
}

func TestMatchPattern(t *testing.T) {
	for _, tc := range []struct {
		pattern, coll string
		want          bool
	}{
		{"*", "anything.at.all", true},
		{"notes", "notes", true},
		{"notes", "notes2", false},
		{"t42.*", "t42.notes", true},
		{"t42.*", "t42.a.b", true},
		{"t42.*", "t42", false},
		{"t42.*", "t42x.notes", false},
		{"t42.*", "t42.", false}, // nothing below the prefix
	} {
		if got := MatchPattern(tc.pattern, tc.coll); got != tc.want {
			t.Errorf("MatchPattern(%q, %q): got %v, want %v", tc.pattern, tc.coll, got, tc.want)
		}
	}
	for _, bad := range []string{"", "a b", ".*", "x.**", "*.x"} {
		if ValidatePattern(bad) == nil {
			t.Errorf("ValidatePattern(%q): no error", bad)
		}
	}
}

func TestJWTIssue(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { return now }
	j, err := NewJWT(testSecret, clock)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := j.Issue("alice", []string{"demo.*"}, []string{"demo.todos"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	p, err := j.Authenticate(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	if p.Subject != "alice" || !p.CanRead("demo.x") || p.CanWrite("demo.x") || !p.CanWrite("demo.todos") || !p.Expires.Equal(now.Add(time.Hour)) {
		t.Fatalf("principal %+v", p)
	}
	now = now.Add(2 * time.Hour)
	if _, err := j.Authenticate(context.Background(), tok); !errors.Is(err, ErrTokenExpired) {
		t.Fatalf("after expiry: %v", err)
	}
	if _, err := NewJWT([]byte("short"), nil); err == nil {
		t.Fatal("short secret accepted")
	}
	if _, err := j.Issue("a", []string{"bad name"}, nil, time.Hour); err == nil {
		t.Fatal("bad pattern issued")
	}
}

func TestClientAddr(t *testing.T) {
	s := &Server{proxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")}}
	for _, tc := range []struct {
		remote string
		xff    []string
		want   string
	}{
		{"192.0.2.1:5000", nil, "192.0.2.1"},
		{"192.0.2.1:5000", []string{"203.0.113.9"}, "192.0.2.1"}, // untrusted peer: header ignored
		{"10.1.2.3:5000", []string{"203.0.113.9"}, "203.0.113.9"},
		{"10.1.2.3:5000", []string{"1.1.1.1, 203.0.113.9, 10.9.9.9"}, "203.0.113.9"}, // spoofed leftmost ignored
		{"10.1.2.3:5000", []string{"1.1.1.1", "203.0.113.9"}, "203.0.113.9"},
		{"10.1.2.3:5000", []string{"10.2.2.2"}, "10.2.2.2"}, // all trusted: the first hop
		{"10.1.2.3:5000", []string{"junk"}, "10.1.2.3"},
		{"10.1.2.3:5000", nil, "10.1.2.3"},
		{"[::1]:5000", []string{"2001:db8::1"}, "2001:db8::1"},
		{"[::ffff:192.0.2.1]:5000", nil, "192.0.2.1"},
	} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = tc.remote
		for _, v := range tc.xff {
			r.Header.Add("X-Forwarded-For", v)
		}
		if got := s.clientAddr(r); got != tc.want {
			t.Errorf("%s %q: got %s, want %s", tc.remote, tc.xff, got, tc.want)
		}
	}
}

// Over any run of requests, a client gets at most Burst plus Rate per
// second of elapsed time, and a client that waits as told is served.
func TestRateLimiterBound(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		rate := rapid.Float64Range(0.5, 1000).Draw(t, "rate")
		burst := rapid.IntRange(1, 50).Draw(t, "burst")
		l := newRateLimiter(rate, burst)
		start := time.Unix(1_000_000, 0)
		now := start
		allowed := 0
		steps := rapid.IntRange(1, 300).Draw(t, "steps")
		for i := 0; i < steps; i++ {
			now = now.Add(time.Duration(rapid.Int64Range(0, int64(50*time.Millisecond)).Draw(t, "gap")))
			wait := l.take("k", now)
			if wait == 0 {
				allowed++
			} else if l.take("k", now.Add(wait)) != 0 {
				t.Fatalf("told to wait %v, still refused after it", wait)
			} else {
				allowed++
				now = now.Add(wait)
			}
			if max := float64(burst) + rate*now.Sub(start).Seconds() + 1e-6; float64(allowed) > max {
				t.Fatalf("%d allowed by %v, bound %.2f", allowed, now.Sub(start), max)
			}
		}
	})
}

// Envelopes ignore keys they do not know (a later revision's), and a
// change that is readable CBOR but not a change is refused alone.
func TestEnvelopesAreTolerantChangesAreNot(t *testing.T) {
	ts := newTestServer(t, nil)
	tok := ts.token(t, "alice", []string{"*"}, []string{"*"})
	// {1: "a", 9: 0}: a pull with an unknown key 9.
	if a := ts.post(t, proto.PathPull, tok, []byte{0xa2, 0x01, 0x61, 'a', 0x09, 0x00}); a.status != http.StatusOK {
		t.Fatalf("pull with an unknown key: %d %s", a.status, a.errorCode(t))
	}
	good, err := crdt.EncodeChanges(ts.bind(t, tok, []crdt.Change{change(t, "a", "r1", "f", 1)}))
	if err != nil {
		t.Fatal(err)
	}
	// {1: "c", 2: [1, <good change>], 10: "later"} (key 9 names the
	// replica by its device part; 10 is unknown)
	body := []byte{0xa3, 0x01, 0x61, 'c', 0x02, 0x82, 0x01}
	body = append(body, good[1:]...)
	body = append(body, 0x0a, 0x65, 'l', 'a', 't', 'e', 'r')
	a := ts.post(t, proto.PathPush, tok, body)
	var resp proto.PushResponse
	if err := proto.Decode(a.body, &resp); err != nil || a.status != http.StatusOK || len(resp.Results) != 2 {
		t.Fatalf("push: %d %x (%v)", a.status, a.body, err)
	}
	if r := resp.Results[0]; r.Status != proto.StatusRefused || r.Code != proto.CodeMalformed {
		t.Errorf("the unreadable change: %+v", r)
	}
	if r := resp.Results[1]; r.Status != proto.StatusApplied {
		t.Errorf("the good change: %+v", r)
	}
}

// A client that sends its body too slowly is cut off; others are served.
func TestSlowBody(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.Demo = true; c.Limits.RequestTimeout = 200 * time.Millisecond })
	conn, err := net.Dial("tcp", ts.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v2/pull HTTP/1.1\r\nHost: x\r\nConvergo-Protocol: 2\r\nContent-Type: application/cbor\r\nContent-Length: 100\r\n\r\n\xa1")
	if page := ts.pull(t, "", DemoCollection, 0); page.More {
		t.Fatal("other client not served")
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	n, _ := conn.Read(buf)
	if !strings.Contains(string(buf[:n]), "400 Bad Request") || !strings.Contains(string(buf[:n]), "Convergo-Error: malformed") {
		t.Fatalf("slow body answered %q", buf[:n])
	}
	if _, err := conn.Read(buf); err == nil {
		t.Fatal("connection still open")
	}
}

// A preflight from an allowed foreign origin lets the browser send the
// protocol's headers and read its error and request-id headers.
func TestCORSHeaders(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.AllowedOrigins = []string{"app.example.com"} })
	req, err := http.NewRequest(http.MethodOptions, ts.URL+proto.PathPush, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Origin", "https://app.example.com")
	req.Header.Set("Access-Control-Request-Method", "POST")
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	allow := resp.Header.Get("Access-Control-Allow-Headers")
	expose := resp.Header.Get("Access-Control-Expose-Headers")
	for _, h := range []string{proto.HeaderProtocol, "Authorization", "Content-Type"} {
		if !strings.Contains(allow, h) {
			t.Errorf("Access-Control-Allow-Headers %q lacks %s", allow, h)
		}
	}
	for _, h := range []string{proto.HeaderError, proto.HeaderRetryAfter, proto.HeaderRequestID} {
		if !strings.Contains(expose, h) {
			t.Errorf("Access-Control-Expose-Headers %q lacks %s", expose, h)
		}
	}
}

// Every route has a deadline: a request whose declared body never comes
// does not hold its connection, whatever the route (finding: routes outside
// the API had none).
func TestEveryRouteHasADeadline(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.Demo = true; c.Limits.RequestTimeout = 200 * time.Millisecond })
	ts.srv.Handle("/static/", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "file") }))
	for _, route := range []string{"/healthz", "/readyz", "/metrics", "/static/x.js", "/nope", proto.PathLive, proto.PathPull} {
		t.Run(route, func(t *testing.T) {
			conn, err := net.Dial("tcp", ts.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc", route)
			_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			start := time.Now()
			_, err = io.Copy(io.Discard, conn) // the answer, then the close
			if err != nil {
				t.Fatalf("connection still open after %v: %v", time.Since(start), err)
			}
		})
	}
}

// A DNS-rebinding page sends its own host as both Origin and Host: the
// request's Host header proves nothing, so only configured public origins
// (and, for the demo, loopback) count as the server's own.
func TestOriginIgnoresHostHeader(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.PublicOrigins = []string{"https://sync.example.com"} })
	tok := ts.token(t, "alice", []string{"*"}, []string{"*"})
	rebind := func(r *http.Request) {
		r.Host = "evil.example:8080"
		r.Header.Set("Origin", "http://evil.example:8080")
	}
	if a := ts.post(t, proto.PathPull, tok, proto.PullRequest{Collection: "notes"}, rebind); a.status != http.StatusForbidden {
		t.Fatalf("rebinding page over HTTP: %d", a.status)
	}
	own := func(r *http.Request) { r.Header.Set("Origin", "https://sync.example.com") }
	if a := ts.post(t, proto.PathPull, tok, proto.PullRequest{Collection: "notes"}, own); a.status != http.StatusOK || a.header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("public origin: %d", a.status)
	}
	// Loopback pages are the server's own only in demo mode.
	loop := func(r *http.Request) { r.Header.Set("Origin", ts.URL) }
	if a := ts.post(t, proto.PathPull, tok, proto.PullRequest{Collection: "notes"}, loop); a.status != http.StatusForbidden {
		t.Fatalf("loopback origin without the demo: %d", a.status)
	}
	// The WebSocket upgrade follows the same rule, not the library's own
	// same-host check.
	_, resp, err := ts.dial(t, http.Header{"Origin": {"http://" + ts.Listener.Addr().String()}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("loopback origin upgrade without the demo: %v %v", resp, err)
	}
}

// writesFailing fails Apply while failing is set; reads work: a disk that
// is full.
type writesFailing struct {
	stores.Store
	failing atomic.Bool
}

func (s *writesFailing) Apply(ctx context.Context, cs []crdt.Change) ([]stores.Result, error) {
	if s.failing.Load() {
		return nil, fmt.Errorf("%w: no space left on device", stores.ErrUnavailable)
	}
	return s.Store.Apply(ctx, cs)
}

// Readiness follows write health: after repeated commit failures /readyz
// fails (reads alone would still pass), and it recovers with the first
// commit that succeeds.
func TestReadyzFollowsWriteHealth(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.Demo = true })
	ws := &writesFailing{Store: ts.store}
	ts.serveOver(t, ws)
	if code, body := ts.get(t, "/readyz"); code != http.StatusOK {
		t.Fatalf("healthy: %d %s", code, body)
	}
	ws.failing.Store(true)
	for i := 0; i < 3; i++ {
		a := ts.post(t, proto.PathPush, "", proto.PushRequest{Replica: "c1", Changes: []crdt.Change{change(t, DemoCollection, "r", "f", i)}})
		if a.status != http.StatusServiceUnavailable || a.errorCode(t) != proto.CodeUnavailable || a.header.Get(proto.HeaderRetryAfter) == "" {
			t.Fatalf("push on a full disk: %d %s", a.status, a.errorCode(t))
		}
	}
	if code, body := ts.get(t, "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "writes") {
		t.Fatalf("after failed commits: %d %s", code, body)
	}
	ws.failing.Store(false)
	ts.push(t, "", change(t, DemoCollection, "r", "f", "ok"))
	if code, body := ts.get(t, "/readyz"); code != http.StatusOK {
		t.Fatalf("after a commit succeeded: %d %s", code, body)
	}
}

// collectionFenced is a store whose writes to one collection are refused
// by an operator's rebuild of its log (stores.ErrFenced), as DynamoDB's
// are from a reshard's, repair's or mark-restored's fence to its end.
type collectionFenced struct {
	stores.Store
	coll string
}

func (s *collectionFenced) Apply(ctx context.Context, cs []crdt.Change) ([]stores.Result, error) {
	for _, c := range cs {
		if c.Collection == s.coll {
			return nil, fmt.Errorf("apply %s: %w: %w: run the rebuild again", c.Collection, stores.ErrUnavailable, stores.ErrFenced)
		}
	}
	return s.Store.Apply(ctx, cs)
}

// A collection fenced by a rebuild of its log refuses its writers
// (unavailable: they retry), and readiness holds: the other tenants'
// collections are served, and taking the instance out of the load
// balancer would refuse them all for one collection's rebuild.
func TestReadyzHoldsWhileACollectionIsFenced(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.Demo = true })
	ts.serveOver(t, &collectionFenced{Store: ts.store, coll: DemoCollection})
	for i := 0; i < 5; i++ {
		a := ts.post(t, proto.PathPush, "", proto.PushRequest{Replica: "c1", Changes: []crdt.Change{change(t, DemoCollection, "r", "f", i)}})
		if a.status != http.StatusServiceUnavailable || a.errorCode(t) != proto.CodeUnavailable || a.header.Get(proto.HeaderRetryAfter) == "" {
			t.Fatalf("push to a fenced collection: %d %s", a.status, a.errorCode(t))
		}
	}
	if code, body := ts.get(t, "/readyz"); code != http.StatusOK {
		t.Fatalf("after pushes to a fenced collection: /readyz %d %s; want 200", code, body)
	}
}

// What the client is told names its mistake, not the server's internals:
// no package prefixes, no codec words, no Go types.
func TestErrorsCarryNoInternalDetail(t *testing.T) {
	ts := newTestServer(t, nil)
	tok := ts.token(t, "alice", []string{"*"}, []string{"*"})
	internal := []string{"crdt:", "cbor:", "stores:", "transport:", "Go struct", "proto."}
	check := func(what, msg string) {
		t.Helper()
		if msg == "" {
			t.Errorf("%s: no message", what)
		}
		for _, w := range internal {
			if strings.Contains(msg, w) {
				t.Errorf("%s: message %q shows %q", what, msg, w)
			}
		}
	}
	for _, body := range [][]byte{{0xff}, {0xa1, 0x01, 0x80}, {0xa1, 0x01, 0x61, '{'}} {
		a := ts.post(t, proto.PathPull, tok, body)
		var e proto.ErrorBody
		if err := proto.Decode(a.body, &e); err != nil {
			t.Fatal(err)
		}
		check(fmt.Sprintf("pull %x", body), e.Message)
	}
	a := ts.post(t, proto.PathPull, "abc.def.ghi", proto.PullRequest{Collection: "x"})
	var e proto.ErrorBody
	if err := proto.Decode(a.body, &e); err != nil {
		t.Fatal(err)
	}
	check("bad token", e.Message)
	ahead := crdt.Change{Collection: "notes", Record: crdt.SetField("r9", "x", mustValue(t, 1),
		crdt.Stamp{Wall: time.Now().Add(time.Hour).UnixMilli(), Replica: "c1"})}
	big := change(t, "notes", "r8", "x", strings.Repeat("y", 200<<10))
	for i, r := range ts.push(t, tok, ahead, big) {
		check(fmt.Sprintf("refused change %d", i), r.Message)
	}
}

// A principal writes only stamps of replica ids it owns: another subject's,
// the server's, a captured change's or a made-up id is refused alone with
// forged_replica, in fields and in delete stamps.
func TestReplicaBinding(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.Demo = true })
	alice := ts.token(t, "alice", []string{"*"}, []string{"*"})
	now := time.Now().UnixMilli()
	stamped := func(replica string) crdt.Change {
		return crdt.Change{Collection: "notes", Record: crdt.SetField("r1", "x", mustValue(t, replica), crdt.Stamp{Wall: now, Replica: replica})}
	}
	deleted := crdt.Change{Collection: "notes", Record: crdt.DeleteRecord("r2", crdt.Stamp{Wall: now, Replica: proto.ReplicaFor("bob", "phone")})}
	res := ts.push(t, alice,
		stamped(proto.ReplicaFor("alice", "laptop")),
		stamped(proto.ReplicaFor("bob", "laptop")),
		stamped("srv-test"),
		stamped("ddb-stream-0001"),
		stamped(proto.ReplicaPrefix("alice")), // the prefix alone: no device
		stamped("made-up"),
		deleted,
	)
	want := []proto.Status{proto.StatusApplied, proto.StatusRefused, proto.StatusRefused, proto.StatusRefused, proto.StatusRefused, proto.StatusRefused, proto.StatusRefused}
	for i, r := range res {
		if r.Status != want[i] || (want[i] == proto.StatusRefused && r.Code != proto.CodeForgedReplica) {
			t.Errorf("change %d: %+v, want %v", i, r, want[i])
		}
	}
	// Bob's current value is untouched by alice's forged stamp.
	bob := ts.token(t, "bob", []string{"*"}, []string{"*"})
	if res := ts.push(t, bob, stamped(proto.ReplicaFor("bob", "laptop"))); res[0].Status != proto.StatusApplied {
		t.Fatalf("bob's own write: %+v", res[0])
	}
	// The hello answer names the prefix; anonymous clients share one.
	a := ts.post(t, proto.PathHello, alice, proto.HelloRequest{Protocol: proto.Version, Replica: proto.ReplicaFor("alice", "x")})
	var h proto.HelloResponse
	if err := proto.Decode(a.body, &h); err != nil || h.ReplicaPrefix != proto.ReplicaPrefix("alice") {
		t.Fatalf("hello prefix %q (%v)", h.ReplicaPrefix, err)
	}
	anon := crdt.Change{Collection: DemoCollection, Record: crdt.SetField("r", "x", mustValue(t, 1), crdt.Stamp{Wall: now, Replica: proto.ReplicaFor("", "tab9")})}
	if res := ts.push(t, "", anon); res[0].Status != proto.StatusApplied {
		t.Fatalf("anonymous write with the shared prefix: %+v", res[0])
	}
}

// A push may name its replica by its device part (key 9): the server puts
// the token subject's prefix in front, so the stamps of index 0 are that
// subject's, whichever prefix the body was made for. Key 1 and key 9 both,
// or a device part that is not one, refuse the push whole.
func TestPushByDevicePart(t *testing.T) {
	ts := newTestServer(t, nil)
	alice := ts.token(t, "alice", []string{"*"}, []string{"*"})
	now := time.Now().UnixMilli()
	push := func(token, subject string, id string) []byte {
		replica := proto.ReplicaFor(subject, "laptop")
		body, err := proto.Encode(proto.PushRequest{Replica: replica, Prefix: proto.ReplicaPrefix(subject), Changes: []crdt.Change{
			{Collection: "notes", Record: crdt.SetField(id, "x", mustValue(t, 1), crdt.Stamp{Wall: now, Replica: replica})},
		}})
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(body, []byte(proto.ReplicaPrefix(subject))) {
			t.Fatalf("body %x carries the prefix", body)
		}
		a := ts.post(t, proto.PathPush, token, body)
		if a.status != http.StatusOK {
			t.Fatalf("push: status %d, code %s", a.status, a.errorCode(t))
		}
		var resp proto.PushResponse
		if err := proto.Decode(a.body, &resp); err != nil || len(resp.Results) != 1 || resp.Results[0].Status != proto.StatusApplied {
			t.Fatalf("push: %+v (%v)", resp, err)
		}
		return body
	}
	push(alice, "alice", "r1")
	// Made for bob's prefix, sent with alice's token: alice's device.
	push(alice, "bob", "r2")
	page := ts.pull(t, alice, "notes", 0)
	want := proto.ReplicaFor("alice", "laptop")
	if len(page.Records) != 2 {
		t.Fatalf("pulled %d records", len(page.Records))
	}
	for _, r := range page.Records {
		if got := r.Fields["x"].Stamp.Replica; got != want {
			t.Errorf("record %s stamped by %q, want %q", r.ID, got, want)
		}
	}
	for name, tc := range map[string]struct {
		hex, code string
	}{
		"both keys":       {"a301" + "6161" + "0280" + "09" + "6161", proto.CodeMalformed},
		"bad device part": {"a20280" + "09" + "63612e62", proto.CodeInvalid},
		"empty device":    {"a20280" + "09" + "60", proto.CodeInvalid},
		"device not text": {"a20280" + "09" + "01", proto.CodeMalformed},
		"neither of them": {"a10280", proto.CodeInvalid},
	} {
		body, _ := hex.DecodeString(tc.hex)
		a := ts.post(t, proto.PathPush, alice, body)
		if a.status != http.StatusBadRequest || a.errorCode(t) != tc.code {
			t.Errorf("%s: status %d, code %s, want 400 %s", name, a.status, a.errorCode(t), tc.code)
		}
	}
}

// Static files the server serves (the browser library) carry CORS headers
// for allowed foreign origins, so pages there can import them as modules.
func TestCORSOnStaticFiles(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.AllowedOrigins = []string{"app.example.com"} })
	ts.srv.Handle("/convergo/", ts.srv.CORS(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "export {}")
	})))
	for origin, want := range map[string]string{"https://app.example.com": "https://app.example.com", "https://evil.example": ""} {
		req, _ := http.NewRequest(http.MethodGet, ts.URL+"/convergo/index.js", nil)
		req.Header.Set("Origin", origin)
		resp, err := ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("Access-Control-Allow-Origin"); got != want {
			t.Errorf("origin %s: Access-Control-Allow-Origin %q, want %q", origin, got, want)
		}
	}
}

// With the demo, a page on a loopback origin other than the server's own
// (a development server at http://localhost:5173 importing the library
// from the server at 127.0.0.1:8080, as the README's web-page example
// does while one develops) is allowed, and gets the CORS headers without
// which the browser would neither load the library nor read an answer
// (finding: loopback origins counted as the server's own whatever their
// port, so they got none, and listing one in --origins did not help).
func TestDemoLoopbackPageCORS(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.Demo = true })
	ts.srv.Handle("/convergo/", ts.srv.CORS(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "export {}")
	})))
	for _, origin := range []string{"http://localhost:5173", "http://127.0.0.1:5173", "http://[::1]:5173"} {
		t.Run(origin, func(t *testing.T) {
			a := ts.post(t, proto.PathPull, "", proto.PullRequest{Collection: DemoCollection}, func(r *http.Request) { r.Header.Set("Origin", origin) })
			if a.status != http.StatusOK {
				t.Fatalf("pull: status %d", a.status)
			}
			if got := a.header.Get("Access-Control-Allow-Origin"); got != origin {
				t.Errorf("pull: Access-Control-Allow-Origin %q, want %q", got, origin)
			}
			for _, tc := range []struct{ method, path string }{{http.MethodOptions, proto.PathPush}, {http.MethodGet, "/convergo/index.js"}} {
				req, err := http.NewRequest(tc.method, ts.URL+tc.path, nil)
				if err != nil {
					t.Fatal(err)
				}
				req.Header.Set("Origin", origin)
				req.Header.Set("Access-Control-Request-Method", "POST")
				resp, err := ts.Client().Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if got := resp.Header.Get("Access-Control-Allow-Origin"); got != origin {
					t.Errorf("%s %s: Access-Control-Allow-Origin %q, want %q", tc.method, tc.path, got, origin)
				}
			}
		})
	}
}
