package transport

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/transport/proto"
)

// smallSendBuffers gives every connection it accepts a small send buffer,
// so that the server's write of an answer waits for the client's reads
// beyond a few KiB, whatever loopback's buffers would otherwise take.
type smallSendBuffers struct{ net.Listener }

func (l smallSendBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(4 << 10)
	}
	return c, err
}

// pullUnread posts a pull of coll from the start on a connection of its
// own, with a small receive buffer, and reads only the answer's status
// line and headers: "status code Retry-After" goes to codes. The answer's
// body is never read, so a page of it holds the server's write until the
// connection closes.
func pullUnread(t *testing.T, url, token, coll string, codes chan<- string) net.Conn {
	t.Helper()
	body, err := proto.Encode(proto.PullRequest{Collection: coll})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.(*net.TCPConn).SetReadBuffer(4 << 10)
	fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: %s\r\n%s: %d\r\nContent-Length: %d\r\n\r\n%s",
		proto.PathPull, token, proto.ContentType, proto.HeaderProtocol, proto.Version, len(body), body)
	go func() {
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			codes <- "no answer: " + err.Error()
			return
		}
		codes <- fmt.Sprintf("%d %s %s", resp.StatusCode, resp.Header.Get(proto.HeaderError), resp.Header.Get(proto.HeaderRetryAfter))
	}()
	return conn
}

// newPagesServer starts a test server (edit adjusts its config, beside
// no rate limit) and serves it again with small send buffers (srv), so
// that a page unread holds its write; "notes" holds 12 records of
// 100 KiB, so a page from the start holds MaxPageBytes of them, 1 MiB.
func newPagesServer(t *testing.T, edit func(*Config)) (ts *testServer, srv *httptest.Server) {
	t.Helper()
	ts = newTestServer(t, func(c *Config) {
		c.Limits.Rate = -1
		if edit != nil {
			edit(c)
		}
	})
	srv = httptest.NewUnstartedServer(ts.Config.Handler)
	srv.Listener = smallSendBuffers{srv.Listener}
	srv.Start()
	t.Cleanup(srv.Close)
	value := strings.Repeat("x", 100<<10)
	var cs []crdt.Change
	for i := range 12 {
		cs = append(cs, change(t, "notes", "r"+strconv.Itoa(i), "f", value))
	}
	ts.push(t, ts.token(t, "writer", nil, []string{"notes"}), cs...)
	return ts, srv
}

// One subject that opens many pulls of large pages and reads none of
// their answers holds at most its share of the answers in flight, a
// quarter of MaxAnswerBytesInFlight in all: its pulls beyond
// it are answered 429 rate_limited with Retry-After before their pages
// are read, rather than each holding a page for the write timeout.
// Another tenant's pull is served meanwhile, and what the unread answers
// held is given back once their connections close.
func TestAnswerShareOfOneClient(t *testing.T) {
	ts, srv := newPagesServer(t, nil)
	mallory := ts.token(t, "mallory", []string{"notes"}, []string{"notes"})
	alice := ts.token(t, "alice", []string{"notes"}, []string{"notes"})

	// Mallory opens pulls of 24 pages, more than her share of the
	// answers in flight (16 MiB by default) and reads none of them.
	const pulls = 24
	codes := make(chan string, pulls)
	for range pulls {
		pullUnread(t, srv.URL, mallory, "notes", codes)
	}
	served, refused := 0, 0
	for range pulls {
		switch got := <-codes; got {
		case "200  ":
			served++
		case "429 rate_limited 1":
			refused++
		default:
			t.Errorf("a pull of a subject that does not read its answers: %q, want 200 or 429 rate_limited 1", got)
		}
	}
	// What the server holds for her answers is her share at most.
	share := clientShare(DefaultMaxAnswerBytesInFlight)
	if held := ts.srv.answers.inUse(); refused == 0 || held > share {
		t.Errorf("%d pulls of one subject hold their answers unread, %d bytes, %d refused: want at most her share, %d bytes",
			served, held, refused, share)
	}

	// Alice's pull is served beside them.
	a := ts.post(t, proto.PathPull, alice, proto.PullRequest{Collection: "notes"})
	if a.status != http.StatusOK {
		t.Fatalf("another tenant's pull beside unread ones: status %d %s, want 200", a.status, a.header.Get(proto.HeaderError))
	}
	var page1 proto.PullResponse
	if err := proto.Decode(a.body, &page1); err != nil || len(page1.Records) == 0 {
		t.Fatalf("another tenant's pull: %d records, %v", len(page1.Records), err)
	}

	// Closed, mallory's connections give back what their answers held.
	srv.CloseClientConnections()
	waitFor(t, "the unread answers' room given back", func() bool { return ts.srv.answers.inUse() == 0 })
}

