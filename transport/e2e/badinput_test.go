package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	jwtlib "github.com/golang-jwt/jwt/v5"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/transport"
	"github.com/convergo/convergo/transport/client"
	"github.com/convergo/convergo/transport/proto"
)

// rawAnswer is an HTTP answer read without the client's interpretation.
type rawAnswer struct {
	Status int
	Code   string // the body's code, which must agree with Convergo-Error
	Header http.Header
	Body   []byte
}

// rawPost posts body to path with the protocol's headers, then the
// overrides in hdr ("" deletes a header).
func rawPost(t *testing.T, url, path, token string, body []byte, hdr map[string]string) rawAnswer {
	t.Helper()
	return rawRequest(t, http.MethodPost, url, path, token, body, hdr)
}

// rawRequest sends a request with the protocol's headers and the overrides
// in hdr, and checks what every answer carries: a request id, and for an
// error the same code and request id in header and body.
func rawRequest(t *testing.T, method, url, path, token string, body []byte, hdr map[string]string) rawAnswer {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", proto.ContentType)
	req.Header.Set(proto.HeaderProtocol, strconv.Itoa(proto.Version))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range hdr {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read: %v", method, path, err)
	}
	a := rawAnswer{Status: resp.StatusCode, Header: resp.Header, Body: b}
	id := resp.Header.Get(proto.HeaderRequestID)
	if id == "" {
		t.Fatalf("%s %s: answer without %s", method, path, proto.HeaderRequestID)
	}
	if resp.StatusCode != http.StatusOK {
		var eb proto.ErrorBody
		if err := proto.Decode(b, &eb); err != nil {
			t.Fatalf("%s %s: %d answer is not an error body: %v (%q)", method, path, resp.StatusCode, err, b)
		}
		if h := resp.Header.Get(proto.HeaderError); h != eb.Code {
			t.Fatalf("%s %s: header %s %q, body code %q", method, path, proto.HeaderError, h, eb.Code)
		}
		if eb.RequestID != id {
			t.Fatalf("%s %s: header %s %q, body request id %q", method, path, proto.HeaderRequestID, id, eb.RequestID)
		}
		if info, _ := proto.Info(eb.Code); info.HTTP != resp.StatusCode {
			t.Fatalf("%s %s: code %s with status %d, proto says %d", method, path, eb.Code, resp.StatusCode, info.HTTP)
		}
		a.Code = eb.Code
	}
	return a
}

