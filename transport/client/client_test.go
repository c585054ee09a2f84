package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/transport/proto"
)

func setChange(t *testing.T, c *Client, coll, id, field string, v any) crdt.Change {
	t.Helper()
	s, err := c.Now()
	if err != nil {
		t.Fatal(err)
	}
	b, err := crdt.EncodeValue(v)
	if err != nil {
		t.Fatal(err)
	}
	return crdt.Change{Collection: coll, Record: crdt.SetField(id, field, b, s)}
}

func TestNewValidatesConfig(t *testing.T) {
	for _, cfg := range []Config{
		{URL: "", Replica: "a"},
		{URL: "ftp://x", Replica: "a"},
		{URL: "http://", Replica: "a"},
		{URL: "http://x", Replica: "bad replica"},
		{URL: "http://x", Device: "bad device"},
		{URL: "http://x", Device: strings.Repeat("d", proto.MaxDeviceBytes+1)},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) succeeded, want an error", cfg)
		}
	}
}

// A client without a replica id, whose token names no subject it can read
// (not a JWT), binds itself on its first hello to the id the subject owns
// for its device, and its clock goes on from where it was.
func TestClientBindsOnHello(t *testing.T) {
	f := newFakeServer(t)
	c, err := New(Config{URL: f.srv.URL, Token: "opaque", Device: "laptop", Backoff: Backoff{MaxAttempts: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Now(); !errors.Is(err, ErrUnbound) {
		t.Fatalf("Now before hello: %v, want ErrUnbound", err)
	}
	if err := c.Observe(crdt.Stamp{Wall: time.Now().Add(time.Minute).UnixMilli(), Replica: "x"}); err != nil {
		t.Fatal(err)
	}
	info, err := c.Hello(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if want := proto.ReplicaFor(info.Subject, "laptop"); c.Replica() != want {
		t.Fatalf("bound to %q, want %q", c.Replica(), want)
	}
	s, err := c.Now()
	if err != nil || s.Replica != c.Replica() || s.Wall < time.Now().Add(time.Minute-time.Second).UnixMilli() {
		t.Fatalf("first stamp %v (%v): want the bound id, after what was observed", s, err)
	}
}

func TestPushPullRoundTrip(t *testing.T) {
	f := newFakeServer(t)
	ctx := t.Context()
	a := f.client(t, "a", nil)
	if _, err := a.Hello(ctx); err != nil {
		t.Fatal(err)
	}
	ch := setChange(t, a, "notes", "n1", "title", "hi")
	res, err := a.Push(ctx, []crdt.Change{ch})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 1 || res[0].Status != StatusApplied || res[0].Lost != nil || res[0].Err != nil || !res[0].Acknowledged() {
		t.Fatalf("first push: got %+v, want applied with nothing lost", res)
	}
	res, err = a.Push(ctx, []crdt.Change{ch})
	if err != nil || res[0].Status != StatusDuplicate || !res[0].Acknowledged() {
		t.Fatalf("second push of the same change: got %+v, %v; want an acknowledged duplicate", res, err)
	}
	p, err := a.Pull(ctx, "notes", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Records) != 1 || len(p.Next) == 0 || p.More || !p.Records[0].Equal(ch.Record) {
		t.Fatalf("pull: got %+v, want the pushed record and a cursor after it", p)
	}
	after, err := a.Pull(ctx, "notes", p.Next, 0)
	if err != nil || len(after.Records) != 0 || after.More || string(after.Next) != string(p.Next) {
		t.Fatalf("pull after the end: got %+v, %v; want no records and the same cursor", after, err)
	}
	// Both cursors are the log's head, as the server reads them.
	if got, want := f.cursorSeq(t, after.Next), f.mustHead(t, "notes"); got != want {
		t.Fatalf("cursor at %d, head %d", got, want)
	}
}

func TestPushReportsSupersededAndLost(t *testing.T) {
	f := newFakeServer(t)
	ctx := t.Context()
	a := f.client(t, "a", nil)
	old := setChange(t, a, "notes", "n1", "title", "old")
	oldBoth := crdt.Change{Collection: "notes", Record: old.Record.Clone()}
	s, err := a.Now()
	if err != nil {
		t.Fatal(err)
	}
	oldBoth.Record.Fields["body"] = crdt.Field{Stamp: s, Value: mustValue(t, "b")}
	newer := setChange(t, a, "notes", "n1", "title", "new")
	if res, err := a.Push(ctx, []crdt.Change{newer}); err != nil || res[0].Status != StatusApplied {
		t.Fatalf("newer write: got %+v, %v", res, err)
	}
	res, err := a.Push(ctx, []crdt.Change{old, oldBoth})
	if err != nil {
		t.Fatal(err)
	}
	// The old title alone changes nothing: superseded. With a new field it
	// applies, and names the field that lost.
	if res[0].Status != StatusSuperseded || fmt.Sprint(res[0].Lost) != "[title]" || !res[0].Acknowledged() {
		t.Fatalf("older write: got %+v, want acknowledged superseded losing [title]", res[0])
	}
	if res[1].Status != StatusApplied || fmt.Sprint(res[1].Lost) != "[title]" {
		t.Fatalf("older write with a new field: got %+v, want applied losing [title]", res[1])
	}
}

func TestHelloCorrectsSkew(t *testing.T) {
	f := newFakeServer(t)
	// The local clock runs 10 minutes slow: without correction the server
	// would see its stamps as old, and a fast one would be refused as drift.
	slow := func() time.Time { return time.Now().Add(-10 * time.Minute) }
	c := f.client(t, "a", func(cfg *Config) { cfg.Now = slow })
	info, err := c.Hello(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if d := info.Offset - 10*time.Minute; d < -time.Second || d > time.Second {
		t.Fatalf("offset: got %s, want about 10m", info.Offset)
	}
	s, err := c.Now()
	if err != nil {
		t.Fatal(err)
	}
	if d := s.Wall - time.Now().UnixMilli(); d < -1000 || d > 1000 {
		t.Fatalf("stamp wall is %dms from server time, want within 1s", d)
	}
	if info.MaxPush != 1000 || info.ServerReplica != "srv" || info.MaxDrift != 5*time.Minute {
		t.Fatalf("info: got %+v", info)
	}
}

func TestPushRefusesDriftPerChange(t *testing.T) {
	f := newFakeServer(t)
	fast := func() time.Time { return time.Now().Add(time.Hour) }
	// A clock an hour fast that never said hello stamps beyond the drift
	// bound: that change is refused, the others apply.
	c := f.client(t, "fast", func(cfg *Config) { cfg.Now = fast })
	good := f.client(t, "good", nil)
	changes := []crdt.Change{setChange(t, good, "c", "r1", "x", 1), setChange(t, c, "c", "r2", "x", 2), setChange(t, good, "c", "r3", "x", 3)}
	res, err := good.Push(t.Context(), changes)
	if err != nil {
		t.Fatal(err)
	}
	want := []Status{StatusApplied, StatusRefused, StatusApplied}
	for i, r := range res {
		if r.Status != want[i] {
			t.Fatalf("result %d: got %s, want %s", i, r.Status, want[i])
		}
	}
	if !errors.Is(res[1].Err, ErrClockDrift) {
		t.Fatalf("refusal: got %v, want ErrClockDrift", res[1].Err)
	}
}

func TestPushRetriesUnavailable(t *testing.T) {
	f := newFakeServer(t)
	var n atomic.Int64
	f.failWith(func(path string) (int, string) {
		if n.Add(1) <= 2 {
			return http.StatusServiceUnavailable, proto.CodeUnavailable
		}
		return 0, ""
	})
	c := f.client(t, "a", nil)
	res, err := c.Push(t.Context(), []crdt.Change{setChange(t, c, "c", "r", "f", true)})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Status != StatusApplied || n.Load() != 3 {
		t.Fatalf("got %+v after %d requests, want applied after 3", res, n.Load())
	}
}

func TestRetryAfterIsAFloor(t *testing.T) {
	f := newFakeServer(t)
	var n atomic.Int64
	f.failWith(func(path string) (int, string) {
		if n.Add(1) == 1 {
			return http.StatusTooManyRequests, proto.CodeRateLimited
		}
		return 0, ""
	})
	c := f.client(t, "a", nil)
	start := time.Now()
	if _, err := c.Push(t.Context(), []crdt.Change{setChange(t, c, "c", "r", "f", true)}); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el < time.Second {
		t.Fatalf("retried after %s, want at least Retry-After: 1s", el)
	}
}

func TestGivesUpAfterMaxAttempts(t *testing.T) {
	f := newFakeServer(t)
	var n atomic.Int64
	f.failWith(func(string) (int, string) { n.Add(1); return http.StatusServiceUnavailable, proto.CodeUnavailable })
	c := f.client(t, "a", nil)
	_, err := c.Push(t.Context(), []crdt.Change{setChange(t, c, "c", "r", "f", true)})
	var e *Error
	if !errors.As(err, &e) || e.Status != 503 || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("got %v, want a 503 unavailable *Error", err)
	}
	if n.Load() != 4 {
		t.Fatalf("sent %d requests, want MaxAttempts = 4", n.Load())
	}
}

func TestErrorsAreNotRetried(t *testing.T) {
	// Every code whose retry class is not backoff is answered at once, as
	// an *Error matching its sentinel and carrying the request id.
	for _, info := range proto.Codes {
		if info.HTTP == 0 || info.Retry == proto.RetryBackoff {
			continue
		}
		t.Run(info.Code, func(t *testing.T) {
			f := newFakeServer(t)
			var n atomic.Int64
			f.failWith(func(string) (int, string) { n.Add(1); return info.HTTP, info.Code })
			c := f.client(t, "a", nil)
			_, err := c.Pull(t.Context(), "c", nil, 0)
			var e *Error
			if !errors.As(err, &e) || e.Status != info.HTTP || e.Code != info.Code || e.Message != "injected" || e.RequestID != fakeRequestID {
				t.Fatalf("got %v, want *Error %d %s with the request id", err, info.HTTP, info.Code)
			}
			if !errors.Is(err, sentinels[info.Code]) {
				t.Fatalf("errors.Is(%v, %v) is false", err, sentinels[info.Code])
			}
			if e.Retryable() {
				t.Fatalf("%s is retryable", info.Code)
			}
			if n.Load() != 1 {
				t.Fatalf("sent %d requests, want 1", n.Load())
			}
		})
	}
}

func TestRetryableErrorsAreRetried(t *testing.T) {
	for _, info := range proto.Codes {
		if info.Retry != proto.RetryBackoff {
			continue
		}
		t.Run(info.Code, func(t *testing.T) {
			f := newFakeServer(t)
			var n atomic.Int64
			f.failWith(func(string) (int, string) {
				if n.Add(1) == 1 {
					return info.HTTP, info.Code
				}
				return 0, ""
			})
			c := f.client(t, "a", func(cfg *Config) { cfg.Backoff.Max = time.Millisecond })
			if _, err := c.Pull(t.Context(), "c", nil, 0); err != nil || n.Load() != 2 {
				t.Fatalf("got %v after %d requests, want success after 2", err, n.Load())
			}
		})
	}
}

func TestEveryCodeHasASentinel(t *testing.T) {
	seen := map[error]string{}
	for _, info := range proto.Codes {
		s, ok := sentinels[info.Code]
		if !ok {
			t.Errorf("code %s has no sentinel", info.Code)
			continue
		}
		if other, dup := seen[s]; dup {
			t.Errorf("codes %s and %s share a sentinel", other, info.Code)
		}
		seen[s] = info.Code
		if !errors.Is(&Error{Code: info.Code}, s) {
			t.Errorf("an *Error with code %s does not match %v", info.Code, s)
		}
	}
	if len(sentinels) != len(proto.Codes) {
		t.Errorf("%d sentinels for %d codes", len(sentinels), len(proto.Codes))
	}
}

func TestErrorWithoutCode(t *testing.T) {
	// An error answer without a protocol code the client knows (a proxy's
	// page, a code of a later server) is read as the browser client reads
	// it (docs/protocol.md section 5): a status only one code has names
	// that code; any other is an answer the client cannot read, a network
	// failure retried with backoff (ErrProtocol), never a refusal of what
	// the request carried.
	for _, tc := range []struct {
		status     int
		body, head string
		code       string // "" for ErrProtocol
	}{
		{http.StatusBadGateway, "<html>oops</html>", "", ""},
		{http.StatusGatewayTimeout, "<html>oops</html>", "", ""},
		{http.StatusServiceUnavailable, "<html>oops</html>", "", proto.CodeUnavailable},
		{http.StatusTooManyRequests, "<html>oops</html>", "", proto.CodeRateLimited},
		{http.StatusRequestEntityTooLarge, "<html>oops</html>", "", proto.CodeTooLarge},
		{http.StatusForbidden, "<html>oops</html>", "", ""},
		{http.StatusBadRequest, "<html>oops</html>", "", ""},
		{http.StatusUnauthorized, "<html>oops</html>", "", ""},
		{http.StatusTeapot, "<html>oops</html>", "", ""},
		{http.StatusForbidden, "<html>oops</html>", proto.CodeRevoked, proto.CodeRevoked},
		{http.StatusForbidden, "<html>oops</html>", "no_such_code", ""},
		{http.StatusForbidden, errorBody(t, "no_such_code"), "", ""},
		{http.StatusForbidden, errorBody(t, proto.CodeOutOfScope), proto.CodeRevoked, proto.CodeOutOfScope},
		{http.StatusForbidden, errorBody(t, "no_such_code"), proto.CodeRevoked, proto.CodeRevoked},
	} {
		resp := &http.Response{StatusCode: tc.status, Header: http.Header{}}
		if tc.head != "" {
			resp.Header.Set(proto.HeaderError, tc.head)
		}
		err := errorFromResponse(resp, []byte(tc.body))
		var e *Error
		switch {
		case tc.code == "":
			if !errors.Is(err, ErrProtocol) || errors.As(err, &e) {
				t.Errorf("%d %q (header %q): got %v, want ErrProtocol and no protocol code", tc.status, tc.body, tc.head, err)
			}
		case !errors.As(err, &e) || e.Code != tc.code:
			t.Errorf("%d %q (header %q): got %v, want code %s", tc.status, tc.body, tc.head, err, tc.code)
		}
	}
	// The statuses the rule names a code for are those only one code has,
	// as the browser client's codeOfStatus.
	for _, c := range proto.Codes {
		if c.HTTP == 0 {
			continue // a per-change code: no answer's status
		}
		n := 0
		for _, o := range proto.Codes {
			if o.HTTP == c.HTTP {
				n++
			}
		}
		if got := proto.CodeOfStatus(c.HTTP); (n == 1) != (got == c.Code) || (n > 1 && got != "") {
			t.Errorf("CodeOfStatus(%d) = %q; %d codes have that status", c.HTTP, got, n)
		}
	}
}

// errorBody is the protocol's error body of code.
func errorBody(t *testing.T, code string) string {
	t.Helper()
	b, err := proto.Encode(proto.ErrorBody{Code: code, Message: "m"})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestTokenExpiredRefreshes(t *testing.T) {
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok := r.Header.Get("Authorization")
		seen = append(seen, tok)
		if tok != "Bearer fresh" {
			writeError(w, 401, proto.CodeTokenExpired, "expired")
			return
		}
		b, _ := proto.Encode(proto.PullResponse{Records: []crdt.Record{}, Next: []byte("c7")})
		w.Write(b)
	}))
	defer srv.Close()
	var calls int
	c, err := New(Config{URL: srv.URL, Replica: "a", TokenFunc: func(context.Context) (string, error) {
		calls++
		if calls == 1 {
			return "stale", nil
		}
		return "fresh", nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.Pull(t.Context(), "c", nil, 0)
	if err != nil || string(p.Next) != "c7" {
		t.Fatalf("got %+v, %v", p, err)
	}
	if want := []string{"Bearer stale", "Bearer fresh"}; fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Fatalf("tokens sent: got %v, want %v", seen, want)
	}
}

func TestRefusalOfAReplacedTokenGoesAgain(t *testing.T) {
	// A request refused forbidden or revoked with a token the TokenFunc has
	// replaced since (the user signed in again while it was on its way)
	// goes again with the new one; with the token still current, the
	// refusal stands and is not sent again.
	for _, code := range []string{proto.CodeForbidden, proto.CodeRevoked} {
		for _, replaced := range []bool{true, false} {
			var seen []string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				tok := r.Header.Get("Authorization")
				seen = append(seen, tok)
				if tok != "Bearer new" {
					writeError(w, 403, code, "refused")
					return
				}
				b, _ := proto.Encode(proto.PullResponse{Records: []crdt.Record{}, Next: []byte("c7")})
				w.Write(b)
			}))
			var calls int
			c, err := New(Config{URL: srv.URL, Replica: "a", TokenFunc: func(context.Context) (string, error) {
				calls++
				if calls == 1 || !replaced {
					return "old", nil
				}
				return "new", nil
			}})
			if err != nil {
				t.Fatal(err)
			}
			p, err := c.Pull(t.Context(), "c", nil, 0)
			srv.Close()
			if replaced {
				if err != nil || string(p.Next) != "c7" {
					t.Errorf("%s, token replaced: got %+v, %v; want the pull answered to the new token", code, p, err)
				}
				if want := []string{"Bearer old", "Bearer new"}; fmt.Sprint(seen) != fmt.Sprint(want) {
					t.Errorf("%s, token replaced: tokens sent %v, want %v", code, seen, want)
				}
				continue
			}
			var e *Error
			if !errors.As(err, &e) || e.Code != code {
				t.Errorf("%s, token still current: got %v, want the refusal", code, err)
			}
			if want := []string{"Bearer old"}; fmt.Sprint(seen) != fmt.Sprint(want) {
				t.Errorf("%s, token still current: tokens sent %v, want %v", code, seen, want)
			}
		}
	}
}

func TestTokenExpiredMatchesUnauthenticated(t *testing.T) {
	err := error(&Error{Status: 401, Code: proto.CodeTokenExpired})
	if !errors.Is(err, ErrTokenExpired) || !errors.Is(err, ErrUnauthenticated) || errors.Is(err, ErrForbidden) {
		t.Fatal("token_expired must match ErrTokenExpired and ErrUnauthenticated only")
	}
	if errors.Is(&Error{Code: proto.CodeUnauthenticated}, ErrTokenExpired) {
		t.Fatal("unauthenticated must not match ErrTokenExpired")
	}
}

func TestNetworkErrorsAreRetried(t *testing.T) {
	f := newFakeServer(t)
	var n atomic.Int64
	inner := f.srv.Config.Handler
	f.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			// Cut the connection without an answer.
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
			return
		}
		inner.ServeHTTP(w, r)
	})
	c := f.client(t, "a", nil)
	res, err := c.Push(t.Context(), []crdt.Change{setChange(t, c, "c", "r", "f", 1)})
	if err != nil || res[0].Status != StatusApplied {
		t.Fatalf("got %+v, %v; want applied after a retry", res, err)
	}
}

