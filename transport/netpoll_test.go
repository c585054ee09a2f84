package transport

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/convergo/convergo/transport/proto"
)

// The live tests again, on the path of connections that cannot be polled:
// a reader goroutine per connection (TLS, other systems). The slow-consumer
// test is left out: it tests the writers, which both paths share, and
// takes half a minute under -race.
func TestLiveFallback(t *testing.T) {
	liveNoPoll = true
	defer func() { liveNoPoll = false }()
	for _, tc := range []struct {
		name string
		f    func(*testing.T)
	}{
		{"StreamsChanges", TestLiveStreamsChanges},
		{"CatchUpPages", TestLiveCatchUpPages},
		{"Refusals", TestLiveRefusals},
		{"MessageTooBig", TestLiveMessageTooBig},
		{"ConnLimit", TestLiveConnLimit},
		{"TokenExpiry", TestLiveTokenExpiry},
		{"IdleTimeout", TestLiveIdleTimeout},
		{"Shutdown", TestLiveShutdown},
		{"RateLimit", TestLiveRateLimit},
		{"HelloTimeout", TestLiveHelloTimeout},
		{"SubscriptionLimit", TestLiveSubscriptionLimit},
		{"Versioning", TestLiveVersioning},
		{"Trickle", TestLiveTrickleClosed},
		{"EndlessFragments", TestLiveEndlessFragmentsClosed},
		{"UpgradeBytes", TestLiveUpgradeBytesKept},
		{"FragmentLengthOverflow", TestLiveFragmentLengthOverflow},
		{"BadFrameLength", TestLiveBadFrameLength},
	} {
		t.Run(tc.name, tc.f)
	}
}

// rawClient is a WebSocket client without goroutines of its own
// (gobwas/ws), writing frames as the test wants them.
type rawClient struct {
	t    *testing.T
	conn net.Conn
	rw   io.ReadWriter
}

func wsURL(base string) string { return "ws" + strings.TrimPrefix(base, "http") + proto.PathLive }

func rawDial(t *testing.T, base string) *rawClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, br, _, err := ws.Dial(ctx, wsURL(base))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	var r io.Reader = conn
	if br != nil {
		r = br
	}
	return &rawClient{t: t, conn: conn, rw: struct {
		io.Reader
		io.Writer
	}{r, conn}}
}

func (c *rawClient) send(m proto.Message) {
	c.t.Helper()
	b, err := proto.EncodeMessage(m)
	if err != nil {
		c.t.Fatal(err)
	}
	if err := wsutil.WriteClientBinary(c.conn, b); err != nil {
		c.t.Fatalf("send %T: %v", m, err)
	}
}

// recvErr reads the server's next message. A close frame is returned as
// a wsutil.ClosedError without being answered: the server may have ended
// the socket behind it, and an answer (as wsutil's reader writes) would
// then fail with a broken pipe in place of the close. A ping is answered.
func (c *rawClient) recvErr() (proto.Message, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	var msg []byte
	for {
		f, err := ws.ReadFrame(c.rw)
		if err != nil {
			return nil, err
		}
		switch f.Header.OpCode {
		case ws.OpClose:
			code, reason := ws.ParseCloseFrameData(f.Payload)
			return nil, wsutil.ClosedError{Code: code, Reason: reason}
		case ws.OpPing:
			_ = wsutil.WriteClientMessage(c.conn, ws.OpPong, f.Payload)
			continue
		case ws.OpPong:
			continue
		}
		msg = append(msg, f.Payload...)
		if f.Header.Fin {
			return proto.DecodeServerMessage(msg)
		}
	}
}

func (c *rawClient) recv() proto.Message {
	c.t.Helper()
	m, err := c.recvErr()
	if err != nil {
		c.t.Fatalf("recv: %v", err)
	}
	return m
}

// A client that begins a frame and trickles the rest slower than
// WriteTimeout is closed with 1008 and a stable reason: a message in
// progress holds a reader only that long.
func TestLiveTrickleClosed(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.Demo = true; c.WriteTimeout = 300 * time.Millisecond })
	c := rawDial(t, ts.URL)
	// The header of a masked binary frame of 50 bytes, and 10 of them.
	h := ws.Header{Fin: true, OpCode: ws.OpBinary, Masked: true, Mask: ws.NewMask(), Length: 50}
	if err := ws.WriteHeader(c.conn, h); err != nil {
		t.Fatal(err)
	}
	if _, err := c.conn.Write(make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := c.recvErr()
	var closed wsutil.ClosedError
	if !errors.As(err, &closed) || closed.Code != ws.StatusPolicyViolation || closed.Reason != reasonReadTimeout {
		t.Fatalf("got %v, want close 1008 %q", err, reasonReadTimeout)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Fatalf("closed after %v, before the read deadline", d)
	}
	// A client that sends its message whole is served.
	d := rawDial(t, ts.URL)
	d.send(proto.Hello{Protocol: proto.Version, Replica: "c1"})
	if _, ok := d.recv().(proto.Welcome); !ok {
		t.Fatal("no welcome")
	}
}

