package transport

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/convergo/convergo/transport/proto"

	"github.com/coder/websocket"

	"github.com/convergo/convergo/crdt"
)

func TestLiveStreamsChanges(t *testing.T) {
	ts := newTestServer(t, nil)
	tok := ts.token(t, "alice", []string{"notes"}, []string{"notes"})
	ts.push(t, tok, change(t, "notes", "r1", "title", "a"))

	c, hello := ts.open(t, tok)
	if hello.Subject != "alice" || hello.Protocol != proto.Version {
		t.Fatalf("welcome %+v", hello)
	}
	c.send(proto.Sub{Collection: "notes", Cursor: nil})
	m, ok := c.recv().(proto.Changes)
	if !ok || m.Collection != "notes" || len(m.Records) != 1 || !ts.isCur(t, "notes", m.Next, 1) || m.More {
		t.Fatalf("catch-up page: %+v", m)
	}
	// A change pushed over HTTP by someone else arrives.
	ts.push(t, tok, change(t, "notes", "r2", "title", "b"))
	m, ok = c.recv().(proto.Changes)
	if !ok || len(m.Records) != 1 || m.Records[0].ID != "r2" || !ts.isCur(t, "notes", m.Next, 2) {
		t.Fatalf("live page: %+v", m)
	}
	c.send(proto.Ping{Nonce: 5})
	if p, ok := c.recv().(proto.Pong); !ok || p.Nonce != 5 {
		t.Fatalf("pong %+v", p)
	}
	// After unsub nothing more arrives for the collection.
	c.send(proto.Unsub{Collection: "notes"})
	c.send(proto.Ping{Nonce: 55}) // messages are handled in order: the pong means the unsub was
	if m := c.recv(); m != (proto.Pong{Type: proto.TypePong, Nonce: 55}) {
		t.Fatalf("after unsub: got %#v, want pong 55", m)
	}
	ts.push(t, tok, change(t, "notes", "r4", "title", "d"))
	c.send(proto.Ping{Nonce: 6})
	if m := c.recv(); m != (proto.Pong{Type: proto.TypePong, Nonce: 6}) {
		t.Fatalf("after unsub: got %#v, want pong 6", m)
	}
	// Subscribing from a cursor resumes there.
	c.send(proto.Sub{Collection: "notes", Cursor: ts.cur(t, "notes", 2)})
	if m, ok := c.recv().(proto.Changes); !ok || len(m.Records) != 1 || m.Records[0].ID != "r4" {
		t.Fatalf("resume: %+v", m)
	}
}

func TestLiveCatchUpPages(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.Limits.MaxPullRecords = 2; c.Demo = true })
	var cs []crdt.Change
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		cs = append(cs, change(t, DemoCollection, id, "f", id))
	}
	ts.push(t, "", cs...)
	c, _ := ts.open(t, "")
	c.send(proto.Sub{Collection: DemoCollection})
	var ids []string
	for {
		m := c.recv().(proto.Changes)
		for _, e := range m.Records {
			ids = append(ids, e.ID)
		}
		if !m.More {
			break
		}
	}
	if strings.Join(ids, "") != "abcde" {
		t.Fatalf("streamed %v", ids)
	}
}