func encode(t testing.TB, v any) []byte {
	t.Helper()
	b, err := proto.Encode(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// pushBody encodes a push of changes, without validating them.
func pushBody(replica string, changes ...crdt.Change) []byte {
	raws := make([][]byte, len(changes))
	for i, c := range changes {
		raws[i] = crdt.AppendChange(nil, c)
	}
	return rawPushBody(replica, raws...)
}

// rawPushBody encodes a push of changes given as CBOR items.
func rawPushBody(replica string, changes ...[]byte) []byte {
	b := []byte{0xa2, 0x01}
	b = append(b, cborText(replica)...)
	b = append(b, 0x02)
	b = append(b, cborHead(4, uint64(len(changes)))...)
	for _, c := range changes {
		b = append(b, c...)
	}
	return b
}

func cborHead(major byte, n uint64) []byte {
	switch {
	case n < 24:
		return []byte{major<<5 | byte(n)}
	case n < 1<<8:
		return []byte{major<<5 | 24, byte(n)}
	case n < 1<<16:
		return []byte{major<<5 | 25, byte(n >> 8), byte(n)}
	case n < 1<<32:
		return []byte{major<<5 | 26, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
	}
	return []byte{major<<5 | 27, byte(n >> 56), byte(n >> 48), byte(n >> 40), byte(n >> 32), byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
}

func cborText(s string) []byte { return append(cborHead(3, uint64(len(s))), s...) }

// testerID is the replica id the subject "tester" owns for its device.
var testerID = proto.ReplicaFor("tester", "d1")

func setAt(t testing.TB, coll, id string, wall int64, replica string) crdt.Change {
	t.Helper()
	v, err := crdt.EncodeValue("x")
	if err != nil {
		t.Fatal(err)
	}
	return crdt.Change{Collection: coll, Record: crdt.SetField(id, "f", v, crdt.Stamp{Wall: wall, Replica: replica})}
}

func signed(t testing.TB, method jwtlib.SigningMethod, key any, claims jwtlib.MapClaims) string {
	t.Helper()
	s, err := jwtlib.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// background keeps a client writing and syncing while the test runs, and
// counts its failures.
type background struct {
	rep    *client.Replica
	syncs  atomic.Int64
	writes atomic.Int64
	mu     sync.Mutex
	errs   []error
	cancel context.CancelFunc
	done   chan struct{}
}

func startBackground(t *testing.T, srv *testServer, coll string) *background {
	t.Helper()
	tok := srv.token(t, "background", []string{coll}, []string{coll})
	c := newClient(t, srv.URL, tok, "bg-"+randomSuffix(t), nil)
	rep, err := client.NewReplica(c, client.ReplicaConfig{Collections: []string{coll}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	bg := &background{rep: rep, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(bg.done)
		for i := 0; ctx.Err() == nil; i++ {
			if err := rep.Set(coll, fmt.Sprint("r", i%7), "n", i); err != nil {
				bg.fail(err)
			}
			bg.writes.Add(1)
			if err := rep.Sync(ctx); err != nil && ctx.Err() == nil {
				bg.fail(err)
			} else if err == nil {
				bg.syncs.Add(1)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	return bg
}

func (bg *background) fail(err error) {
	bg.mu.Lock()
	defer bg.mu.Unlock()
	bg.errs = append(bg.errs, err)
}

// stop ends the background client and checks it never failed and that it
// holds what the server holds.
func (bg *background) stop(t *testing.T, srv *testServer, coll string) {
	t.Helper()
	// The background client must still get through after everything the
	// test threw at the server: wait for two more clean syncs.
	target := bg.syncs.Load() + 2
	for deadline := time.Now().Add(15 * time.Second); bg.syncs.Load() < target; {
		if time.Now().After(deadline) {
			t.Errorf("background client stopped syncing at %d syncs", bg.syncs.Load())
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	bg.cancel()
	<-bg.done
	if err := bg.rep.Sync(t.Context()); err != nil {
		t.Fatalf("background client: final sync: %v", err)
	}
	bg.mu.Lock()
	defer bg.mu.Unlock()
	if len(bg.errs) > 0 {
		t.Errorf("background client failed %d times, first: %v", len(bg.errs), bg.errs[0])
	}
	if d := diffRecords(bg.rep.Records(coll), snapshot(t, t.Context(), srv.Store, coll)); d != "" {
		t.Errorf("background client differs from the store:\n%s", d)
	}
	t.Logf("background client: %d writes, %d clean syncs meanwhile", bg.writes.Load(), bg.syncs.Load())
}

func TestBadInputs(t *testing.T) {
	store := openEmbedded(t)
	// A rate a flood from one subject exceeds on any machine, and that the
	// background client (two requests every 50 ms or more) stays under.
	const rate, burst = 50, 100
	srv := startServer(t, store, func(c *transport.Config) {
		c.AllowedOrigins = []string{"app.example.com"}
		c.Limits.Rate, c.Limits.Burst = rate, burst
	})
	bg := startBackground(t, srv, "e2e.bg")
	defer bg.stop(t, srv, "e2e.bg")

	tok := srv.token(t, "tester", []string{"e2e.public"}, []string{"e2e.public"})
	now := time.Now()
	good := setAt(t, "e2e.public", "ok", now.UnixMilli(), testerID)
	goodPush := pushBody("tester", good)
	pastJWT, err := transport.NewJWT(secret, func() time.Time { return now.Add(-2 * time.Hour) })
	if err != nil {
		t.Fatal(err)
	}
	expired, err := pastJWT.Issue("tester", []string{"*"}, []string{"*"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	claims := jwtlib.MapClaims{"sub": "tester", "exp": now.Add(time.Hour).Unix(), "read": []string{"*"}, "write": []string{"*"}}
	forged := signed(t, jwtlib.SigningMethodHS256, []byte("not-the-server-secret-at-all-0000"), claims)
	hs384 := signed(t, jwtlib.SigningMethodHS384, secret, claims)
	none := signed(t, jwtlib.SigningMethodNone, jwtlib.UnsafeAllowNoneSignatureType, claims)
	noExp := signed(t, jwtlib.SigningMethodHS256, secret, jwtlib.MapClaims{"sub": "tester", "read": []string{"*"}})

	deep := append(bytes.Repeat([]byte{0x81}, 100000), 0x00)
	hugeArray := append(append([]byte{0xa2, 0x01}, cborText("tester")...), 0x02, 0x9b, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00)
	hugeBytes := append(append([]byte{0xa2, 0x01}, cborText("tester")...), 0x02, 0x81, 0x5b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
	bigBody := append(append([]byte{0xa2, 0x01}, cborText("tester")...), 0x02, 0x5a, 0x00, 0x50, 0x00, 0x00)
	bigBody = append(bigBody, make([]byte, 5<<20)...)
	var many []crdt.Change
	for i := range proto.DefaultMaxPushChanges + 1 {
		many = append(many, setAt(t, "e2e.public", fmt.Sprint("m", i), now.UnixMilli(), testerID))
	}

	// A change whose framing is intact but whose content is not a change.
	goodRaw := crdt.AppendChange(nil, good)
	recordWithUnknownKey := append(append([]byte{0xa2, 0x01}, cborText("e2e.public")...), 0x02, 0xa2, 0x01)
	recordWithUnknownKey = append(append(recordWithUnknownKey, cborText("bad")...), 0x09, 0x01)
	notAChange := []byte{0x05}
	pullAnswer := func(t *testing.T, a rawAnswer) {
		t.Helper()
		var pr proto.PullResponse
		if err := proto.Decode(a.Body, &pr); err != nil {
			t.Fatalf("pull answer: %v", err)
		}
	}

	results := func(t *testing.T, a rawAnswer) []proto.PushResult {
		t.Helper()
		var pr proto.PushResponse
		if err := proto.Decode(a.Body, &pr); err != nil {
			t.Fatalf("push answer: %v", err)
		}
		return pr.Results
	}

	for _, tc := range []struct {
		name       string
		path       string
		token      string
		body       []byte
		hdr        map[string]string
		wantStatus int
		wantCode   string
		method     string // POST when empty
		check      func(t *testing.T, a rawAnswer)
	}{
		{name: "malformed CBOR", path: proto.PathPush, token: tok, body: []byte{0xff, 0xfe, 0x00, 0x13}, wantStatus: 400, wantCode: "malformed"},
		{name: "truncated CBOR", path: proto.PathPush, token: tok, body: goodPush[:len(goodPush)/2], wantStatus: 400, wantCode: "malformed"},
		{name: "trailing bytes", path: proto.PathPush, token: tok, body: append(append([]byte(nil), goodPush...), 0x00), wantStatus: 400, wantCode: "malformed"},
		{name: "bomb: array of 2^32 elements", path: proto.PathPush, token: tok, body: hugeArray, wantStatus: 400, wantCode: "malformed"},
		{name: "bomb: byte string of 2^63 bytes", path: proto.PathPush, token: tok, body: hugeBytes, wantStatus: 400, wantCode: "malformed"},
		{name: "bomb: 100000 nested arrays", path: proto.PathPush, token: tok, body: deep, wantStatus: 400, wantCode: "malformed"},
		{name: "unknown key in an envelope is ignored", path: proto.PathPull, token: tok, body: encode(t, map[int]any{1: "e2e.public", 2: []byte{}, 3: 10, 9: 1}), wantStatus: 200, check: pullAnswer},
		{name: "known key of the wrong type", path: proto.PathPull, token: tok, body: encode(t, map[int]any{1: "e2e.public", 2: 0, 3: 10}), wantStatus: 400, wantCode: "malformed"},
		{name: "unreadable cursor", path: proto.PathPull, token: tok, body: encode(t, proto.PullRequest{Collection: "e2e.public", Cursor: []byte("not a cursor")}), wantStatus: 400, wantCode: "invalid"},
		{name: "pull over the page limit", path: proto.PathPull, token: tok, body: encode(t, proto.PullRequest{Collection: "e2e.public", Limit: proto.DefaultMaxPullRecords + 1}), wantStatus: 413, wantCode: "too_large"},
		{
			name: "malformed changes are refused alone", path: proto.PathPush, token: tok, wantStatus: 200,
			body: rawPushBody("tester", recordWithUnknownKey, goodRaw, notAChange),
			check: func(t *testing.T, a rawAnswer) {
				rs := results(t, a)
				if len(rs) != 3 || rs[0].Status != proto.StatusRefused || rs[0].Code != "malformed" || !rs[1].Status.Acknowledged() ||
					rs[2].Status != proto.StatusRefused || rs[2].Code != "malformed" {
					t.Fatalf("results: got %+v, want refused malformed, acknowledged, refused malformed", rs)
				}
			},
		},
		{name: "body over 4 MiB", path: proto.PathPush, token: tok, body: bigBody, wantStatus: 413, wantCode: "too_large"},
		{name: "too many changes in a push", path: proto.PathPush, token: tok, body: pushBody("tester", many...), wantStatus: 413, wantCode: "too_large"},
		{
			name: "stamp beyond the drift bound", path: proto.PathPush, token: tok, wantStatus: 200,
			body: pushBody("tester",
				setAt(t, "e2e.public", "d1", now.UnixMilli(), testerID),
				setAt(t, "e2e.public", "d2", now.Add(time.Hour).UnixMilli(), testerID),
				setAt(t, "e2e.public", "d3", now.UnixMilli(), testerID)),
			check: func(t *testing.T, a rawAnswer) {
				rs := results(t, a)
				if len(rs) != 3 || rs[0].Status != proto.StatusApplied || rs[2].Status != proto.StatusApplied ||
					rs[1].Status != proto.StatusRefused || rs[1].Code != "clock_drift" {
					t.Fatalf("results: got %+v, want applied, refused clock_drift, applied", rs)
				}
				for _, id := range []string{"d1", "d3"} {
					if _, err := srv.Engine.GetRecord(t.Context(), "e2e.public", id); err != nil {
						t.Fatalf("%s was not applied: %v", id, err)
					}
				}
				if _, err := srv.Engine.GetRecord(t.Context(), "e2e.public", "d2"); err == nil {
					t.Fatal("the drifting change was applied")
				}
			},
		},
		{name: "unknown protocol version header", path: proto.PathPull, token: tok, body: encode(t, proto.PullRequest{Collection: "e2e.public"}), hdr: map[string]string{proto.HeaderProtocol: "3"}, wantStatus: 400, wantCode: "unsupported_version"},
		{name: "version 1 header", path: proto.PathPull, token: tok, body: encode(t, proto.PullRequest{Collection: "e2e.public"}), hdr: map[string]string{proto.HeaderProtocol: "1"}, wantStatus: 400, wantCode: "unsupported_version"},
		{name: "no protocol version header", path: proto.PathPull, token: tok, body: encode(t, proto.PullRequest{Collection: "e2e.public"}), hdr: map[string]string{proto.HeaderProtocol: ""}, wantStatus: 400, wantCode: "unsupported_version"},
		{name: "unknown protocol version in hello", path: proto.PathHello, token: tok, body: encode(t, proto.HelloRequest{Protocol: 3, Replica: "tester"}), wantStatus: 400, wantCode: "unsupported_version"},
		{name: "version 1 path", path: proto.LegacyPrefix + "pull", token: tok, body: encode(t, proto.PullRequest{Collection: "e2e.public"}), wantStatus: 400, wantCode: "unsupported_version"},
		{name: "missing token", path: proto.PathPull, body: encode(t, proto.PullRequest{Collection: "e2e.public"}), wantStatus: 401, wantCode: "unauthenticated"},
		{name: "expired token", path: proto.PathPull, token: expired, body: encode(t, proto.PullRequest{Collection: "e2e.public"}), wantStatus: 401, wantCode: "token_expired"},
		{name: "forged token", path: proto.PathPull, token: forged, body: encode(t, proto.PullRequest{Collection: "e2e.public"}), wantStatus: 401, wantCode: "unauthenticated"},
		{name: "wrong alg HS384", path: proto.PathPull, token: hs384, body: encode(t, proto.PullRequest{Collection: "e2e.public"}), wantStatus: 401, wantCode: "unauthenticated"},
		{name: "alg none", path: proto.PathPull, token: none, body: encode(t, proto.PullRequest{Collection: "e2e.public"}), wantStatus: 401, wantCode: "unauthenticated"},
		{name: "token without exp", path: proto.PathPull, token: noExp, body: encode(t, proto.PullRequest{Collection: "e2e.public"}), wantStatus: 401, wantCode: "unauthenticated"},
		{name: "garbage token", path: proto.PathPull, token: "a.b.c", body: encode(t, proto.PullRequest{Collection: "e2e.public"}), wantStatus: 401, wantCode: "unauthenticated"},
		{name: "pull out of scope", path: proto.PathPull, token: tok, body: encode(t, proto.PullRequest{Collection: "e2e.bg"}), wantStatus: 403, wantCode: "forbidden"},
		{
			name: "push out of scope", path: proto.PathPush, token: tok, wantStatus: 200,
			body: pushBody("tester", setAt(t, "e2e.bg", "x", now.UnixMilli(), testerID), good),
			check: func(t *testing.T, a rawAnswer) {
				rs := results(t, a)
				if len(rs) != 2 || rs[0].Status != proto.StatusRefused || rs[0].Code != "forbidden" || rs[1].Status == proto.StatusRefused {
					t.Fatalf("results: got %+v, want refused forbidden, then accepted", rs)
				}
			},
		},
		{name: "pull of a collection with forbidden characters", path: proto.PathPull, token: tok, body: encode(t, proto.PullRequest{Collection: "e2e/../x"}), wantStatus: 400, wantCode: "invalid"},
		{
			name: "push to a collection with forbidden characters", path: proto.PathPush, token: tok, wantStatus: 200,
			body: pushBody("tester", setAt(t, "e2e.{public}", "x", now.UnixMilli(), testerID), good),
			check: func(t *testing.T, a rawAnswer) {
				rs := results(t, a)
				if len(rs) != 2 || rs[0].Status != proto.StatusRefused || rs[0].Code != "invalid" || rs[1].Status == proto.StatusRefused {
					t.Fatalf("results: got %+v, want refused invalid, then accepted", rs)
				}
			},
		},
		{name: "foreign origin on the API", path: proto.PathPull, token: tok, body: encode(t, proto.PullRequest{Collection: "e2e.public"}), hdr: map[string]string{"Origin": "https://evil.example"}, wantStatus: 403, wantCode: "forbidden"},
		{name: "unknown path", path: proto.PathPrefix + "nothing", token: tok, body: []byte{0xa0}, wantStatus: 404, wantCode: "not_found"},
		{name: "GET on the API", method: http.MethodGet, path: proto.PathPull, token: tok, wantStatus: 405, wantCode: "method_not_allowed"},
		{name: "PUT on live", method: http.MethodPut, path: proto.PathLive, token: tok, wantStatus: 405, wantCode: "method_not_allowed"},
		{name: "live without an upgrade", method: http.MethodGet, path: proto.PathLive, token: tok, wantStatus: 426, wantCode: "upgrade_required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			method := tc.method
			if method == "" {
				method = http.MethodPost
			}
			a := rawRequest(t, method, srv.URL, tc.path, tc.token, tc.body, tc.hdr)
			if a.Status != tc.wantStatus || a.Code != tc.wantCode {
				t.Fatalf("got %d %q (%q), want %d %q", a.Status, a.Code, a.Body, tc.wantStatus, tc.wantCode)
			}
			if tc.check != nil {
				tc.check(t, a)
			}
		})
	}

	t.Run("websocket from a foreign origin", func(t *testing.T) {
		conn, resp, err := websocket.Dial(t.Context(), "ws"+strings.TrimPrefix(srv.URL, "http")+proto.PathLive,
			&websocket.DialOptions{HTTPHeader: http.Header{"Origin": {"https://evil.example"}}})
		if err == nil {
			conn.CloseNow()
			t.Fatal("the upgrade succeeded")
		}
		if resp == nil || resp.StatusCode != 403 || resp.Header.Get(proto.HeaderError) != "forbidden" {
			t.Fatalf("got %v, %v; want 403 forbidden", resp, err)
		}
	})
	t.Run("websocket from an allowed origin", func(t *testing.T) {
		conn, _, err := websocket.Dial(t.Context(), "ws"+strings.TrimPrefix(srv.URL, "http")+proto.PathLive,
			&websocket.DialOptions{HTTPHeader: http.Header{"Origin": {"https://app.example.com"}}})
		if err != nil {
			t.Fatalf("allowed origin refused: %v", err)
		}
		conn.CloseNow()
	})
	t.Run("websocket bad messages", func(t *testing.T) {
		var errMsgs []proto.ErrorMessage
		defer t.Run("error messages carry a request id", func(t *testing.T) {
			for _, e := range errMsgs {
				if e.RequestID == "" {
					t.Errorf("error message %+v without a request id (key 4)", e)
				}
			}
		})
		hello := msg(t, proto.Hello{Protocol: proto.Version, Replica: "tester", Token: tok})
		unknownType := encode(t, map[int]any{0: "gossip", 1: "hi"})
		for _, wc := range []struct {
			name     string
			frames   [][]byte
			wantCode string
			keeps    bool // the session stays open after the error
		}{
			{"garbage first frame", [][]byte{{0xff, 0x00}}, "malformed", false},
			{"sub before hello", [][]byte{msg(t, proto.Sub{Collection: "e2e.public"})}, "malformed", false},
			{"expired token", [][]byte{msg(t, proto.Hello{Protocol: proto.Version, Replica: "tester", Token: expired})}, "token_expired", false},
			{"forged token", [][]byte{msg(t, proto.Hello{Protocol: proto.Version, Replica: "tester", Token: forged})}, "unauthenticated", false},
			{"unknown version", [][]byte{msg(t, proto.Hello{Protocol: 7, Replica: "tester", Token: tok})}, "unsupported_version", false},
			{"version 1 hello", [][]byte{msg(t, proto.Hello{Protocol: 1, Replica: "tester", Token: tok})}, "unsupported_version", false},
			{"sub out of scope", [][]byte{hello, msg(t, proto.Sub{Collection: "e2e.bg"})}, "forbidden", true},
			{"sub to a bad name", [][]byte{hello, msg(t, proto.Sub{Collection: "a:b"})}, "invalid", true},
			{"unreadable cursor", [][]byte{hello, msg(t, proto.Sub{Collection: "e2e.public", Cursor: []byte("nope")})}, "invalid", true},
			{"garbage after hello", [][]byte{hello, {0x9f, 0x01}}, "malformed", false},
			{"unknown type after hello", [][]byte{hello, unknownType}, "malformed", true},
		} {
			t.Run(wc.name, func(t *testing.T) {
				got := wsExchange(t, srv.URL, wc.frames, wc.keeps)
				errMsgs = append(errMsgs, got)
				if got.Code != wc.wantCode {
					t.Fatalf("got error %+v, want code %s", got, wc.wantCode)
				}
			})
		}
	})
	// Last, as it spends this subject's (and only this subject's) budget.
	t.Run("rate limit", func(t *testing.T) {
		// Several connections at once, so the flood outruns the refill rate
		// however slow the machine.
		flood := srv.token(t, "flooder", []string{"e2e.public"}, nil)
		body := encode(t, proto.HelloRequest{Protocol: proto.Version, Replica: "flooder"})
		var (
			ok      atomic.Int64
			limited atomic.Pointer[http.Response]
			wg      sync.WaitGroup
		)
		const workers, perWorker = 8, 2 * burst
		errs := make(chan error, workers)
		for range workers {
			wg.Go(func() {
				for range perWorker {
					if limited.Load() != nil {
						return
					}
					req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL+proto.PathHello, bytes.NewReader(body))
					req.Header.Set("Content-Type", proto.ContentType)
					req.Header.Set(proto.HeaderProtocol, strconv.Itoa(proto.Version))
					req.Header.Set("Authorization", "Bearer "+flood)
					resp, err := http.DefaultClient.Do(req)
					if err != nil {
						errs <- err
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode == http.StatusOK {
						ok.Add(1)
						continue
					}
					limited.CompareAndSwap(nil, resp)
					return
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		resp := limited.Load()
		if resp == nil {
			t.Fatalf("%d requests were never rate limited", ok.Load())
		}
		if resp.StatusCode != 429 || resp.Header.Get(proto.HeaderError) != "rate_limited" {
			t.Fatalf("got %d %q, want 429 rate_limited", resp.StatusCode, resp.Header.Get(proto.HeaderError))
		}
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || s < 1 {
			t.Fatalf("Retry-After %q, want whole seconds >= 1", resp.Header.Get("Retry-After"))
		}
		if ok.Load() < burst {
			t.Fatalf("limited after %d requests, before the burst of %d", ok.Load(), burst)
		}
		t.Logf("limited after %d requests", ok.Load())
	})

	// The server still serves a newcomer.
	c := newClient(t, srv.URL, tok, "newcomer", nil)
	if _, err := c.Hello(t.Context()); err != nil {
		t.Fatalf("hello after the bad inputs: %v", err)
	}
	res, err := c.Push(t.Context(), []crdt.Change{setAt(t, "e2e.public", "after", time.Now().UnixMilli(), proto.ReplicaFor("tester", "newcomer"))})
	if err != nil || res[0].Status != client.StatusApplied {
		t.Fatalf("push after the bad inputs: %+v, %v", res, err)
	}
}

func msg(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.EncodeMessage(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// wsExchange opens a live connection, sends frames and returns the first
// error message the server sends. Unless keeps, the error must be fatal:
// the server closes the socket after it. With keeps, the session must stay
// open: it still answers a ping.
func wsExchange(t *testing.T, url string, frames [][]byte, keeps bool) proto.ErrorMessage {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(url, "http")+proto.PathLive, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	for _, f := range frames {
		if err := conn.Write(ctx, websocket.MessageBinary, f); err != nil {
			t.Fatal(err)
		}
	}
	for {
		_, b, err := conn.Read(ctx)
		if err != nil {
			t.Fatalf("read: %v (no error message)", err)
		}
		m, err := proto.DecodeServerMessage(b)
		if err != nil {
			t.Fatalf("server message: %v", err)
		}
		e, ok := m.(proto.ErrorMessage)
		if !ok {
			continue
		}
		if !keeps {
			if _, _, err := conn.Read(ctx); err == nil || errors.Is(ctx.Err(), context.DeadlineExceeded) {
				t.Fatalf("socket still open after a fatal error: %v", err)
			}
			return e
		}
		if err := conn.Write(ctx, websocket.MessageBinary, msg(t, proto.Ping{Nonce: 42})); err != nil {
			t.Fatalf("session closed after a non-fatal error: %v", err)
		}
		for {
			_, b, err := conn.Read(ctx)
			if err != nil {
				t.Fatalf("session closed after a non-fatal error %+v: %v", e, err)
			}
			if m, err := proto.DecodeServerMessage(b); err == nil {
				if p, ok := m.(proto.Pong); ok && p.Nonce == 42 {
					return e
				}
			}
		}
	}
}
