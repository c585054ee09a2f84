package transport

import (
	"fmt"
	"net/http"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/convergo/convergo/crdt/scope"
	"github.com/convergo/convergo/transport/proto"
)

// openFrom opens a live session whose client address is addr (the test
// server trusts its loopback peer as a proxy) and says hello with token.
// It returns the first answer to the hello.
func (ts *testServer) openFrom(t *testing.T, addr, token string) (*liveClient, proto.Message) {
	t.Helper()
	c, _, err := ts.dial(t, http.Header{"X-Forwarded-For": {addr}})
	if err != nil {
		t.Fatalf("dial from %s: %v", addr, err)
	}
	c.send(proto.Hello{Protocol: proto.Version, Replica: "c1", Token: token})
	return c, c.recv()
}

func trustLoopback(c *Config) {
	c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
}

// One subject's live sessions are bounded across client addresses: a
// subject holding tokens cannot take the server's connections (and the
// subscriptions, groups and queues each session may hold) from every
// other tenant by spreading its sessions over addresses, each under the
// per-address bound. A session beyond the bound is refused at its hello
// with rate_limited and closed with 1008; another subject at the same
// addresses is not, and a session that ends frees its place.
func TestLiveSessionsPerSubject(t *testing.T) {
	ts := newTestServer(t, trustLoopback)
	alice := ts.token(t, "alice", []string{"*"}, nil)
	limit := proto.DefaultMaxSessionsPerSubject
	if limit >= 2*proto.DefaultMaxConnsPerAddr {
		t.Fatalf("the bound per subject (%d) is not below two addresses' (%d)", limit, 2*proto.DefaultMaxConnsPerAddr)
	}
	var first *liveClient
	for i := range limit {
		addr := fmt.Sprintf("10.0.0.%d", 1+i%2)
		c, m := ts.openFrom(t, addr, alice)
		if _, ok := m.(proto.Welcome); !ok {
			t.Fatalf("session %d of alice from %s: %#v, want welcome", i+1, addr, m)
		}
		if first == nil {
			first = c
		}
	}
	c, m := ts.openFrom(t, "10.0.0.3", alice)
	if e, ok := m.(proto.ErrorMessage); !ok || e.Code != proto.CodeRateLimited {
		t.Fatalf("session %d of alice: %#v, want error %s", limit+1, m, proto.CodeRateLimited)
	}
	if _, err := c.recvErr(5 * time.Second); websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
		t.Fatalf("session %d of alice: %v, want close 1008", limit+1, err)
	}
	// Another tenant, from the same addresses, is served.
	for _, addr := range []string{"10.0.0.1", "10.0.0.3"} {
		if _, m := ts.openFrom(t, addr, ts.token(t, "bob", []string{"*"}, nil)); m.MessageType() != proto.TypeWelcome {
			t.Fatalf("bob from %s: %#v, want welcome", addr, m)
		}
	}
	// A session of alice that ends makes room for another.
	_ = first.ws.Close(websocket.StatusNormalClosure, "")
	waitFor(t, "alice's first session ended", func() bool { return ts.liveCount() == limit+1 })
	if _, m := ts.openFrom(t, "10.0.0.3", alice); m.MessageType() != proto.TypeWelcome {
		t.Fatalf("alice after one of hers ended: %#v, want welcome", m)
	}
}

// heapAfterGC returns the live heap after a full collection.
func heapAfterGC() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

func (ts *testServer) groupCount() int {
	ts.srv.hub.mu.Lock()
	defer ts.srv.hub.mu.Unlock()
	return len(ts.srv.hub.groups)
}

// bigScope is a scope near the size limit (scope.MaxBytes), distinct for
// each i: its group key and predicate are as large as a client can make
// them.
func bigScope(t *testing.T, i int) []byte {
	t.Helper()
	vals := make([]string, 0, 200)
	for j := range 200 {
		vals = append(vals, fmt.Sprintf(`"v%015d"`, i*1000+j))
	}
	sc, err := scope.Parse(`f in [` + strings.Join(vals, ", ") + `]`)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(sc.Encode()); n > scope.MaxBytes || n < scope.MaxBytes/8 {
		t.Fatalf("scope of %d bytes", n)
	}
	return sc.Encode()
}

