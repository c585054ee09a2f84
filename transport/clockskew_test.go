package transport

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores/redis"
	"github.com/convergo/convergo/stores/redis/redistest"
	"github.com/convergo/convergo/stores/storetest"
	"github.com/convergo/convergo/transport/proto"
)

const year = 365 * 24 * time.Hour

// skewedServer is a test server whose engine runs on store st at the real
// clock moved by *off: a server instance whose clock is off.
func skewedServer(t *testing.T, st *redis.Store, off *atomic.Int64) *testServer {
	t.Helper()
	eng, err := engine.Open(engine.Config{Store: st, Replica: "srv-test", PollInterval: -1, ClockCheckEvery: time.Hour,
		Now: func() time.Time { return time.Now().Add(time.Duration(off.Load())) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Close() })
	ts := newTestServer(t, nil)
	ts.srv.eng = eng
	return ts
}

func sharedRedisStore(t *testing.T) *redis.Store {
	t.Helper()
	addr := storetest.Endpoint(t, "CONVERGO_REDIS_ADDR")
	var b [6]byte
	_, _ = rand.Read(b[:])
	st, err := redis.Open(context.Background(), redis.Options{Addrs: []string{addr}, KeyPrefix: "clockskew:" + hex.EncodeToString(b[:]) + ":"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// An instance whose clock is a year ahead of the store's would have its
// clients stamp a year ahead for good: it refuses hellos and pushes
// unavailable, with Retry-After, fails /readyz and says so in a metric,
// until a check finds its clock back in bounds; it serves again then.
func TestServerClockOffRefusesHellos(t *testing.T) {
	var off atomic.Int64
	off.Store(int64(year))
	ts := skewedServer(t, sharedRedisStore(t), &off)
	tok := ts.token(t, "alice", []string{"notes"}, []string{"notes"})
	hello := proto.HelloRequest{Protocol: proto.Version, Replica: "c1"}

	refused := func(what string, a answer) {
		t.Helper()
		if a.status != http.StatusServiceUnavailable {
			t.Fatalf("%s a year ahead: status %d, want 503", what, a.status)
		}
		if a.errorCode(t) != proto.CodeUnavailable {
			t.Fatalf("%s a year ahead: %d %s, want 503 unavailable", what, a.status, a.errorCode(t))
		}
		if got, want := a.header.Get("Retry-After"), strconv.Itoa(int(time.Hour/time.Second)); got != want {
			t.Fatalf("%s: Retry-After %q, want %q (the check period)", what, got, want)
		}
		var e proto.ErrorBody
		if err := proto.Decode(a.body, &e); err != nil || !strings.Contains(e.Message, "clock") {
			t.Fatalf("%s: message %q (%v), want one about the clock", what, e.Message, err)
		}
	}
	refused("hello", ts.post(t, proto.PathHello, tok, hello))
	refused("push", ts.post(t, proto.PathPush, tok, proto.PushRequest{Replica: "c1", Changes: []crdt.Change{change(t, "notes", "r1", "f", 1)}}))
	refused("restore", ts.post(t, proto.PathRestore, tok, proto.RestoreRequest{Collection: "notes", Records: []proto.SealedRecord{}}))
	if a := ts.post(t, proto.PathPull, tok, proto.PullRequest{Collection: "notes"}); a.status != http.StatusOK {
		t.Fatalf("pull a year ahead: %d, want 200 (reads stamp nothing)", a.status)
	}
	c, _, err := ts.dial(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.send(proto.Hello{Protocol: proto.Version, Replica: "c1", Token: tok})
	if m, ok := c.recv().(proto.ErrorMessage); !ok || m.Code != proto.CodeUnavailable {
		t.Fatalf("live hello a year ahead: %#v, want error unavailable", m)
	}
	if _, err := c.recvErr(5 * time.Second); websocket.CloseStatus(err) != proto.CloseTryAgainLater {
		t.Fatalf("live hello a year ahead: closed %v (%v), want %d (try again later)", websocket.CloseStatus(err), err, proto.CloseTryAgainLater)
	}
	if code, body := ts.get(t, "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "clock") {
		t.Fatalf("readyz a year ahead: %d %q, want 503 saying why", code, body)
	}
	if v := ts.metric(t, "convergo_clock_off"); v != 1 {
		t.Fatalf("convergo_clock_off %v, want 1", v)
	}
	if v := ts.metric(t, "convergo_clock_skew_seconds"); v < float64(year/time.Second)-60 || v > float64(year/time.Second)+60 {
		t.Fatalf("convergo_clock_skew_seconds %v, want about a year", v)
	}

	off.Store(0)
	if _, err := ts.srv.eng.CheckClock(context.Background()); err != nil {
		t.Fatalf("check in time: %v", err)
	}
	a := ts.post(t, proto.PathHello, tok, hello)
	if a.status != http.StatusOK {
		t.Fatalf("hello in time: %d %s", a.status, a.errorCode(t))
	}
	var h proto.HelloResponse
	if err := proto.Decode(a.body, &h); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(time.UnixMilli(int64(h.ServerTime))); d < -5*time.Second || d > 5*time.Second {
		t.Fatalf("server time %v off the real clock by %v", time.UnixMilli(int64(h.ServerTime)), d)
	}
	if res := ts.push(t, tok, change(t, "notes", "r1", "f", 1)); res[0].Status != proto.StatusApplied {
		t.Fatalf("push in time: %+v", res[0])
	}
	if code, body := ts.get(t, "/readyz"); code != http.StatusOK {
		t.Fatalf("readyz in time: %d %q", code, body)
	}
	if v := ts.metric(t, "convergo_clock_off"); v != 0 {
		t.Fatalf("convergo_clock_off %v, want 0", v)
	}
}

// A live session opened while the clock was in time ends at its next push
// once the clock is off (error unavailable): its client says hello again,
// to another instance or after the check finds the clock back.
func TestServerClockOffEndsLivePushes(t *testing.T) {
	var off atomic.Int64
	ts := skewedServer(t, sharedRedisStore(t), &off)
	tok := ts.token(t, "alice", []string{"notes"}, []string{"notes"})
	c, s := ts.openPusher(t, tok)
	off.Store(int64(-year))
	if _, err := ts.srv.eng.CheckClock(context.Background()); !errors.Is(err, engine.ErrClockSkew) {
		t.Fatalf("a year behind: %v", err)
	}
	ts.pushLive(t, c, s, tok, change(t, "notes", "r1", "f", 1))
	if m, ok := c.recv().(proto.ErrorMessage); !ok || m.Code != proto.CodeUnavailable {
		t.Fatalf("live push a year behind: %#v, want error unavailable", m)
	}
	if _, err := c.recvErr(5 * time.Second); websocket.CloseStatus(err) != proto.CloseTryAgainLater {
		t.Fatalf("the session after its push a year behind: closed %v (%v), want %d (try again later)", websocket.CloseStatus(err), err, proto.CloseTryAgainLater)
	}
}

// A store the check cannot reach is no skew: the instance goes on
// serving hellos (the store's failures are answered where they happen).
func TestServerClockUnreadIsNotOff(t *testing.T) {
	rs := redistest.Start(t, "--save", "", "--appendonly", "no")
	// Timeouts a loaded machine meets at Open: once the server is killed
	// its port refuses at once, so they do not slow the check below.
	st, err := redis.Open(context.Background(), redis.Options{Addrs: []string{rs.Addr()}, KeyPrefix: "clock:",
		DialTimeout: 5 * time.Second, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second, MaxRetries: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	var off atomic.Int64
	ts := skewedServer(t, st, &off)
	rs.Kill()
	off.Store(int64(year))
	if _, err := ts.srv.eng.CheckClock(context.Background()); err == nil || errors.Is(err, engine.ErrClockSkew) {
		t.Fatalf("store down: CheckClock %v, want a store error", err)
	}
	tok := ts.token(t, "alice", []string{"notes"}, []string{"notes"})
	if a := ts.post(t, proto.PathHello, tok, proto.HelloRequest{Protocol: proto.Version, Replica: "c1"}); a.status != http.StatusOK {
		t.Fatalf("hello with the store's clock unread: %d %s, want 200", a.status, a.errorCode(t))
	}
	if v := ts.metric(t, "convergo_clock_off"); v != 0 {
		t.Fatalf("convergo_clock_off %v, want 0", v)
	}
}
