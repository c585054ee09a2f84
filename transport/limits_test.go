package transport

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/transport/proto"
)

// queuedBytes returns the most bytes any live connection of s has queued.
func (s *Server) queuedBytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var most int64
	for c := range s.live {
		c.qmu.Lock()
		most = max(most, c.qbytes)
		c.qmu.Unlock()
	}
	return most
}

// A client that stops reading holds at most MaxQueueBytes of queued pages,
// however many pages SendQueue would allow.
func TestLiveSendQueueBytes(t *testing.T) {
	const queueBytes = 256 << 10
	ts := newTestServer(t, func(c *Config) {
		c.Demo = true
		c.Limits.MaxPullRecords = 1
		c.Limits.SendQueue = 64
		c.Limits.MaxQueueBytes = queueBytes
		c.Limits.SlowConsumer = 2 * time.Second
		c.Limits.MaxBodyBytes = 64 << 20
		c.Limits.Rate = -1
	})
	// 16 MB of records of 100 KiB, more than the socket buffers of loopback
	// hold.
	value := strings.Repeat("x", 100<<10)
	for batch := range 4 {
		var cs []crdt.Change
		for i := range 40 {
			cs = append(cs, change(t, DemoCollection, fmt.Sprintf("r%d-%d", batch, i), "f", value))
		}
		ts.push(t, "", cs...)
	}
	c, _ := ts.open(t, "")
	c.send(proto.Sub{Collection: DemoCollection})
	// Not reading: watch the queue for a second at least, and until it has
	// filled, which on a loaded machine (the server reads and sends the
	// pages slower than loopback takes them) can take several seconds.
	var peak int64
	start := time.Now()
	for end := start.Add(30 * time.Second); time.Now().Before(end); time.Sleep(time.Millisecond) {
		peak = max(peak, ts.srv.queuedBytes())
		if peak >= 100<<10 && time.Since(start) >= time.Second {
			break
		}
	}
	t.Logf("peak queued bytes %d", peak)
	if peak > queueBytes {
		t.Fatalf("a connection queued %d bytes, want at most MaxQueueBytes %d", peak, queueBytes)
	}
	if peak < 100<<10 {
		t.Fatalf("a connection queued %d bytes at most: the queue never filled", peak)
	}
	// Reading again, the client gets the rest or a resync, never a closed
	// socket.
	for pages := 0; ; pages++ {
		m, err := c.recvErr(10 * time.Second)
		if err != nil {
			t.Fatalf("after %d pages: %v", pages, err)
		}
		if _, ok := m.(proto.Resync); ok {
			break
		}
		if p, ok := m.(proto.Changes); ok && !p.More {
			break
		}
	}
}

// A page larger than MaxQueueBytes still travels when the queue is empty.
func TestLiveSendQueueBytesLargePage(t *testing.T) {
	ts := newTestServer(t, func(c *Config) {
		c.Demo = true
		c.Limits.MaxQueueBytes = 1 << 10
	})
	ts.push(t, "", change(t, DemoCollection, "big", "f", strings.Repeat("x", 64<<10)))
	c, _ := ts.open(t, "")
	c.send(proto.Sub{Collection: DemoCollection})
	if m, ok := c.recv().(proto.Changes); !ok || len(m.Records) != 1 {
		t.Fatalf("got %+v, want the page of the large record", m)
	}
}