// The answers in flight bound what all clients' pulls hold together:
// with two other tenants' answers unread filling MaxAnswerBytesInFlight,
// a third tenant's pull is answered 503 unavailable with Retry-After
// (and counted) rather than read, and served once they are given back.
func TestAnswerBudgetFull(t *testing.T) {
	var most int64
	ts, srv := newPagesServer(t, func(c *Config) {
		most = 2 * c.Limits.WithDefaults().pullAnswerBytes()
		c.Limits.MaxAnswerBytesInFlight = most
	})
	codes := make(chan string, 2)
	for _, sub := range []string{"mallory", "bob"} {
		pullUnread(t, srv.URL, ts.token(t, sub, []string{"notes"}, nil), "notes", codes)
		if got := <-codes; got != "200  " {
			t.Fatalf("%s's pull: %q, want 200", sub, got)
		}
	}
	if held := ts.srv.answers.inUse(); held > most {
		t.Fatalf("the answers in flight hold %d bytes, more than their %d", held, most)
	}
	alice := ts.token(t, "alice", []string{"notes"}, nil)
	a := ts.post(t, proto.PathPull, alice, proto.PullRequest{Collection: "notes"})
	if a.status != http.StatusServiceUnavailable || a.errorCode(t) != proto.CodeUnavailable || a.header.Get(proto.HeaderRetryAfter) != "1" {
		t.Fatalf("a pull beside unread answers filling the budget: status %d %s, want 503 unavailable with Retry-After: 1",
			a.status, a.header.Get(proto.HeaderError))
	}
	if got := ts.metric(t, "convergo_answer_budget_refused_total"); got != 1 {
		t.Errorf("convergo_answer_budget_refused_total %v, want 1", got)
	}
	srv.CloseClientConnections()
	waitFor(t, "the unread answers' room given back", func() bool { return ts.srv.answers.inUse() == 0 })
	if got := ts.metric(t, "convergo_answer_bytes_in_flight"); got != 0 {
		t.Errorf("convergo_answer_bytes_in_flight %v once the answers are given back, want 0", got)
	}
	if a := ts.post(t, proto.PathPull, alice, proto.PullRequest{Collection: "notes"}); a.status != http.StatusOK {
		t.Fatalf("the pull once the budget is free: status %d %s, want 200", a.status, a.header.Get(proto.HeaderError))
	}
}

// A holder's resize gives back what its answer does not need, waking
// those waiting for room, and takes what it needs beyond its
// reservation whether it fits or not: an answer let in is never cut.
func TestBudgetResize(t *testing.T) {
	for _, tc := range []struct {
		name          string
		own, n        int64
		used, byOwner int64 // after the resize
	}{
		{"shrinks", 60, 10, 10 + 30, 10},
		{"keeps", 60, 60, 60 + 30, 60},
		{"grows over the budget", 60, 90, 90 + 30, 90},
		{"to nothing", 60, 0, 30, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBudget(100, 100)
			if why := b.take(tc.own, "a", 0, nil); why != budgetTaken {
				t.Fatalf("take %d: %v", tc.own, why)
			}
			if why := b.take(30, "b", 0, nil); why != budgetTaken {
				t.Fatalf("take 30 beside: %v", why)
			}
			_, free := b.tryTake(100, "c")
			b.resize(tc.own, tc.n, "a")
			if got := b.inUse(); got != tc.used {
				t.Errorf("used %d, want %d", got, tc.used)
			}
			if got := b.byKey["a"]; got != tc.byOwner {
				t.Errorf("the holder's client holds %d, want %d", got, tc.byOwner)
			}
			select {
			case <-free:
				if tc.n >= tc.own {
					t.Errorf("a resize from %d to %d woke those waiting for room", tc.own, tc.n)
				}
			default:
				if tc.n < tc.own {
					t.Errorf("a resize from %d to %d gave room back and woke no one", tc.own, tc.n)
				}
			}
		})
	}
}

// What the byte limits allow (MaxByteLimit) sums without wrapping in a
// budget: a body of MaxBodyBytes at its largest, declared by no
// Content-Length, beside another held, is refused, not let in by a sum
// that wrapped negative.
func TestBudgetAtMaxByteLimit(t *testing.T) {
	b := newBudget(MaxByteLimit, clientShare(MaxByteLimit))
	if why := b.take(MaxByteLimit, "a", 0, nil); why != budgetTaken {
		t.Fatalf("a body alone: %v, want it taken", why)
	}
	if why := b.take(MaxByteLimit, "b", 0, nil); why != budgetFull {
		t.Fatalf("a second body of MaxByteLimit: %v, want budgetFull", why)
	}
	if why := b.takeBeside(MaxByteLimit, MaxByteLimit+MaxByteLimit, "a"); why != budgetFull && why != budgetOverShare {
		t.Fatalf("decoded bytes beside a body of MaxByteLimit: %v, want refused", why)
	}
}