func TestBadAnswerIsRetriedAsANetworkFailure(t *testing.T) {
	// An answer that cannot be read as the protocol describes is, for the
	// client, a network failure: retried with backoff, and reported as
	// ErrProtocol when the attempts run out.
	for name, answer := range map[string][]byte{
		"truncated":    {0xa1, 0x01}, // a map cut short
		"proxy page":   []byte("<html>bad gateway</html>"),
		"wrong result": mustEncode(t, proto.PushResponse{Results: []proto.PushResult{{Status: 0}, {Status: 0}}}),
		"bad status":   mustEncode(t, proto.PushResponse{Results: []proto.PushResult{{Status: 9}}}),
	} {
		t.Run(name, func(t *testing.T) {
			var n atomic.Int64
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				n.Add(1)
				w.Write(answer)
			}))
			defer srv.Close()
			c, _ := New(Config{URL: srv.URL, Replica: "a", Backoff: Backoff{Initial: time.Millisecond, MaxAttempts: 3}})
			_, err := c.Push(t.Context(), []crdt.Change{setChange(t, c, "c", "r", "f", 1)})
			if !errors.Is(err, ErrProtocol) || n.Load() != 3 {
				t.Fatalf("got %v after %d requests, want ErrProtocol after 3", err, n.Load())
			}
		})
	}
}