func TestLiveRefusals(t *testing.T) {
	ts := newTestServer(t, nil)
	tok := ts.token(t, "alice", []string{"notes"}, nil)
	c, _ := ts.open(t, tok)
	c.send(proto.Sub{Collection: "secrets"})
	if e, ok := c.recv().(proto.ErrorMessage); !ok || e.Code != proto.CodeForbidden || e.Collection != "secrets" {
		t.Fatalf("forbidden sub: %+v", e)
	}
	c.send(proto.Sub{Collection: "bad name"})
	if e, ok := c.recv().(proto.ErrorMessage); !ok || e.Code != proto.CodeInvalid {
		t.Fatalf("invalid sub: %+v", e)
	}
	late := uint64(proto.MaxWall) + 1
	c.send(proto.Sub{Collection: "notes", Pending: &late})
	if e, ok := c.recv().(proto.ErrorMessage); !ok || e.Code != proto.CodeInvalid || e.Collection != "notes" {
		t.Fatalf("sub with a pending floor past MaxWall: %+v", e)
	}
	// Refusals of a sub are not fatal.
	c.send(proto.Ping{Nonce: 1})
	if _, ok := c.recv().(proto.Pong); !ok {
		t.Fatal("no pong after refused subs")
	}

	fatal := []struct {
		name  string
		first func(c *liveClient)
		code  string
	}{
		{"no hello", func(c *liveClient) { c.send(proto.Sub{Collection: "notes"}) }, proto.CodeMalformed},
		{"bad token", func(c *liveClient) { c.send(proto.Hello{Protocol: proto.Version, Replica: "c1", Token: "junk"}) }, proto.CodeUnauthenticated},
		{"no token", func(c *liveClient) { c.send(proto.Hello{Protocol: proto.Version, Replica: "c1"}) }, proto.CodeUnauthenticated},
		{"version", func(c *liveClient) { c.send(proto.Hello{Protocol: 9, Replica: "c1", Token: tok}) }, proto.CodeUnsupportedVersion},
		{"garbage", func(c *liveClient) {
			_ = c.ws.Write(context.Background(), websocket.MessageBinary, []byte{0xa1, 0x00, 0x61, 'x'})
		}, proto.CodeMalformed},
		{"text frame", func(c *liveClient) { _ = c.ws.Write(context.Background(), websocket.MessageText, []byte("hi")) }, proto.CodeMalformed},
	}
	for _, tc := range fatal {
		t.Run(tc.name, func(t *testing.T) {
			c, _, err := ts.dial(t, nil)
			if err != nil {
				t.Fatal(err)
			}
			tc.first(c)
			e, ok := c.recv().(proto.ErrorMessage)
			if !ok || e.Code != tc.code {
				t.Fatalf("got %+v, want error %s", e, tc.code)
			}
			if _, err := c.recvErr(5 * time.Second); websocket.CloseStatus(err) == -1 {
				t.Fatalf("socket not closed after a fatal error: %v", err)
			}
		})
	}
}

func TestLiveMessageTooBig(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.Limits.MaxMessageBytes = 1 << 10; c.Demo = true })
	c, _ := ts.open(t, "")
	big := change(t, DemoCollection, "r", "f", strings.Repeat("x", 4<<10))
	c.send(proto.Sub{Collection: DemoCollection, Cursor: []byte(big.Record.Fields["f"].Value)})
	_, err := c.recvErr(5 * time.Second)
	if got := websocket.CloseStatus(err); got != websocket.StatusMessageTooBig {
		t.Fatalf("close status %v (%v), want 1009", got, err)
	}
	// The server keeps serving others.
	other, _ := ts.open(t, "")
	other.send(proto.Ping{Nonce: 1})
	if _, ok := other.recv().(proto.Pong); !ok {
		t.Fatal("other client not served")
	}
}