// A continuation frame whose length, added to the fragments before it,
// would overflow is over the size limit like any other (close 1009), not
// a panic of the reader.
func TestLiveFragmentLengthOverflow(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.Demo = true })
	c := rawDial(t, ts.URL)
	first := ws.Header{OpCode: ws.OpBinary, Masked: true, Mask: ws.NewMask(), Length: 10}
	if err := ws.WriteHeader(c.conn, first); err != nil {
		t.Fatal(err)
	}
	if _, err := c.conn.Write(make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	next := ws.Header{Fin: true, OpCode: ws.OpContinuation, Masked: true, Mask: ws.NewMask(), Length: math.MaxInt64 - 5}
	if err := ws.WriteHeader(c.conn, next); err != nil {
		t.Fatal(err)
	}
	_, err := c.recvErr()
	var closed wsutil.ClosedError
	if !errors.As(err, &closed) || closed.Code != ws.StatusMessageTooBig {
		t.Fatalf("got %v, want close 1009", err)
	}
}

// A frame header with a length RFC 6455 forbids (the most significant
// bit of a 64-bit length set) is told to the client: close 1002.
func TestLiveBadFrameLength(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.Demo = true })
	c := rawDial(t, ts.URL)
	hdr := []byte{0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4}
	if _, err := c.conn.Write(hdr); err != nil {
		t.Fatal(err)
	}
	_, err := c.recvErr()
	var closed wsutil.ClosedError
	if !errors.As(err, &closed) || closed.Code != ws.StatusProtocolError {
		t.Fatalf("got %v, want close 1002", err)
	}
}

// TestLiveBadControlFrames: a frame RFC 6455 forbids from a client fails
// the session with 1002 (a reserved opcode, a close frame whose body is
// one byte, a status that may not go on the wire, one past the last RFC
// 6455 gives a range to (4999), or a reason that is not UTF-8), and its
// close status is not echoed; a well-formed close is.
func TestLiveBadControlFrames(t *testing.T) {
	// frame is a final, masked frame of op with payload (mask key 0:
	// the payload as it is).
	frame := func(op byte, payload []byte) []byte {
		return append([]byte{0x80 | op, 0x80 | byte(len(payload)), 0, 0, 0, 0}, payload...)
	}
	closeBody := func(code uint16, reason string) []byte {
		return append([]byte{byte(code >> 8), byte(code)}, reason...)
	}
	for name, tc := range map[string]struct {
		frame []byte
		want  ws.StatusCode
	}{
		"reserved control opcode": {frame(0xB, nil), ws.StatusProtocolError},
		"reserved data opcode":    {frame(0x3, []byte("x")), ws.StatusProtocolError},
		"close of one byte":       {frame(0x8, []byte{3}), ws.StatusProtocolError},
		"close status 1005":       {frame(0x8, closeBody(1005, "")), ws.StatusProtocolError},
		"close status 999":        {frame(0x8, closeBody(999, "")), ws.StatusProtocolError},
		"close status 5000":       {frame(0x8, closeBody(5000, "")), ws.StatusProtocolError},
		"close status 65535":      {frame(0x8, closeBody(65535, "x")), ws.StatusProtocolError},
		"close reason not UTF-8":  {frame(0x8, closeBody(1000, "\xff")), ws.StatusProtocolError},
		"close 4000, echoed":      {frame(0x8, closeBody(4000, "bye")), 4000},
		"close without a body":    {frame(0x8, nil), ws.StatusNormalClosure},
	} {
		t.Run(name, func(t *testing.T) {
			ts := newTestServer(t, func(c *Config) { c.Demo = true })
			c := rawDial(t, ts.URL)
			if _, err := c.conn.Write(tc.frame); err != nil {
				t.Fatal(err)
			}
			_, err := c.recvErr()
			var closed wsutil.ClosedError
			if !errors.As(err, &closed) || closed.Code != tc.want {
				t.Fatalf("got %v, want close %d", err, tc.want)
			}
		})
	}
}