// helloFrom is what a client takes from a server whose hello answer is
// hello.
func helloFrom(t *testing.T, hello map[int]any) ServerInfo {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(mustEncode(t, hello))
	}))
	defer srv.Close()
	c, _ := New(Config{URL: srv.URL, Replica: "a"})
	info, err := c.Hello(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return info
}

func TestUnknownKeysAreIgnored(t *testing.T) {
	// A newer server may add keys to any envelope.
	hello := map[int]any{1: proto.Version, 2: int64(1700000000000), 3: "srv", 4: 7, 5: 8, 6: 9, 7: 10, 8: "u", 9: 11, 10: 12, 99: "new"}
	info := helloFrom(t, hello)
	if info.MaxPush != 7 || info.MaxPull != 8 || info.MaxBody != 9 || info.MaxPageBytes != 11 || info.MaxMessageBytes != 12 || info.Subject != "u" {
		t.Fatalf("got %+v", info)
	}
}

// A limit the hello leaves out or announces as 0 (which a server never
// does: docs/protocol.md, section 6) is the protocol's default, for every
// limit key, the max drift (key 7) among them: the browser client reads a
// hello by the same rule.
func TestHelloZeroOrAbsentLimitIsTheDefault(t *testing.T) {
	limit := func(i ServerInfo, key int) int64 {
		return map[int]int64{4: int64(i.MaxPush), 5: int64(i.MaxPull), 6: i.MaxBody, 7: i.MaxDrift.Milliseconds(), 9: i.MaxPageBytes, 10: i.MaxMessageBytes}[key]
	}
	defaults := map[int]int64{4: proto.DefaultMaxPushChanges, 5: proto.DefaultMaxPullRecords, 6: proto.DefaultMaxBodyBytes,
		7: crdt.DefaultMaxDrift.Milliseconds(), 9: proto.DefaultMaxPageBytes, 10: proto.DefaultMaxMessageBytes}
	for key, want := range defaults {
		for _, absent := range []bool{false, true} {
			name := fmt.Sprintf("key %d announced 0", key)
			if absent {
				name = fmt.Sprintf("key %d absent", key)
			}
			t.Run(name, func(t *testing.T) {
				announced := map[int]int64{4: 7, 5: 8, 6: 9, 7: 10, 9: 11, 10: 12}
				hello := map[int]any{1: proto.Version, 2: int64(1700000000000)}
				for k, v := range announced {
					hello[k] = v
				}
				hello[key] = 0
				if absent {
					delete(hello, key)
				}
				info := helloFrom(t, hello)
				if got := limit(info, key); got != want {
					t.Fatalf("got %d, want the default %d", got, want)
				}
				for other := range defaults {
					if other != key && limit(info, other) != announced[other] {
						t.Fatalf("key %d: got %d, want the announced %d", other, limit(info, other), announced[other])
					}
				}
			})
		}
	}
}