// A client that does not read gets resync instead of an unbounded buffer.
func TestLiveSlowConsumerResync(t *testing.T) {
	ts := newTestServer(t, func(c *Config) {
		c.Demo = true
		c.Limits.MaxPullRecords = 1
		c.Limits.SendQueue = 1
		c.Limits.SlowConsumer = 20 * time.Millisecond
		c.Limits.MaxBodyBytes = 64 << 20
		c.Limits.Rate = -1
	})
	// 16 MB of records, more than the socket buffers of loopback hold.
	value := strings.Repeat("x", 100<<10)
	for batch := 0; batch < 4; batch++ {
		var cs []crdt.Change
		for i := 0; i < 40; i++ {
			cs = append(cs, change(t, DemoCollection, "r"+string(rune('a'+batch))+string(rune('A'+i)), "f", value))
		}
		ts.push(t, "", cs...)
	}
	c, _ := ts.open(t, "")
	c.send(proto.Sub{Collection: DemoCollection})
	// Not reading: the queue fills, and the server stops the
	// subscription. How soon depends on the machine's load (a busy one
	// reads and sends the pages slower than loopback buffers take them):
	// wait until it has (the resync is owed: it is counted only once
	// written, when the client reads). Reading before would drain the
	// queue, and the resync this test is about might never come.
	for until := time.Now().Add(30 * time.Second); !ts.resynced(t, DemoCollection); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(until) {
			t.Fatal("a client not reading 16 MB was not resynced within 30 s")
		}
	}
	var pages int
	for {
		m, err := c.recvErr(10 * time.Second)
		if err != nil {
			t.Fatalf("after %d pages: %v", pages, err)
		}
		if r, ok := m.(proto.Resync); ok {
			if r.Collection != DemoCollection {
				t.Fatalf("resync for %q", r.Collection)
			}
			break
		}
		if _, ok := m.(proto.Changes); !ok {
			t.Fatalf("unexpected %T", m)
		}
		pages++
	}
	t.Logf("resync after %d pages", pages)
	if pages >= 160 {
		t.Fatalf("all %d pages were buffered: no resync needed", pages)
	}
	// The stopped subscription can be taken up again from the cursor.
	c.send(proto.Sub{Collection: DemoCollection, Cursor: ts.cur(t, DemoCollection, 160)})
	if m, ok := c.recv().(proto.Changes); !ok || len(m.Records) != 0 {
		t.Fatalf("re-sub at head: %+v", m)
	}
	if _, body := ts.get(t, "/metrics"); !strings.Contains(body, "convergo_live_resyncs_total 1") {
		t.Fatal("resync not counted")
	}
}

func TestLiveOrigin(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.Demo = true; c.AllowedOrigins = []string{"app.example.com"} })
	_, resp, err := ts.dial(t, http.Header{"Origin": {"https://evil.example"}})
	if err == nil {
		t.Fatal("foreign origin upgraded")
	}
	if resp == nil || resp.StatusCode != http.StatusForbidden || resp.Header.Get(proto.HeaderError) != proto.CodeForbidden {
		t.Fatalf("foreign origin: %v", resp)
	}
	if _, _, err := ts.dial(t, http.Header{"Origin": {"https://app.example.com"}}); err != nil {
		t.Fatalf("allowed origin: %v", err)
	}
	if _, _, err := ts.dial(t, http.Header{"Origin": {ts.URL}}); err != nil {
		t.Fatalf("same origin: %v", err)
	}
}

func TestLiveConnLimit(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.Demo = true; c.Limits.MaxConnsPerAddr = 2 })
	a, _ := ts.open(t, "")
	ts.open(t, "")
	_, resp, err := ts.dial(t, nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get(proto.HeaderError) != proto.CodeRateLimited {
		t.Fatalf("third connection: %v %v", resp, err)
	}
	// Closing one frees its slot.
	_ = a.ws.Close(websocket.StatusNormalClosure, "")
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, _, err := ts.dial(t, nil); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("slot not freed")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// expiringAuth grants everything for ttl from its first authentication
// on: from then, not from its making, so that a slow start of the server
// and the dial does not spend the token before its hello.
type expiringAuth struct {
	ttl time.Duration
	mu  sync.Mutex
	exp time.Time
}

func (a *expiringAuth) Authenticate(context.Context, string) (Principal, error) {
	a.mu.Lock()
	if a.exp.IsZero() {
		a.exp = time.Now().Add(a.ttl)
	}
	exp := a.exp
	a.mu.Unlock()
	if !time.Now().Before(exp) {
		return Principal{}, ErrTokenExpired
	}
	return Principal{Subject: "s", Read: []string{"*"}, Write: []string{"*"}, Expires: exp}, nil
}

func TestLiveTokenExpiry(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.Authorizer = &expiringAuth{ttl: 300 * time.Millisecond} })
	c, _ := ts.open(t, "t")
	e, ok := c.recv().(proto.ErrorMessage)
	if !ok || e.Code != proto.CodeTokenExpired {
		t.Fatalf("got %+v, want token_expired", e)
	}
	if _, err := c.recvErr(5 * time.Second); websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
		t.Fatalf("close: %v", err)
	}
	// And HTTP says token_expired too.
	if got := ts.post(t, proto.PathPull, "t", proto.PullRequest{Collection: "x"}).errorCode(t); got != proto.CodeTokenExpired {
		t.Fatalf("http: %s", got)
	}
}