// Bodies in flight are bounded across the server: a request that finds no
// room within BodyWait is answered 503 unavailable with Retry-After.
func TestBodyBytesInFlight(t *testing.T) {
	ts := newTestServer(t, func(c *Config) {
		c.Demo = true
		c.Limits.MaxBodyBytes = 1 << 20
		c.Limits.MaxBodyBytesInFlight = 1 << 20
		c.Limits.Rate = -1
	})
	// A client declares a body of 1 MiB and sends a little of it.
	conn, err := net.Dial("tcp", ts.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\n%s: %d\r\nContent-Length: %d\r\n\r\n",
		proto.PathPush, proto.ContentType, proto.HeaderProtocol, proto.Version, 1<<20)
	if _, err := conn.Write(make([]byte, 1<<10)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the body's reservation", func() bool { return ts.srv.bodies.inUse() == 1<<20 })

	start := time.Now()
	a := ts.post(t, proto.PathPush, "", proto.PushRequest{Replica: "c1", Changes: []crdt.Change{change(t, DemoCollection, "r", "f", "v")}})
	took := time.Since(start)
	if a.status != http.StatusServiceUnavailable || a.errorCode(t) != proto.CodeUnavailable {
		t.Fatalf("over the budget: status %d, want 503 unavailable", a.status)
	}
	if ra, err := strconv.Atoi(a.header.Get(proto.HeaderRetryAfter)); err != nil || ra < 1 {
		t.Fatalf("Retry-After %q", a.header.Get(proto.HeaderRetryAfter))
	}
	if took < BodyWait/2 || took > 5*BodyWait {
		t.Fatalf("refused after %v, want about BodyWait %v", took, BodyWait)
	}
	if _, body := ts.get(t, "/metrics"); !strings.Contains(body, "convergo_body_budget_refused_total 1") {
		t.Fatal("refusal not counted in convergo_body_budget_refused_total")
	}

	// The budget comes back when the first request ends.
	conn.Close()
	waitFor(t, "the reservation's release", func() bool { return ts.srv.bodies.inUse() == 0 })
	ts.push(t, "", change(t, DemoCollection, "r", "f", "v"))
}

// A request whose body is declared larger than MaxBodyBytes is refused
// before it reserves anything.
func TestBodyDeclaredTooLarge(t *testing.T) {
	ts := newTestServer(t, func(c *Config) {
		c.Demo = true
		c.Limits.MaxBodyBytes = 1 << 10
	})
	a := ts.post(t, proto.PathPush, "", make([]byte, 4<<10))
	if a.status != http.StatusRequestEntityTooLarge || a.errorCode(t) != proto.CodeTooLarge {
		t.Fatalf("status %d, want 413 too_large", a.status)
	}
	if n := ts.srv.bodies.inUse(); n != 0 {
		t.Fatalf("%d bytes still reserved", n)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("no %s within 5s", what)
		}
	}
}

// The listener bounds connections per peer address and in total, for
// plain HTTP as for WebSockets; trusted proxies are exempt from the
// per-address bound.
func TestListenerLimits(t *testing.T) {
	ts := newTestServer(t, func(c *Config) {
		c.Limits.MaxConnsPerAddr = 2
		c.Limits.MaxConns = 4
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.9/32")}
	})
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: ts.srv, ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(ts.srv.Listener(raw))
	t.Cleanup(func() { hs.Close() })
	port := raw.Addr().(*net.TCPAddr).Port

	// dial opens a connection from local address from and reports whether
	// the server serves it.
	var open []net.Conn
	dial := func(from string) (net.Conn, bool) {
		t.Helper()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
		conn, err := d.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Fatalf("dial from %s: %v", from, err)
		}
		t.Cleanup(func() { conn.Close() })
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			return conn, false
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			return conn, false
		}
		resp.Body.Close()
		open = append(open, conn)
		return conn, resp.StatusCode == http.StatusOK
	}
	steps := []struct {
		from  string
		serve bool
	}{
		{"127.0.0.1", true},
		{"127.0.0.1", true},
		{"127.0.0.1", false}, // third of one address
		{"127.0.0.9", true},  // a trusted proxy
		{"127.0.0.9", true},  // is exempt from the per-address bound
		{"127.0.0.2", false}, // fifth in total
	}
	for i, s := range steps {
		if _, ok := dial(s.from); ok != s.serve {
			t.Fatalf("step %d from %s: served %v, want %v", i, s.from, ok, s.serve)
		}
	}
	// A closed connection frees its slot.
	open[0].Close()
	waitFor(t, "a free slot", func() bool {
		_, ok := dial("127.0.0.2")
		return ok
	})
	_, body := ts.get(t, "/metrics")
	for _, want := range []string{`convergo_conns_refused_total{reason="addr"} 1`, `convergo_conns_refused_total{reason="total"}`, "convergo_conns 4"} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// A host on IPv6 commonly holds a whole /64, so the per-address limits