// What one session may make the server hold through its subscriptions is
// bounded by Limits.MaxSubscriptions, however it subscribes: the
// subscription beyond it is refused; subscribing again to one collection
// replaces its subscription (one group); subscriptions ended by unsub or
// by the session's end leave no broadcast group, no engine subscription
// and no goroutine behind. The heap each costs is logged: with a scope at
// the size limit, each in a group of its own, it is what
// docs/operations.md ("Memory") gives for a subscription at most.
func TestLiveSubscriptionsBounded(t *testing.T) {
	const limit = 256
	ts := newTestServer(t, func(c *Config) { c.Limits.MaxSubscriptions = limit; c.Limits.Rate = -1 })
	tok := ts.token(t, "alice", []string{"*"}, nil)
	goroutines := runtime.NumGoroutine()
	c, _ := ts.open(t, tok)
	waitFor(t, "groups idle", ts.groupsIdle)
	before := heapAfterGC()
	for i := range limit {
		c.send(proto.Sub{Collection: fmt.Sprintf("c%d", i), Scope: bigScope(t, i)})
		if m, ok := c.recv().(proto.Changes); !ok {
			t.Fatalf("sub %d: %#v", i, m)
		}
	}
	c.send(proto.Sub{Collection: "over", Scope: bigScope(t, limit)})
	if e, ok := c.recv().(proto.ErrorMessage); !ok || e.Code != proto.CodeTooLarge {
		t.Fatalf("sub %d: %#v, want too_large", limit+1, e)
	}
	waitFor(t, "groups idle", ts.groupsIdle)
	if n := ts.groupCount(); n != limit {
		t.Fatalf("%d groups for %d subscriptions of distinct scopes", n, limit)
	}
	per := (int64(heapAfterGC()) - int64(before)) / limit
	t.Logf("one idle subscription with a scope near the limit, alone in its group: %d bytes of heap", per)
	if per > 64<<10 {
		t.Errorf("an idle subscription holds %d bytes of heap, over the 64 KiB docs/operations.md allows", per)
	}

	// Subscribing again to one collection, many times, replaces it.
	for i := range 3 * limit {
		c.send(proto.Sub{Collection: "c0", Scope: bigScope(t, i%7)})
		if m, ok := c.recv().(proto.Changes); !ok {
			t.Fatalf("re-sub %d: %#v", i, m)
		}
	}
	// Churn: unsub and sub again, each time under another scope.
	for i := range limit {
		coll := fmt.Sprintf("c%d", i)
		c.send(proto.Unsub{Collection: coll})
		c.send(proto.Sub{Collection: coll, Scope: bigScope(t, limit+i)})
		if m, ok := c.recv().(proto.Changes); !ok || m.Collection != coll {
			t.Fatalf("churn %d: %#v", i, m)
		}
	}
	waitFor(t, "groups idle", ts.groupsIdle)
	if n := ts.groupCount(); n != limit {
		t.Fatalf("%d groups after churn, want %d", n, limit)
	}
	for i := range limit {
		c.send(proto.Unsub{Collection: fmt.Sprintf("c%d", i)})
	}
	c.send(proto.Ping{Nonce: 1}) // after every unsub
	for m := c.recv(); m.MessageType() != proto.TypePong; m = c.recv() {
	}
	waitFor(t, "no group left after every unsub", func() bool { return ts.groupCount() == 0 })
	_ = c.ws.Close(websocket.StatusNormalClosure, "")
	waitFor(t, "the session ended", func() bool { return ts.liveCount() == 0 })
	// The pools' idle readers and writers end after writerLinger.
	for end := time.Now().Add(4 * writerLinger); runtime.NumGoroutine() > goroutines+2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("%d goroutines after the session ended, %d before it began", runtime.NumGoroutine(), goroutines)
		}
	}
}

// subOK subscribes c to coll and waits for its first page.
func (c *liveClient) subOK(what, coll string) {
	c.t.Helper()
	c.send(proto.Sub{Collection: coll})
	if m, ok := c.recv().(proto.Changes); !ok || m.Collection != coll {
		c.t.Fatalf("%s: sub %s: %#v, want its changes", what, coll, m)
	}
}

// subRefused subscribes c to coll and wants it refused too_large, as a
// sub beyond Limits.MaxSubscriptions is.
func (c *liveClient) subRefused(what, coll string) {
	c.t.Helper()
	c.send(proto.Sub{Collection: coll})
	if e, ok := c.recv().(proto.ErrorMessage); !ok || e.Code != proto.CodeTooLarge || e.Collection != coll {
		c.t.Fatalf("%s: sub %s: %#v, want error %s for it", what, coll, e, proto.CodeTooLarge)
	}
}