func TestLiveIdleTimeout(t *testing.T) {
	ts := newTestServer(t, func(c *Config) {
		c.Demo = true
		// Pings every 100 ms and 1 s of silence allowed: a reading client
		// answers within a ping or two even on a loaded machine (the old
		// 30 ms / 100 ms left a reader 70 ms of scheduling delay).
		c.PingInterval = 100 * time.Millisecond
		c.IdleTimeout = time.Second
	})
	c, _ := ts.open(t, "")
	// Not reading means not answering pings. Read only once the server
	// has found the client silent (its pinger no longer holds it): a
	// read answers the pings, and a pinger slowed by a loaded machine
	// would then find the client heard from.
	for until := time.Now().Add(10 * time.Second); ts.srv.pinger.held() > 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(until) {
			t.Fatal("a silent client was not found silent within 10 s")
		}
	}
	_, err := c.recvErr(5 * time.Second)
	if websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
		t.Fatalf("silent client: %v", err)
	}
	// A client that reads (and so answers pings) stays, for several idle
	// timeouts.
	d, _ := ts.open(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 2500*time.Millisecond)
	defer cancel()
	// The read ends at its own deadline, the connection still open:
	// coder/websocket closes it then, and a read between two frames (a
	// ping just answered) reports the closed connection rather than the
	// deadline. A server that closed it would end the read before.
	_, _, err = d.ws.Read(ctx)
	if ctx.Err() == nil || !(errors.Is(err, context.DeadlineExceeded) || errors.Is(err, net.ErrClosed)) {
		t.Fatalf("reading client: %v", err)
	}
}

func TestLiveShutdown(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.Demo = true })
	c, _ := ts.open(t, "")
	c.send(proto.Sub{Collection: DemoCollection})
	c.recv()
	done := make(chan error, 1)
	go func() {
		_, err := c.recvErr(5 * time.Second)
		done <- err
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ts.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Fatalf("close: %v", err)
	}
	if _, resp, err := ts.dial(t, nil); err == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("dial after shutdown: %v", err)
	}
}

// Messages over the rate are delayed, never dropped.
func TestLiveRateLimit(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.Demo = true; c.Limits.Rate = 20; c.Limits.Burst = 2 })
	c, _ := ts.open(t, ts.token(t, "alice", []string{"*"}, nil)) // the hello takes one token of the address
	start := time.Now()
	const n = 12
	for i := uint64(1); i <= n; i++ {
		c.send(proto.Ping{Nonce: i})
	}
	for i := uint64(1); i <= n; i++ {
		if m := c.recv(); m != (proto.Pong{Type: proto.TypePong, Nonce: i}) {
			t.Fatalf("got %#v, want pong %d", m, i)
		}
	}
	// alice's 2, then 20 per second.
	if took := time.Since(start); took < (n-2)*time.Second/20-20*time.Millisecond {
		t.Fatalf("%d messages in %v: not limited to 20/s", n, took)
	}
	// Another client is served at once meanwhile.
	other, _ := ts.open(t, "")
	other.send(proto.Ping{Nonce: 99})
	if m := other.recv(); m != (proto.Pong{Type: proto.TypePong, Nonce: 99}) {
		t.Fatalf("other client: %#v", m)
	}
}