// Bytes a client sends right behind its upgrade request, before the
// answer, are read: net/http may hold them in its buffer at the hijack.
func TestLiveUpgradeBytesKept(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.Demo = true })
	conn, err := net.Dial("tcp", strings.TrimPrefix(ts.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hello, err := proto.EncodeMessage(proto.Hello{Protocol: proto.Version, Replica: "c1"})
	if err != nil {
		t.Fatal(err)
	}
	ping, _ := proto.EncodeMessage(proto.Ping{Nonce: 7})
	var req strings.Builder
	fmt.Fprintf(&req, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", proto.PathLive, strings.TrimPrefix(ts.URL, "http://"))
	var frames strings.Builder
	for _, m := range [][]byte{hello, ping} {
		if err := wsutil.WriteClientBinary(&frames, m); err != nil {
			t.Fatal(err)
		}
	}
	// One write: the request and two messages arrive together.
	if _, err := conn.Write([]byte(req.String() + frames.String())); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get(proto.HeaderRequestID) == "" {
		t.Fatalf("upgrade answered %d, request id %q", resp.StatusCode, resp.Header.Get(proto.HeaderRequestID))
	}
	rw := struct {
		io.Reader
		io.Writer
	}{br, conn}
	for _, want := range []string{proto.TypeWelcome, proto.TypePong} {
		b, err := wsutil.ReadServerBinary(rw)
		if err != nil {
			t.Fatalf("waiting for %s: %v", want, err)
		}
		m, err := proto.DecodeServerMessage(b)
		if err != nil || m.MessageType() != want {
			t.Fatalf("got %v (%v), want %s", m, err, want)
		}
	}
}

// An idle subscribed session holds no goroutine on the netpoll path, also
// behind the server's Listener, and also when its subscription is alone in
// its broadcast group (its own scope): an idle group holds none either. On
// the fallback path a session holds its reader, which shows that the count
// sees sessions.
func TestLiveIdleHoldsNoGoroutine(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the epoll loop is Linux's")
	}
	const n = 200
	for _, tc := range []struct {
		name      string
		noPoll    bool
		ownGroups bool // every subscription in a group of its own
	}{{"polled", false, false}, {"fallback", true, false}, {"polled, a group each", false, true}} {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestServer(t, func(c *Config) {
				c.Demo = true
				c.noPoll = tc.noPoll
				c.Limits.MaxConnsPerAddr = 2 * n
				c.Limits.Rate, c.Limits.Burst = 1e6, 1e6
			})
			// Serve through the server's Listener, as `convergo serve` does.
			srv := httptest.NewUnstartedServer(ts.Config.Handler)
			srv.Listener = ts.srv.Listener(srv.Listener)
			srv.Start()
			defer srv.Close()
			open := func(replica string) *rawClient {
				c := rawDial(t, srv.URL)
				c.send(proto.Hello{Protocol: proto.Version, Replica: replica})
				if _, ok := c.recv().(proto.Welcome); !ok {
					t.Fatal("no welcome")
				}
				sub := proto.Sub{Collection: DemoCollection}
				if tc.ownGroups {
					sub.Scope = mustScope(t, fmt.Sprintf(`owner == %q`, replica)).Encode()
				}
				c.send(sub)
				if _, ok := c.recv().(proto.Changes); !ok {
					t.Fatal("no first page")
				}
				return c
			}
			open("warm") // the group, the pinger and the poller run
			// A group's goroutine ends after its first pages are sent,
			// which on a loaded machine can be well after the client has
			// them: count once every group is idle.
			waitFor(t, "idle groups", ts.groupsIdle)
			time.Sleep(100 * time.Millisecond)
			before := runtime.NumGoroutine()
			clients := make([]*rawClient, n)
			for i := range clients {
				clients[i] = open(fmt.Sprintf("c%d", i))
			}
			waitFor(t, "idle groups", ts.groupsIdle)
			time.Sleep(200 * time.Millisecond)
			grew := runtime.NumGoroutine() - before
			t.Logf("%d idle sessions: %d goroutines more", n, grew)
			switch {
			case !tc.noPoll && grew > n/10:
				t.Fatalf("%d idle sessions hold %d goroutines, want far fewer", n, grew)
			case tc.noPoll && grew < n:
				t.Fatalf("%d idle sessions read by goroutines hold only %d goroutines: the count misses them", n, grew)
			}
			if tc.ownGroups {
				ts.srv.hub.mu.Lock()
				groups := len(ts.srv.hub.groups)
				ts.srv.hub.mu.Unlock()
				if groups != n+1 {
					t.Fatalf("%d broadcast groups, want %d", groups, n+1)
				}
			}
			// They are still served.
			last := clients[n-1]
			last.send(proto.Ping{Nonce: 9})
			if p, ok := last.recv().(proto.Pong); !ok || p.Nonce != 9 {
				t.Fatalf("pong %+v", p)
			}
		})
	}
}