func TestRequestsSpeakTheProtocol(t *testing.T) {
	var got http.Header
	var path string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, path = r.Header.Clone(), r.URL.Path
		w.Write(mustEncode(t, proto.PullResponse{}))
	}))
	defer srv.Close()
	c, _ := New(Config{URL: srv.URL + "/", Replica: "a", Token: "tok"})
	if _, err := c.Pull(t.Context(), "c", nil, 0); err != nil {
		t.Fatal(err)
	}
	if path != proto.PathPull || got.Get(proto.HeaderProtocol) != fmt.Sprint(proto.Version) ||
		got.Get("Content-Type") != proto.ContentType || got.Get("Authorization") != "Bearer tok" {
		t.Fatalf("path %s, headers %v", path, got)
	}
}

func mustEncode(t *testing.T, v any) []byte {
	t.Helper()
	b, err := proto.Encode(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestPushSplitsIntoServerSizedBatches(t *testing.T) {
	f := newFakeServer(t)
	f.maxPush = 3
	c := f.client(t, "a", nil)
	if _, err := c.Hello(t.Context()); err != nil {
		t.Fatal(err)
	}
	var changes []crdt.Change
	for i := range 7 {
		changes = append(changes, setChange(t, c, "c", fmt.Sprint("r", i), "f", i))
	}
	res, err := c.Push(t.Context(), changes)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 7 || f.pushes.Load() != 3 {
		t.Fatalf("got %d results in %d pushes, want 7 in 3", len(res), f.pushes.Load())
	}
	for i, r := range res {
		if r.Status != StatusApplied {
			t.Fatalf("result %d: got %+v, want applied", i, r)
		}
	}
	// The batches went in order: the log holds the records in the order
	// of the changes.
	p, err := c.Pull(t.Context(), "c", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, rec := range p.Records {
		ids = append(ids, rec.ID)
	}
	if want := "[r0 r1 r2 r3 r4 r5 r6]"; fmt.Sprint(ids) != want {
		t.Fatalf("log order %v, want %s", ids, want)
	}
}

func TestPushIsolatesABatchRefusedWhole(t *testing.T) {
	f := newFakeServer(t)
	// The server refuses any push containing record "poison" as too large.
	f.srv.Config.Handler = func(inner http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == proto.PathPush {
				var buf strings.Builder
				body := http.MaxBytesReader(w, r.Body, 1<<20)
				b := make([]byte, 1<<16)
				for {
					n, err := body.Read(b)
					buf.Write(b[:n])
					if err != nil {
						break
					}
				}
				if strings.Contains(buf.String(), "poison") {
					writeError(w, http.StatusRequestEntityTooLarge, proto.CodeTooLarge, "too big")
					return
				}
				r.Body = readCloser{strings.NewReader(buf.String())}
			}
			inner.ServeHTTP(w, r)
		})
	}(f.srv.Config.Handler)
	c := f.client(t, "a", nil)
	var changes []crdt.Change
	for i := range 5 {
		id := fmt.Sprint("r", i)
		if i == 3 {
			id = "poison"
		}
		changes = append(changes, setChange(t, c, "c", id, "f", i))
	}
	res, err := c.Push(t.Context(), changes)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		want := StatusApplied
		if i == 3 {
			want = StatusRefused
		}
		if r.Status != want {
			t.Fatalf("result %d: got %s, want %s", i, r.Status, want)
		}
	}
	if !errors.Is(res[3].Err, ErrTooLarge) {
		t.Fatalf("refusal: got %v, want ErrTooLarge", res[3].Err)
	}
}