func TestLiveHelloTimeout(t *testing.T) {
	// 1 s: the second client's hello must be read within it, after the
	// upgrade, by a server that a loaded machine may hold up for a while.
	ts := newTestServer(t, func(c *Config) { c.Demo = true; c.HelloTimeout = time.Second })
	c, _, err := ts.dial(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	if e, ok := c.recv().(proto.ErrorMessage); !ok || e.Code != proto.CodeUnauthenticated {
		t.Fatalf("got %+v, want unauthenticated", e)
	}
	if _, err := c.recvErr(5 * time.Second); websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
		t.Fatalf("close: %v", err)
	}
	// A client that says hello in time stays past the timeout.
	d, _ := ts.open(t, "")
	time.Sleep(1200 * time.Millisecond)
	d.send(proto.Ping{Nonce: 1})
	if m := d.recv(); m != (proto.Pong{Type: proto.TypePong, Nonce: 1}) {
		t.Fatalf("after the hello timeout: %#v", m)
	}
}

func TestLiveSubscriptionLimit(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.Limits.MaxSubscriptions = 2 })
	c, _ := ts.open(t, ts.token(t, "alice", []string{"*"}, nil))
	for _, coll := range []string{"a", "b"} {
		c.send(proto.Sub{Collection: coll})
		if m, ok := c.recv().(proto.Changes); !ok || m.Collection != coll {
			t.Fatalf("sub %s: %#v", coll, m)
		}
	}
	c.send(proto.Sub{Collection: "a"}) // re-subscribing replaces, it does not count twice
	if m, ok := c.recv().(proto.Changes); !ok || m.Collection != "a" {
		t.Fatalf("re-sub: %#v", m)
	}
	c.send(proto.Sub{Collection: "c"})
	if e, ok := c.recv().(proto.ErrorMessage); !ok || e.Code != proto.CodeTooLarge || e.Collection != "c" {
		t.Fatalf("third sub: %#v", e)
	}
	c.send(proto.Unsub{Collection: "b"})
	c.send(proto.Sub{Collection: "c"})
	if m, ok := c.recv().(proto.Changes); !ok || m.Collection != "c" {
		t.Fatalf("sub after unsub: %#v", m)
	}
}

// A live message of an unknown type (a later revision's) is answered with
// an error and the session goes on; a hello of another version is told to
// upgrade and closed with 1002; a plain GET of the live path is 426.
func TestLiveVersioning(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.Demo = true })
	c, _ := ts.open(t, "")
	later := []byte{0xa2, 0x00, 0x65, 'l', 'a', 't', 'e', 'r', 0x01, 0x02} // {0: "later", 1: 2}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.ws.Write(ctx, websocket.MessageBinary, later); err != nil {
		t.Fatal(err)
	}
	if e, ok := c.recv().(proto.ErrorMessage); !ok || e.Code != proto.CodeMalformed {
		t.Fatalf("unknown type: got %+v", e)
	}
	c.send(proto.Ping{Nonce: 9})
	if p, ok := c.recv().(proto.Pong); !ok || p.Nonce != 9 {
		t.Fatalf("session did not go on: %+v", p)
	}

	old, _, err := ts.dial(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	old.send(proto.Hello{Protocol: 1, Replica: "c1"})
	if e, ok := old.recv().(proto.ErrorMessage); !ok || e.Code != proto.CodeUnsupportedVersion {
		t.Fatalf("v1 hello: got %+v", e)
	}
	if _, err := old.recvErr(5 * time.Second); websocket.CloseStatus(err) != proto.CloseProtocolVersion {
		t.Fatalf("v1 hello: close %v, want %d", err, proto.CloseProtocolVersion)
	}

	resp, err := ts.Client().Get(ts.URL + proto.PathLive)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUpgradeRequired || resp.Header.Get(proto.HeaderError) != proto.CodeUpgradeRequired {
		t.Fatalf("GET live: %d %s", resp.StatusCode, resp.Header.Get(proto.HeaderError))
	}
}

// A live session outlives the request deadline of its upgrade.
func TestLiveOutlivesRequestTimeout(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.Demo = true; c.Limits.RequestTimeout = 100 * time.Millisecond })
	c, _ := ts.open(t, "")
	time.Sleep(400 * time.Millisecond)
	c.send(proto.Ping{Nonce: 3})
	if p, ok := c.recv().(proto.Pong); !ok || p.Nonce != 3 {
		t.Fatalf("after the request timeout: %+v", p)
	}
}
