package transport

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/transport/proto"
)

// trickle sends the headers of a push whose body is declared size bytes
// and sends none of it, as a client that holds its request open would,
// then reads its answer, if any, on a goroutine: answered counts it and
// codes receives its error code.
func trickle(t *testing.T, ts *testServer, token string, size int, answered *atomic.Int32, codes chan<- string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", ts.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: %s\r\n%s: %d\r\nContent-Length: %d\r\n\r\n",
		proto.PathPush, token, proto.ContentType, proto.HeaderProtocol, proto.Version, size)
	go func() {
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			return // closed by the test
		}
		resp.Body.Close()
		answered.Add(1)
		codes <- fmt.Sprintf("%d %s %s", resp.StatusCode, resp.Header.Get(proto.HeaderError), resp.Header.Get(proto.HeaderRetryAfter))
	}()
	return conn
}

// One subject that declares bodies and sends none of them holds at most
// its share of the bodies in flight, a quarter of MaxBodyBytesInFlight:
// its requests beyond the share are answered 429 rate_limited with
// Retry-After, and another tenant's push is served meanwhile, rather than
// answered 503 for as long as the first one trickles.
func TestBodyShareOfOneClient(t *testing.T) {
	const body = 1 << 20
	ts := newTestServer(t, func(c *Config) {
		c.Limits.MaxBodyBytes = body
		c.Limits.MaxBodyBytesInFlight = 4 * body
		c.Limits.Rate = -1
	})
	mallory := ts.token(t, "mallory", []string{"notes"}, []string{"notes"})
	alice := ts.token(t, "alice", []string{"notes"}, []string{"notes"})

	// Mallory opens as many requests as fill the whole budget.
	var answered atomic.Int32
	codes := make(chan string, 4)
	for range 4 {
		trickle(t, ts, mallory, body, &answered, codes)
	}
	// Each of them either holds its body's room or has been answered.
	waitFor(t, "mallory's requests reserved or answered", func() bool {
		return ts.srv.bodies.inUse()+int64(answered.Load())*body == 4*body
	})
	if held := ts.srv.bodies.inUse(); held > body {
		t.Errorf("one subject holds %d bytes of the %d in flight, more than its share %d", held, 4*body, body)
	}
	for range answered.Load() {
		if got, want := <-codes, "429 rate_limited 1"; got != want {
			t.Errorf("a request beyond the subject's share: %q, want %q", got, want)
		}
	}

	// Alice's push is served beside them.
	a := ts.post(t, proto.PathPush, alice, proto.PushRequest{Replica: ownReplica, Changes: []crdt.Change{change(t, "notes", "r", "f", "v")}})
	if a.status != http.StatusOK {
		t.Fatalf("another tenant's push beside one that holds its bodies: status %d %s, want 200", a.status, a.header.Get(proto.HeaderError))
	}

	// Over a live session alike: mallory's push finds her share taken,
	// alice's is served.
	mc, ms := ts.openPusher(t, mallory)
	ts.pushLive(t, mc, ms, mallory, change(t, "notes", "m", "f", 1))
	if p := recvPushed(t, mc); p.Code != proto.CodeRateLimited {
		t.Fatalf("live push of a subject that holds its share: %+v, want pushed rate_limited", p)
	}
	ac, as := ts.openPusher(t, alice)
	ts.pushLive(t, ac, as, alice, change(t, "notes", "a", "f", 1))
	if p := recvPushed(t, ac); len(p.Results) != 1 || p.Results[0].Status != proto.StatusApplied {
		t.Fatalf("another tenant's live push beside one that holds its bodies: %+v", p)
	}
}

// What a client's pushes hold decoded counts in its share too: beside a
// push of its own held in flight, a push whose body fits in the share but
// whose decoded changes do not is refused rate_limited, over a live
// session and over HTTP, and gives back what it took; alone in flight it
// is served.
func TestBodyShareDecoded(t *testing.T) {
	ts, gate := newGatedServer(t, func(c *Config) { c.Limits.MaxBodyBytesInFlight = 2 << 20 })
	tok := ts.token(t, "alice", []string{"notes"}, []string{"notes"})
	a, sa := ts.openPusher(t, tok)
	b, sb := ts.openPusher(t, tok)
	gate.close()
	ts.pushLive(t, a, sa, tok, change(t, "notes", "a", "f", 1)) // held in flight
	gate.waitEntered(t)
	held := ts.srv.bodies.inUse()

	big := tinyFields(t, 1000, 20) // about 200 KiB, some 4.5 MiB decoded
	if body, err := proto.Encode(proto.PushRequest{Replica: ownReplica, Changes: big}); err != nil || int64(len(body))+held > clientShare(2<<20) {
		t.Fatalf("the push's body (%d bytes, %v) does not fit in the share beside the held one", len(body), err)
	}
	ts.pushLive(t, b, sb, tok, big...)
	m, err := b.recvErr(refusedWithin)
	if p, ok := m.(proto.Pushed); err != nil || !ok || p.Code != proto.CodeRateLimited {
		t.Fatalf("live push decoded over the share beside the client's own: %#v, %v; want pushed rate_limited", m, err)
	}
	if got := ts.post(t, proto.PathPush, tok, proto.PushRequest{Replica: ownReplica, Changes: big}); got.status != http.StatusTooManyRequests || got.errorCode(t) != proto.CodeRateLimited {
		t.Fatalf("HTTP push decoded over the share beside the client's own: status %d, want 429 rate_limited", got.status)
	}
	if got := ts.srv.bodies.inUse(); got != held {
		t.Fatalf("%d bytes held after the refusals, want the held push's %d", got, held)
	}
	gate.open()
	if p := recvPushed(t, a); len(p.Results) != 1 || p.Results[0].Status != proto.StatusApplied {
		t.Fatalf("held push: %+v", p)
	}
	waitFor(t, "the held push's room given back", func() bool { return ts.srv.bodies.inUse() == 0 })
	if res := ts.push(t, tok, big...); res[0].Status != proto.StatusApplied {
		t.Fatalf("the push alone: %+v", res[0])
	}
	if got := ts.srv.bodies.inUse(); got != 0 {
		t.Fatalf("%d bytes still held after the pushes", got)
	}
}