type readCloser struct{ *strings.Reader }

func (readCloser) Close() error { return nil }

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"3", 3 * time.Second},
		{"-1", 0},
		{"99999", time.Hour},
		{"99999999999999999999", time.Hour}, // past any integer: still a delay, the longest
		{"soon", 0},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
	} {
		if got := parseRetryAfter(tc.in, now); got != tc.want {
			t.Errorf("parseRetryAfter(%q): got %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestBatchLen(t *testing.T) {
	v := make([]byte, 0, 1000)
	v = append(v, 0x59, 0x03, 0xe0) // a 992-byte byte string header
	v = append(v, make([]byte, 992)...)
	var changes []crdt.Change
	for i := range 10 {
		changes = append(changes, crdt.Change{Collection: "c", Record: crdt.SetField(fmt.Sprint("r", i), "f", v, crdt.Stamp{Wall: 1, Replica: "a"})})
	}
	one := len(crdt.AppendChange(nil, changes[0]))
	for _, tc := range []struct {
		name          string
		maxN, maxSize int
		want          int
	}{
		{"all fit", 100, 1 << 20, 10},
		{"count bound", 3, 1 << 20, 3},
		{"byte bound", 100, 3*one + one/2, 3},
		{"one always goes", 100, 10, 1},
		{"zero count means one", 0, 1 << 20, 1},
	} {
		if got := proto.BatchLen(changes, tc.maxN, tc.maxSize, changeSizer()); got != tc.want {
			t.Errorf("%s: BatchLen = %d, want %d", tc.name, got, tc.want)
		}
	}
}

// Before any hello, a client splits by the protocol's defaults: Info
// reports no hello, with every limit at its default, as a hello that
// announced none would leave it.
func TestInfoBeforeHelloHasTheDefaults(t *testing.T) {
	c, err := New(Config{URL: "http://127.0.0.1:1", Replica: "a"})
	if err != nil {
		t.Fatal(err)
	}
	info, hello := c.Info()
	if hello {
		t.Fatal("Info says there was a hello before any")
	}
	want := helloFrom(t, map[int]any{1: proto.Version, 2: int64(1700000000000)})
	got := [6]int64{int64(info.MaxPush), int64(info.MaxPull), info.MaxBody, int64(info.MaxDrift), info.MaxPageBytes, info.MaxMessageBytes}
	if w := [6]int64{int64(want.MaxPush), int64(want.MaxPull), want.MaxBody, int64(want.MaxDrift), want.MaxPageBytes, want.MaxMessageBytes}; got != w {
		t.Fatalf("limits before a hello %v, want the defaults %v", got, w)
	}
}