// unsubDone unsubscribes c from coll and waits until the server has
// handled it (a ping after it is answered).
func (c *liveClient) unsubDone(coll string) {
	c.t.Helper()
	c.send(proto.Unsub{Collection: coll})
	c.send(proto.Ping{Nonce: 7})
	for m := c.recv(); m.MessageType() != proto.TypePong; m = c.recv() {
	}
}

// One subject's subscriptions are bounded across its sessions
// (Limits.MaxSubscriptionsPerSubject), or a subject could hold
// MaxSessionsPerSubject times MaxSubscriptions of them, each up to about
// 30 KiB of heap with a large scope. The sub beyond the bound is refused
// too_large, as one beyond a session's bound is, and the session stays
// open; a subscription ended by unsub or by its session's end makes room
// again; subscribing again to a collection replaces its subscription and
// takes no more room; another subject is not affected. Anonymous
// sessions count by client address.
func TestLiveSubscriptionsPerSubject(t *testing.T) {
	const limit = 3
	ts := newTestServer(t, func(c *Config) {
		trustLoopback(c)
		c.Demo = true
		c.Limits.Rate = -1
		c.Limits.MaxSubscriptionsPerSubject = limit
	})
	alice := ts.token(t, "alice", []string{"*"}, nil)
	a, m := ts.openFrom(t, "10.0.0.1", alice)
	if _, ok := m.(proto.Welcome); !ok {
		t.Fatalf("alice's first session: %#v", m)
	}
	b, m := ts.openFrom(t, "10.0.0.2", alice)
	if _, ok := m.(proto.Welcome); !ok {
		t.Fatalf("alice's second session: %#v", m)
	}
	a.subOK("alice a", "c0")
	a.subOK("alice a", "c1")
	b.subOK("alice b", "c2")
	b.subOK("alice b, again", "c2") // replaces its subscription
	b.subRefused("alice b, beyond the bound", "c3")
	a.subRefused("alice a, beyond the bound", "c3")
	// The sessions stay open: a re-sub within the bound is served.
	a.subOK("alice a, again", "c0")

	// Another subject is not affected.
	bob := ts.token(t, "bob", []string{"*"}, nil)
	o, m := ts.openFrom(t, "10.0.0.1", bob)
	if _, ok := m.(proto.Welcome); !ok {
		t.Fatalf("bob: %#v", m)
	}
	for i := range limit {
		o.subOK("bob", fmt.Sprintf("c%d", i))
	}

	// An unsub makes room, once.
	a.unsubDone("c0")
	b.subOK("alice b, after an unsub in a", "c3")
	b.subRefused("alice b, at the bound again", "c4")

	// So does the end of a session, for each of its subscriptions.
	_ = a.ws.Close(websocket.StatusNormalClosure, "")
	waitFor(t, "alice's session a ended", func() bool { return ts.liveCount() == 2 })
	b.subOK("alice b, after session a ended", "c4")
	b.subRefused("alice b, at the bound again", "c5")

	// Anonymous sessions (no subject) count by their client address.
	var anon []*liveClient
	for i := range limit {
		c, m := ts.openFrom(t, "10.0.0.9", "")
		if _, ok := m.(proto.Welcome); !ok {
			t.Fatalf("anonymous session %d: %#v", i, m)
		}
		c.subOK("anonymous from 10.0.0.9", DemoCollection)
		anon = append(anon, c)
	}
	c, _ := ts.openFrom(t, "10.0.0.9", "")
	c.subRefused("anonymous from 10.0.0.9, beyond the bound", DemoCollection)
	d, _ := ts.openFrom(t, "10.0.0.10", "")
	d.subOK("anonymous from 10.0.0.10", DemoCollection)
	anon[0].unsubDone(DemoCollection)
	c.subOK("anonymous from 10.0.0.9, after an unsub", DemoCollection)

	// Every session's end releases every subscription it held.
	for _, c := range append(anon, b, o, c, d) {
		_ = c.ws.Close(websocket.StatusNormalClosure, "")
	}
	waitFor(t, "every session ended", func() bool { return ts.liveCount() == 0 })
	if n := ts.heldSubscriptions(); n != 0 {
		t.Fatalf("%d subscriptions still counted after every session ended, want 0", n)
	}
}