// (rate buckets, connection counts) count an IPv6 client by its /64: from
// one /64 a client gets one bucket and one connection allowance, however
// many addresses it uses. IPv4 addresses count one by one.
func TestLimitsCountIPv6ByPrefix(t *testing.T) {
	ts := newTestServer(t, func(c *Config) {
		c.Demo = true
		c.Limits.Rate, c.Limits.Burst = 0.001, 1
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	})
	from := func(addr string) int {
		return ts.post(t, proto.PathPull, "", proto.PullRequest{Collection: DemoCollection},
			func(r *http.Request) { r.Header.Set("X-Forwarded-For", addr) }).status
	}
	for i, step := range []struct {
		addr string
		want int
	}{
		{"2001:db8:1:2::1", http.StatusOK},
		{"2001:db8:1:2:ffff:ffff:ffff:fffe", http.StatusTooManyRequests}, // the same /64
		{"2001:db8:1:3::1", http.StatusOK},                               // the next /64
		{"192.0.2.1", http.StatusOK},
		{"192.0.2.2", http.StatusOK}, // IPv4: one address each
		{"::ffff:192.0.2.3", http.StatusOK},
		{"192.0.2.3", http.StatusTooManyRequests}, // the same address, mapped or not
	} {
		if got := from(step.addr); got != step.want {
			t.Errorf("step %d from %s: status %d, want %d", i, step.addr, got, step.want)
		}
	}

	// The listener counts connections the same way.
	a, _ := ts.srv.peer(&net.TCPAddr{IP: net.ParseIP("2001:db8::1")})
	b, _ := ts.srv.peer(&net.TCPAddr{IP: net.ParseIP("2001:db8::ffff:1")})
	c, _ := ts.srv.peer(&net.TCPAddr{IP: net.ParseIP("2001:db8:0:1::1")})
	if a != b || a == c {
		t.Errorf("listener keys: %q and %q (one /64) should match, %q (another) differ", a, b, c)
	}
	v4a, _ := ts.srv.peer(&net.TCPAddr{IP: net.ParseIP("192.0.2.1")})
	v4b, _ := ts.srv.peer(&net.TCPAddr{IP: net.ParseIP("192.0.2.2")})
	if v4a == v4b {
		t.Errorf("listener keys of two IPv4 addresses match: %q", v4a)
	}
}

// TestLimitsValidateNamesTheField: what New takes of the limits an
// embedder gives (Validate after WithDefaults): a zero field is its
// default, a negative Rate is no limit (whatever Burst), and a field out
// of its bounds is a *LimitError naming it.
func TestLimitsValidateNamesTheField(t *testing.T) {
	for _, l := range []Limits{{}, {Rate: -1, Burst: -1}, {MaxBodyBytes: MaxByteLimit, MaxBodyBytesInFlight: MaxByteLimit, MaxAnswerBytesInFlight: MaxByteLimit}} {
		if err := l.WithDefaults().Validate(); err != nil {
			t.Errorf("%+v: %v, want it taken", l, err)
		}
	}
	for _, c := range []struct {
		field string
		l     Limits
	}{
		{"Rate", Limits{Rate: math.NaN()}},
		{"Burst", Limits{Burst: -1}},
		{"SlowConsumer", Limits{SlowConsumer: -time.Second}},
		{"RequestTimeout", Limits{RequestTimeout: -time.Second}},
		{"MaxPushChanges", Limits{MaxPushChanges: crdt.MaxContainerItems + 1}},
		{"MaxPullRecords", Limits{MaxPullRecords: engine.MaxPage + 1}},
		{"MaxBodyBytes", Limits{MaxBodyBytes: -1}},
		{"MaxConns", Limits{MaxConns: -1}},
		// Byte limits are summed in the budgets of bytes in flight
		// (a body of MaxBodyBytes beside those held): near the largest
		// int64 the sum would wrap and let anything in.
		{"MaxBodyBytes", Limits{MaxBodyBytes: math.MaxInt64}},
		{"MaxBodyBytes", Limits{MaxBodyBytes: MaxByteLimit + 1}},
		{"MaxMessageBytes", Limits{MaxMessageBytes: math.MaxInt64}},
		{"MaxPageBytes", Limits{MaxPageBytes: math.MaxInt}},
		{"MaxQueueBytes", Limits{MaxQueueBytes: math.MaxInt64}},
		{"MaxBodyBytesInFlight", Limits{MaxBodyBytesInFlight: math.MaxInt64}},
		{"MaxAnswerBytesInFlight", Limits{MaxAnswerBytesInFlight: math.MaxInt64}},
	} {
		err := c.l.WithDefaults().Validate()
		var le *LimitError
		if !errors.As(err, &le) || le.Field != c.field {
			t.Errorf("%s out of bounds: %v, want a *LimitError naming it", c.field, err)
		}
	}
}
