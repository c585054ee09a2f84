package transport

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/memory"
	"github.com/convergo/convergo/stores/storetest"
	"github.com/convergo/convergo/transport/proto"
)

// gateStore holds every Apply while it is shut: a store slow to commit;
// and fails them while failing is set.
type gateStore struct {
	stores.Store
	failing atomic.Bool
	mu      sync.Mutex
	shut    chan struct{} // nil: open
	entered chan struct{} // one value per Apply held
}

func (g *gateStore) Apply(ctx context.Context, changes []crdt.Change) ([]stores.Result, error) {
	if g.failing.Load() {
		return nil, stores.ErrUnavailable
	}
	g.mu.Lock()
	shut := g.shut
	g.mu.Unlock()
	if shut != nil {
		g.entered <- struct{}{}
		select {
		case <-shut:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return g.Store.Apply(ctx, changes)
}

// close holds the Applies to come; open lets them through.
func (g *gateStore) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.shut = make(chan struct{})
}

func (g *gateStore) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.shut != nil {
		close(g.shut)
		g.shut = nil
	}
}

// waitEntered waits for an Apply to be held.
func (g *gateStore) waitEntered(t *testing.T) {
	t.Helper()
	select {
	case <-g.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("no Apply reached the store")
	}
}

// newGatedServer is newTestServer on a store whose Applies a test can
// hold.
func newGatedServer(t *testing.T, edit func(*Config)) (*testServer, *gateStore) {
	t.Helper()
	g := &gateStore{Store: memory.New(), entered: make(chan struct{}, 16)}
	eng, err := engine.Open(engine.Config{Store: g, Replica: "srv-test", PollInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	ts := newTestServer(t, func(c *Config) {
		c.Engine = eng
		if edit != nil {
			edit(c)
		}
	})
	ts.eng = eng
	t.Cleanup(func() { // after the server's shutdown (cleanups run last first)
		g.open()
		_ = eng.Close()
	})
	t.Cleanup(g.open) // before it: a held push must end for the shutdown to
	return ts, g
}

// newFullBudget opens a gated server whose bodies in flight have room for
// one push and two pushing sessions of alice on it, a and b (sb is b's
// session), and has a push a sent of notes/a held in the store: the
// budget is full until the gate opens, and a's pushed answers it then.
func newFullBudget(t *testing.T) (ts *testServer, gate *gateStore, tok string, a, b *liveClient, sb proto.Session) {
	t.Helper()
	ts, gate = newGatedServer(t, func(c *Config) { c.Limits.MaxBodyBytesInFlight = 1 })
	tok = ts.token(t, "alice", []string{"notes"}, []string{"notes"})
	a, sa := ts.openPusher(t, tok)
	b, sb = ts.openPusher(t, tok)
	gate.close()
	ts.pushLive(t, a, sa, tok, change(t, "notes", "a", "f", 1))
	gate.waitEntered(t)
	return ts, gate, tok, a, b, sb
}

// openPusher opens a session whose replica is the one the token's
// subject owns for the test changes (ownReplica), as a client pushes over.
func (ts *testServer) openPusher(t *testing.T, token string) (*liveClient, proto.Session) {
	t.Helper()
	c, _, err := ts.dial(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	subject := ""
	if p, err := ts.jwt.Authenticate(context.Background(), token); err == nil {
		subject = p.Subject
	}
	replica := proto.ReplicaFor(subject, ownReplica)
	c.send(proto.Hello{Protocol: proto.Version, Replica: replica, Token: token})
	w, ok := c.recv().(proto.Welcome)
	if !ok {
		t.Fatal("no welcome")
	}
	return c, proto.Session{Replica: replica, Base: w.Hello.ServerTime}
}

// pushLive sends changes (bound to the token's subject) as a push over c.
func (ts *testServer) pushLive(t *testing.T, c *liveClient, s proto.Session, token string, changes ...crdt.Change) {
	t.Helper()
	c.send(proto.PushLive{Changes: ts.bind(t, token, changes), Session: s})
}

// encodePush returns the push message pushLive would send, for tests
// that alter its bytes.
func (ts *testServer) encodePush(t *testing.T, s proto.Session, token string, changes ...crdt.Change) []byte {
	t.Helper()
	data, err := proto.EncodeMessage(proto.PushLive{Changes: ts.bind(t, token, changes), Session: s})
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// recvPushed reads the next message, which must be a pushed.
func recvPushed(t *testing.T, c *liveClient) proto.Pushed {
	t.Helper()
	m := c.recv()
	p, ok := m.(proto.Pushed)
	if !ok {
		t.Fatalf("got %#v, want pushed", m)
	}
	return p
}

// recvClosed expects an error message with code, then the close status.
func recvClosed(t *testing.T, c *liveClient, code string, status websocket.StatusCode) {
	t.Helper()
	for {
		m, err := c.recvErr(5 * time.Second)
		if err != nil {
			t.Fatalf("closed (%v) before an error %s", err, code)
		}
		if e, ok := m.(proto.ErrorMessage); ok {
			if e.Code != code {
				t.Fatalf("error %+v, want %s", e, code)
			}
			break
		}
		if _, ok := m.(proto.Pushed); ok {
			t.Fatalf("got %+v before the error %s", m, code)
		}
	}
	_, err := c.recvErr(5 * time.Second)
	if got := websocket.CloseStatus(err); got != status {
		t.Fatalf("close status %v (%v), want %v", got, err, status)
	}
}

// A push over the live session is answered, once committed, as the same
// push over HTTP would be, and counted as one.
func TestLivePush(t *testing.T) {
	ts, gate := newGatedServer(t, nil)
	tok := ts.token(t, "alice", []string{"notes"}, []string{"notes"})
	c, s := ts.openPusher(t, tok)
	before := ts.metric(t, `convergo_push_changes_total{status="applied"}`)

	gate.close()
	ts.pushLive(t, c, s, tok, change(t, "notes", "n1", "title", "a"), change(t, "notes", "n2", "title", "b"))
	gate.waitEntered(t)
	// Held in the store: no answer yet, and the session is served.
	c.send(proto.Ping{Nonce: 1})
	if m := c.recv(); m != (proto.Pong{Type: proto.TypePong, Nonce: 1}) {
		t.Fatalf("got %#v while the push was held, want pong", m)
	}
	gate.open()
	p := recvPushed(t, c)
	if p.Code != "" || len(p.Results) != 2 || p.Results[0].Status != proto.StatusApplied || p.Results[1].Status != proto.StatusApplied {
		t.Fatalf("pushed %+v", p)
	}
	// Answered after the commit: a pull reads the changes.
	if got := ts.pull(t, tok, "notes", 0); len(got.Records) != 2 {
		t.Fatalf("pull after pushed: %d records", len(got.Records))
	}
	if got := ts.metric(t, `convergo_push_changes_total{status="applied"}`) - before; got != 2 {
		t.Fatalf("applied changes counted %v, want 2", got)
	}
	if got := ts.metric(t, `convergo_live_messages_received_total{type="push"}`); got != 1 {
		t.Fatalf("live pushes counted %v, want 1", got)
	}
	// The same changes again: duplicate; and over HTTP too.
	again := []crdt.Change{change(t, "notes", "n3", "title", "c")}
	ts.pushLive(t, c, s, tok, again...)
	if p := recvPushed(t, c); len(p.Results) != 1 || p.Results[0].Status != proto.StatusApplied {
		t.Fatalf("pushed %+v", p)
	}
	ts.pushLive(t, c, s, tok, again...)
	if p := recvPushed(t, c); len(p.Results) != 1 || p.Results[0].Status != proto.StatusDuplicate {
		t.Fatalf("pushed again %+v, want duplicate", p)
	}
	if r := ts.push(t, tok, again...); r[0].Status != proto.StatusDuplicate {
		t.Fatalf("over HTTP %+v, want duplicate", r)
	}
	// No changes: no results.
	ts.pushLive(t, c, s, tok)
	if p := recvPushed(t, c); p.Code != "" || p.Results == nil || len(p.Results) != 0 {
		t.Fatalf("empty push: %+v", p)
	}
}

// Each change of a live push gets the checks of an HTTP push:
// replica binding, write access, validity.
func TestLivePushRefusesChanges(t *testing.T) {
	ts := newTestServer(t, nil)
	tok := ts.token(t, "alice", []string{"notes"}, []string{"notes"})
	c, s := ts.openPusher(t, tok)
	forged := change(t, "notes", "f1", "title", "x")
	forged.Record.Fields["title"] = crdt.Field{Stamp: crdt.Stamp{Wall: time.Now().UnixMilli(), Replica: proto.ReplicaFor("bob", "d1")}, Value: forged.Record.Fields["title"].Value}
	ts.pushLive(t, c, s, tok,
		change(t, "notes", "ok", "title", "fine"),
		forged,
		change(t, "secrets", "s1", "title", "no"),
		change(t, "notes", "ok2", "title", "fine too"))
	p := recvPushed(t, c)
	want := []struct {
		status proto.Status
		code   string
	}{{proto.StatusApplied, ""}, {proto.StatusRefused, proto.CodeForgedReplica}, {proto.StatusRefused, proto.CodeForbidden}, {proto.StatusApplied, ""}}
	if len(p.Results) != len(want) {
		t.Fatalf("pushed %+v", p)
	}
	for i, w := range want {
		if p.Results[i].Status != w.status || p.Results[i].Code != w.code {
			t.Fatalf("result %d: %+v, want %v %s", i, p.Results[i], w.status, w.code)
		}
	}
	// A session's replica is only index 0: stamps of another replica of
	// the subject are its own, and applied.
	other := change(t, "notes", "o1", "title", "x")
	other.Record.Fields["title"] = crdt.Field{Stamp: crdt.Stamp{Wall: time.Now().UnixMilli(), Replica: proto.ReplicaFor("alice", "other")}, Value: other.Record.Fields["title"].Value}
	ts.pushLive(t, c, s, tok, other)
	if p := recvPushed(t, c); len(p.Results) != 1 || p.Results[0].Status != proto.StatusApplied {
		t.Fatalf("another device of the subject: %+v", p)
	}
}

// A push refused whole is answered with a code, and the session goes on.
func TestLivePushRefusedWhole(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.Limits.MaxPushChanges = 2 })
	tok := ts.token(t, "alice", []string{"notes"}, []string{"notes"})
	c, s := ts.openPusher(t, tok)
	ts.pushLive(t, c, s, tok, change(t, "notes", "a", "f", 1), change(t, "notes", "b", "f", 2), change(t, "notes", "c", "f", 3))
	if p := recvPushed(t, c); p.Code != proto.CodeTooLarge || p.Results != nil {
		t.Fatalf("3 changes, at most 2: %+v", p)
	}
	c.send(proto.PushLive{Changes: ts.bind(t, tok, []crdt.Change{change(t, "notes", "a", "f", 1)}), Versions: map[string]uint64{"notes": 7}, Session: s})
	if p := recvPushed(t, c); p.Code != proto.CodeSchemaAhead {
		t.Fatalf("schema version ahead: %+v", p)
	}
	good := ts.encodePush(t, s, tok, change(t, "notes", "a", "f", 1))
	// good is {0: "push", 2: [...]}: the same with one more entry.
	with := func(entry string) []byte { return append(append([]byte{0xa3}, good[1:]...), entry...) }
	for name, data := range map[string][]byte{
		"key 1":            with("\x01\x62c1"),
		"key 9":            with("\x09\x62c1"),
		"changes not list": []byte("\xa2\x00\x64push\x02\x01"),
	} {
		if err := c.ws.Write(context.Background(), websocket.MessageBinary, data); err != nil {
			t.Fatal(err)
		}
		if p := recvPushed(t, c); p.Code != proto.CodeMalformed {
			t.Fatalf("%s: %+v, want malformed", name, p)
		}
	}
	ts.pushLive(t, c, s, tok, change(t, "notes", "a", "f", 1))
	if p := recvPushed(t, c); len(p.Results) != 1 || p.Results[0].Status != proto.StatusApplied {
		t.Fatalf("after the refusals: %+v", p)
	}
}

// A store that fails answers unavailable, as over HTTP.
func TestLivePushStoreFailure(t *testing.T) {
	ts, gate := newGatedServer(t, nil)
	tok := ts.token(t, "alice", []string{"*"}, []string{"*"})
	c, s := ts.openPusher(t, tok)
	gate.failing.Store(true)
	ts.pushLive(t, c, s, tok, change(t, "n", "a", "f", 1))
	if p := recvPushed(t, c); p.Code != proto.CodeUnavailable {
		t.Fatalf("pushed %+v, want unavailable", p)
	}
}

// Each live push has a request id of its own (pushed key 4), made as an
// HTTP request's is, and its failures are logged under it.
func TestLivePushRequestID(t *testing.T) {
	var logs storetest.LogBuffer
	ts, gate := newGatedServer(t, func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	tok := ts.token(t, "alice", []string{"notes"}, []string{"notes"})
	c, s := ts.openPusher(t, tok)
	seen := map[string]bool{}
	check := func(p proto.Pushed) string {
		t.Helper()
		if p.RequestID == "" || crdt.ValidateReplica(p.RequestID) != nil || seen[p.RequestID] {
			t.Fatalf("pushed %+v: want a fresh request id", p)
		}
		seen[p.RequestID] = true
		return p.RequestID
	}
	ts.pushLive(t, c, s, tok, change(t, "notes", "ok", "title", "fine"), change(t, "secrets", "s1", "title", "no"))
	if p := recvPushed(t, c); len(p.Results) != 2 || p.Results[1].Code != proto.CodeForbidden {
		t.Fatalf("pushed %+v", p)
	} else {
		check(p)
	}
	// Refused whole: unreadable, then a store failure, logged with its id.
	if err := c.ws.Write(context.Background(), websocket.MessageBinary, []byte("\xa2\x00\x64push\x02\x01")); err != nil {
		t.Fatal(err)
	}
	if p := recvPushed(t, c); p.Code != proto.CodeMalformed {
		t.Fatalf("pushed %+v, want malformed", p)
	} else {
		check(p)
	}
	gate.failing.Store(true)
	ts.pushLive(t, c, s, tok, change(t, "notes", "a", "f", 1))
	p := recvPushed(t, c)
	if p.Code != proto.CodeUnavailable {
		t.Fatalf("pushed %+v, want unavailable", p)
	}
	id := check(p)
	if !strings.Contains(logs.String(), "request="+id+" ") {
		t.Fatalf("no log line with request=%s in:\n%s", id, logs.String())
	}
	// Made as HTTP's: the same server prefix.
	a := ts.post(t, proto.PathPull, tok, proto.PullRequest{Collection: "notes"})
	if h := a.header.Get(proto.HeaderRequestID); h == "" || !strings.HasPrefix(id, h[:strings.LastIndexByte(h, '-')+1]) {
		t.Fatalf("live push id %q, HTTP request id %q: want the same prefix", id, h)
	}
}

// One push at a time: a second before the first is answered ends the
// session, and the first gets no answer.
func TestLivePushSecondInFlight(t *testing.T) {
	ts, gate := newGatedServer(t, nil)
	tok := ts.token(t, "alice", []string{"notes"}, []string{"notes"})
	c, s := ts.openPusher(t, tok)
	gate.close()
	ts.pushLive(t, c, s, tok, change(t, "notes", "a", "f", 1))
	gate.waitEntered(t)
	ts.pushLive(t, c, s, tok, change(t, "notes", "b", "f", 2))
	recvClosed(t, c, proto.CodeMalformed, websocket.StatusPolicyViolation)

	// So is an unreadable second push.
	gate.open()
	c, s = ts.openPusher(t, tok)
	gate.close()
	ts.pushLive(t, c, s, tok, change(t, "notes", "c", "f", 3))
	gate.waitEntered(t)
	if err := c.ws.Write(context.Background(), websocket.MessageBinary, []byte("\xa2\x00\x64push\x02\x01")); err != nil {
		t.Fatal(err)
	}
	recvClosed(t, c, proto.CodeMalformed, websocket.StatusPolicyViolation)
}

// A push before the hello is a first message that is not hello.
func TestLivePushBeforeHello(t *testing.T) {
	ts := newTestServer(t, nil)
	tok := ts.token(t, "alice", []string{"notes"}, []string{"notes"})
	c, _, err := ts.dial(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.send(proto.PushLive{Changes: ts.bind(t, tok, []crdt.Change{change(t, "notes", "a", "f", 1)}), Session: proto.Session{Replica: "c1", Base: time.Now().UnixMilli()}})
	recvClosed(t, c, proto.CodeMalformed, websocket.StatusPolicyViolation)
	if got := ts.pull(t, tok, "notes", 0); len(got.Records) != 0 {
		t.Fatalf("a push before the hello was applied: %+v", got.Records)
	}
}

// A push message is bounded by the live message limit (hello key 10).
func TestLivePushTooBig(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.Limits.MaxMessageBytes = 1 << 10 })
	tok := ts.token(t, "alice", []string{"notes"}, []string{"notes"})
	c, s := ts.openPusher(t, tok)
	ts.pushLive(t, c, s, tok, change(t, "notes", "big", "f", strings.Repeat("x", 2<<10)))
	_, err := c.recvErr(5 * time.Second)
	if got := websocket.CloseStatus(err); got != websocket.StatusMessageTooBig {
		t.Fatalf("close status %v (%v), want 1009", got, err)
	}
	if got := ts.pull(t, tok, "notes", 0); len(got.Records) != 0 {
		t.Fatalf("the push over the limit was applied: %+v", got.Records)
	}
}

// tokenAuth grants everything, until the expiry a token names: "exp:<unix
// ms>".
type tokenAuth struct{}

func (tokenAuth) Authenticate(_ context.Context, token string) (Principal, error) {
	var ms int64
	if _, err := fmt.Sscanf(token, "exp:%d", &ms); err != nil {
		return Principal{}, ErrUnauthenticated
	}
	exp := time.UnixMilli(ms)
	if !time.Now().Before(exp) {
		return Principal{}, ErrTokenExpired
	}
	return Principal{Subject: "s", Read: []string{"*"}, Write: []string{"*"}, Expires: exp}, nil
}

// A token that expires during a push closes the session: the push has no
// answer, and pushed again with a fresh token it is a duplicate.
func TestLivePushTokenExpiry(t *testing.T) {
	ts, gate := newGatedServer(t, func(c *Config) { c.Authorizer = tokenAuth{} })
	// The token must outlive the dial, hello and welcome, and the push then
	// waits for it to expire: 3 s leaves a loaded machine room for the first
	// (1 s did not always).
	short := fmt.Sprintf("exp:%d", time.Now().Add(3*time.Second).UnixMilli())
	c, _, err := ts.dial(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	replica := proto.ReplicaFor("s", "d1")
	c.send(proto.Hello{Protocol: proto.Version, Replica: replica, Token: short})
	w, ok := c.recv().(proto.Welcome)
	if !ok {
		t.Fatal("no welcome")
	}
	s := proto.Session{Replica: replica, Base: w.Hello.ServerTime}
	ch := crdt.Change{Collection: "notes", Record: crdt.SetField("n1", "f", mustValue(t, 1), crdt.Stamp{Wall: time.Now().UnixMilli(), Replica: replica})}
	gate.close()
	c.send(proto.PushLive{Changes: []crdt.Change{ch}, Session: s})
	gate.waitEntered(t)
	recvClosed(t, c, proto.CodeTokenExpired, websocket.StatusPolicyViolation)
	gate.open()

	long := fmt.Sprintf("exp:%d", time.Now().Add(time.Hour).UnixMilli())
	waitFor(t, "the held push committed", func() bool { return len(ts.pull(t, long, "notes", 0).Records) == 1 }) // the held push ends, committed
	c2, _, err := ts.dial(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	c2.send(proto.Hello{Protocol: proto.Version, Replica: replica, Token: long})
	w, ok = c2.recv().(proto.Welcome)
	if !ok {
		t.Fatal("no welcome")
	}
	c2.send(proto.PushLive{Changes: []crdt.Change{ch}, Session: proto.Session{Replica: replica, Base: w.Hello.ServerTime}})
	if p := recvPushed(t, c2); len(p.Results) != 1 || p.Results[0].Status != proto.StatusDuplicate {
		t.Fatalf("pushed again: %+v, want duplicate", p)
	}
}

// A session lost with a push in flight: the push is not answered, and
// pushed again over the next session it is a duplicate.
func TestLivePushLostSession(t *testing.T) {
	ts, gate := newGatedServer(t, nil)
	tok := ts.token(t, "alice", []string{"notes"}, []string{"notes"})
	c, s := ts.openPusher(t, tok)
	changes := []crdt.Change{change(t, "notes", "a", "f", 1), change(t, "notes", "b", "f", 2)}
	gate.close()
	ts.pushLive(t, c, s, tok, changes...)
	gate.waitEntered(t)
	_ = c.ws.CloseNow()
	gate.open()
	waitFor(t, "the held push committed", func() bool { return len(ts.pull(t, tok, "notes", 0).Records) == 2 })
	c, s = ts.openPusher(t, tok)
	ts.pushLive(t, c, s, tok, changes...)
	p := recvPushed(t, c)
	if len(p.Results) != 2 || p.Results[0].Status != proto.StatusDuplicate || p.Results[1].Status != proto.StatusDuplicate {
		t.Fatalf("pushed again: %+v, want duplicates", p)
	}
}

// Pushes of many sessions at once each get their own answers.
func TestLivePushSessions(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.Limits.Rate = 1000; c.Limits.Burst = 1000 })
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		tok := ts.token(t, fmt.Sprintf("user%d", i), []string{"notes"}, []string{"notes"})
		c, s := ts.openPusher(t, tok)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 5 {
				id := fmt.Sprintf("u%d-%d", i, j)
				c.send(proto.PushLive{Changes: ts.bind(t, tok, []crdt.Change{change(t, "notes", id, "f", j)}), Session: s})
				m, err := c.recvErr(5 * time.Second)
				if p, ok := m.(proto.Pushed); err != nil || !ok || len(p.Results) != 1 || p.Results[0].Status != proto.StatusApplied {
					errs <- fmt.Errorf("%s: %+v %v", id, m, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := ts.pull(t, ts.token(t, "r", []string{"notes"}, nil), "notes", 0); len(got.Records) != 40 {
		t.Fatalf("%d records, want 40", len(got.Records))
	}
}

// A live push counts with the bodies in flight until it is answered: with
// no room, another push is answered unavailable at once, and goes through
// once the first is answered.
func TestLivePushBodyBudget(t *testing.T) {
	ts, gate, tok, a, b, sb := newFullBudget(t)
	ts.pushLive(t, b, sb, tok, change(t, "notes", "b", "f", 2))
	if p := recvPushed(t, b); p.Code != proto.CodeUnavailable {
		t.Fatalf("push beyond the budget: %+v, want unavailable", p)
	}
	gate.open()
	if p := recvPushed(t, a); len(p.Results) != 1 || p.Results[0].Status != proto.StatusApplied {
		t.Fatalf("held push: %+v", p)
	}
	ts.pushLive(t, b, sb, tok, change(t, "notes", "b", "f", 2))
	if p := recvPushed(t, b); len(p.Results) != 1 || p.Results[0].Status != proto.StatusApplied {
		t.Fatalf("push again: %+v", p)
	}
	if got := ts.metric(t, "convergo_body_bytes_in_flight"); got != 0 {
		t.Fatalf("%v bytes still in flight", got)
	}
}
