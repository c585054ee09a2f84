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
		{URL: "http://x"},
		{URL: "http://x", Replica: "bad replica"},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) succeeded, want an error", cfg)
		}
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
	if len(res) != 1 || res[0].Status != StatusApplied || res[0].Seq != 1 {
		t.Fatalf("first push: got %+v, want applied at seq 1", res)
	}
	res, err = a.Push(ctx, []crdt.Change{ch})
	if err != nil || res[0].Status != StatusNoop || !res[0].Acknowledged() {
		t.Fatalf("second push of the same change: got %+v, %v; want a no-op", res, err)
	}
	p, err := a.Pull(ctx, "notes", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Entries) != 1 || p.Next != 1 || p.More || !p.Entries[0].Record.Equal(ch.Record) {
		t.Fatalf("pull: got %+v, want the pushed record at seq 1", p)
	}
	p, err = a.Pull(ctx, "notes", 1, 0)
	if err != nil || len(p.Entries) != 0 || p.Next != 1 {
		t.Fatalf("pull after the end: got %+v, %v", p, err)
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
			return http.StatusServiceUnavailable, CodeUnavailable
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
			return http.StatusTooManyRequests, CodeRateLimited
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
	f.failWith(func(string) (int, string) { n.Add(1); return http.StatusServiceUnavailable, CodeUnavailable })
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
	for _, tc := range []struct {
		status int
		code   string
		is     error
	}{
		{403, CodeForbidden, ErrForbidden},
		{401, CodeUnauthenticated, ErrUnauthenticated},
		{401, CodeTokenExpired, ErrTokenExpired},
		{400, CodeUnsupportedVersion, ErrUnsupportedVersion},
		{404, CodeNotFound, ErrNotFound},
		{500, CodeInternal, ErrInternal},
	} {
		t.Run(tc.code, func(t *testing.T) {
			f := newFakeServer(t)
			var n atomic.Int64
			f.failWith(func(string) (int, string) { n.Add(1); return tc.status, tc.code })
			c := f.client(t, "a", nil)
			_, err := c.Pull(t.Context(), "c", 0, 0)
			var e *Error
			if !errors.As(err, &e) || e.Status != tc.status || e.Code != tc.code || e.Message != "injected" {
				t.Fatalf("got %v, want *Error %d %s", err, tc.status, tc.code)
			}
			if !errors.Is(err, tc.is) {
				t.Fatalf("errors.Is(%v, %v) is false", err, tc.is)
			}
			if n.Load() != 1 {
				t.Fatalf("sent %d requests, want 1", n.Load())
			}
		})
	}
}

func TestTokenExpiredRefreshes(t *testing.T) {
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok := r.Header.Get("Authorization")
		seen = append(seen, tok)
		if tok != "Bearer fresh" {
			writeError(w, 401, CodeTokenExpired, "expired")
			return
		}
		b, _ := crdt.Marshal(pullAnswer{Entries: []entryWire{}, Next: 7})
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
	p, err := c.Pull(t.Context(), "c", 0, 0)
	if err != nil || p.Next != 7 {
		t.Fatalf("got %+v, %v", p, err)
	}
	if want := []string{"Bearer stale", "Bearer fresh"}; fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Fatalf("tokens sent: got %v, want %v", seen, want)
	}
}

func TestTokenExpiredMatchesUnauthenticated(t *testing.T) {
	err := error(&Error{Status: 401, Code: CodeTokenExpired})
	if !errors.Is(err, ErrTokenExpired) || !errors.Is(err, ErrUnauthenticated) || errors.Is(err, ErrForbidden) {
		t.Fatal("token_expired must match ErrTokenExpired and ErrUnauthenticated only")
	}
	if errors.Is(&Error{Code: CodeUnauthenticated}, ErrTokenExpired) {
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

func TestBadAnswerIsAProtocolError(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		w.Write([]byte{0xa1, 0x01}) // a map cut short
	}))
	defer srv.Close()
	c, _ := New(Config{URL: srv.URL, Replica: "a"})
	_, err := c.Hello(t.Context())
	if !errors.Is(err, ErrProtocol) || n.Load() != 1 {
		t.Fatalf("got %v after %d requests, want ErrProtocol after 1", err, n.Load())
	}
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
		if r.Status != StatusApplied || r.Seq != uint64(i+1) {
			t.Fatalf("result %d: got %+v, want applied at seq %d", i, r, i+1)
		}
	}
}

func TestPushIsolatesABatchRefusedWhole(t *testing.T) {
	f := newFakeServer(t)
	// The server refuses any push containing record "poison" as too large.
	f.srv.Config.Handler = func(inner http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/v1/push" {
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
					writeError(w, http.StatusRequestEntityTooLarge, CodeTooLarge, "too big")
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
		if got := batchLen(changes, tc.maxN, tc.maxSize); got != tc.want {
			t.Errorf("%s: batchLen = %d, want %d", tc.name, got, tc.want)
		}
	}
}
