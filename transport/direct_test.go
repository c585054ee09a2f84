package transport

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/transport/proto"
)

// The counters of the broadcast's direct writes (liveConn.writeDirect) and
// of changes messages sent, as /metrics shows them.
const (
	metricDirectWhole   = `convergo_fanout_direct_writes_total{outcome="whole"}`
	metricDirectPartial = `convergo_fanout_direct_writes_total{outcome="partial"}`
	metricFanout        = `convergo_fanout_messages_total`
)

// A page offered to a connection with nothing else to write is written by
// the broadcast group itself, whole: no writer of the pool takes part, and
// it is counted once.
func TestLiveDirectWrites(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("direct writes are Linux's")
	}
	// No ping may be pending: it would go through a writer.
	ts := newTestServer(t, func(c *Config) { c.Demo = true; c.PingInterval, c.IdleTimeout = time.Hour, 2*time.Hour })
	c, _ := ts.open(t, "")
	c.send(proto.Sub{Collection: DemoCollection})
	if m, ok := c.recv().(proto.Changes); !ok || len(m.Records) != 0 {
		t.Fatalf("first page: %#v", m)
	}
	// The first page may have met the writer of the welcome still
	// finishing; from here on the connection is idle at every page. A
	// direct write is counted after the write the client read, under
	// wmu: taking wmu once waits for the first page's count, which must
	// not fall after the counters are read here.
	ts.srv.mu.Lock()
	for lc := range ts.srv.live {
		lc.wmu.Lock()
		lc.wmu.Unlock() // an empty section: it waits for the holder
	}
	ts.srv.mu.Unlock()
	whole, partial, pages := ts.metric(t, metricDirectWhole), ts.metric(t, metricDirectPartial), ts.metric(t, metricFanout)
	const n = 5
	for i := range n {
		id := fmt.Sprint("r", i)
		ts.push(t, "", change(t, DemoCollection, id, "f", i))
		if m, ok := c.recv().(proto.Changes); !ok || len(m.Records) != 1 || m.Records[0].ID != id {
			t.Fatalf("page %d: %#v", i, m)
		}
	}
	// The counters move just after the write the client read.
	waitFor(t, "count of direct writes", func() bool { return ts.metric(t, metricDirectWhole) >= whole+n })
	if got := ts.metric(t, metricDirectWhole) - whole; got != n {
		t.Errorf("%v pages written whole by the broadcast, want %d", got, n)
	}
	if got := ts.metric(t, metricDirectPartial) - partial; got != 0 {
		t.Errorf("%v pages written in part by the broadcast, want 0", got)
	}
	if got := ts.metric(t, metricFanout) - pages; got != n {
		t.Errorf("%v changes messages counted, want %d", got, n)
	}
}

// partialDirect is a session whose broadcast group wrote part of a page
// of bigRecords records of big and left the rest to the server's writers,
// which are held until release closes; pages is the count of changes
// messages before that page.
type partialDirect struct {
	ts      *testServer
	c       *rawClient
	sc      *liveConn
	release chan struct{}
	pages   float64
}

const bigRecords = 6 // of 120 KB: one page far larger than the socket buffers

var big = strings.Repeat("x", 120<<10)

func startPartialDirect(t *testing.T) partialDirect {
	t.Helper()
	ts := newTestServer(t, func(c *Config) {
		c.Demo = true
		c.PingInterval, c.IdleTimeout = time.Hour, 2*time.Hour
		c.WriteTimeout = time.Minute // the writer of the rest waits for the client to read
		c.Limits.Rate = -1
	})
	// The server's writers, held while hold is set until release
	// closes (no session runs yet: nothing reads the field).
	var hold atomic.Bool
	release := make(chan struct{})
	ts.srv.writers = newConnPool(&ts.srv.bg, func(c *liveConn) {
		if hold.Load() {
			<-release
		}
		c.flush()
	})
	c := rawDial(t, ts.URL)
	c.send(proto.Hello{Protocol: proto.Version, Replica: "reader"})
	if _, ok := c.recv().(proto.Welcome); !ok {
		t.Fatal("no welcome")
	}
	c.send(proto.Sub{Collection: DemoCollection})
	if _, ok := c.recv().(proto.Changes); !ok {
		t.Fatal("no first page")
	}
	ts.srv.mu.Lock()
	var sc *liveConn
	for lc := range ts.srv.live {
		sc = lc
	}
	ts.srv.mu.Unlock()
	if err := sc.raw.(*net.TCPConn).SetWriteBuffer(4 << 10); err != nil {
		t.Fatal(err)
	}
	partial, pages := ts.metric(t, metricDirectPartial), ts.metric(t, metricFanout)

	// The client does not read: the group writes what the socket
	// takes of the page and hands the rest to a writer, held.
	hold.Store(true)
	var cs []crdt.Change
	for i := range bigRecords {
		cs = append(cs, change(t, DemoCollection, fmt.Sprint("big", i), "f", big))
	}
	ts.push(t, "", cs...)
	waitFor(t, "partial direct write", func() bool { return ts.metric(t, metricDirectPartial) == partial+1 })
	return partialDirect{ts: ts, c: c, sc: sc, release: release, pages: pages}
}

// A page the socket takes only part of is finished by a writer before any
// other frame: control frames, messages queued meanwhile and a close
// frame all wait for its end, and the bytes on the wire are whole
// WebSocket frames, in order. The server's writers are held while the
// others queue, so that the writer of the rest comes after them.
func TestLiveDirectWritePartial(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("direct writes are Linux's")
	}
	for _, tc := range []struct {
		name  string
		close bool
	}{{"control frames and messages wait", false}, {"a close frame waits", true}} {
		t.Run(tc.name, func(t *testing.T) {
			pd := startPartialDirect(t)
			ts, c, sc, release, pages := pd.ts, pd.c, pd.sc, pd.release, pd.pages
			var want []string
			if tc.close {
				// A reserved opcode: the reader closes with 1002 at once
				// (closeWith), which must wait for the page's end.
				if _, err := c.conn.Write([]byte{0x80 | 0xB, 0x80, 0, 0, 0, 0}); err != nil {
					t.Fatal(err)
				}
				waitFor(t, "close", sc.closeSent.Load)
				want = []string{"close 1002"}
			} else {
				if err := wsutil.WriteClientMessage(c.conn, ws.OpPing, []byte("p1")); err != nil {
					t.Fatal(err)
				}
				c.send(proto.Ping{Nonce: 7})
				ts.push(t, "", change(t, DemoCollection, "small", "f", "s"))
				waitFor(t, "pong and two messages queued", func() bool {
					sc.qmu.Lock()
					defer sc.qmu.Unlock()
					return sc.wantP && len(sc.frames) >= 2
				})
				want = []string{"changes small", "pong p1", "pong 7"}
			}
			close(release)

			// Now the client reads: the page whole, then the rest.
			_ = c.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
			next := func() (ws.Header, []byte) {
				t.Helper()
				h, err := ws.ReadHeader(c.rw)
				if err != nil {
					t.Fatalf("frame header: %v", err)
				}
				if !h.Fin || h.Masked || h.Rsv != 0 || h.Length > 4<<20 {
					t.Fatalf("bad frame header %+v", h)
				}
				p := make([]byte, h.Length)
				if _, err := io.ReadFull(c.rw, p); err != nil {
					t.Fatalf("frame payload: %v", err)
				}
				return h, p
			}
			describe := func(h ws.Header, p []byte) string {
				t.Helper()
				switch h.OpCode {
				case ws.OpPong:
					return "pong " + string(p)
				case ws.OpClose:
					code, _ := ws.ParseCloseFrameData(p)
					return fmt.Sprint("close ", int(code))
				case ws.OpBinary:
					m, err := proto.DecodeServerMessage(p)
					if err != nil {
						t.Fatalf("message of %d bytes: %v", len(p), err)
					}
					switch m := m.(type) {
					case proto.Changes:
						if len(m.Records) != 1 {
							t.Fatalf("changes of %d records", len(m.Records))
						}
						return "changes " + m.Records[0].ID
					case proto.Pong:
						return fmt.Sprint("pong ", m.Nonce)
					}
					return fmt.Sprintf("%T", m)
				}
				return fmt.Sprint("opcode ", h.OpCode)
			}
			h, p := next()
			m, err := proto.DecodeServerMessage(p)
			if err != nil || h.OpCode != ws.OpBinary {
				t.Fatalf("first frame (op %v, %d bytes): %v", h.OpCode, len(p), err)
			}
			ch, ok := m.(proto.Changes)
			if !ok || len(ch.Records) != bigRecords {
				t.Fatalf("first frame is not the big page: %T", m)
			}
			for i, r := range ch.Records {
				if r.ID != fmt.Sprint("big", i) || !bytes.Equal(r.Fields["f"].Value, mustValue(t, big)) {
					t.Fatalf("record %d of the big page: %s", i, r.ID)
				}
			}
			got := map[string]bool{}
			for range want {
				h, p := next()
				got[describe(h, p)] = true
			}
			for _, w := range want {
				if !got[w] {
					t.Errorf("after the page: got %v, want %v", got, want)
				}
			}
			// The big page was counted once, when its write began.
			wantPages := 2.0
			if tc.close {
				wantPages = 1
			}
			if got := ts.metric(t, metricFanout) - pages; got != wantPages {
				t.Errorf("%v changes messages counted, want %v", got, wantPages)
			}
		})
	}
}

// A session that ends while a writer has yet to take the end of a page
// the group began leaves that page unfinished, and then writes nothing:
// the close frame waiting meanwhile does not go into the middle of the
// page, where the client would read it as the page's bytes.
func TestLiveDirectWriteUnfinished(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("direct writes are Linux's")
	}
	pd := startPartialDirect(t)
	c, sc := pd.c, pd.sc
	// A reserved opcode: the reader closes with 1002, and waits for the
	// page's end to write its close frame.
	if _, err := c.conn.Write([]byte{0x80 | 0xB, 0x80, 0, 0, 0, 0}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "close", sc.closeSent.Load)
	// The session ends before the writer takes the page's end.
	ended := make(chan struct{})
	go func() { defer close(ended); sc.finish(errClosedByUs) }()

	// The client reads all it is sent, to the socket's end.
	_ = c.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	got := make(chan []byte, 1)
	go func() { b, _ := io.ReadAll(c.rw); got <- b }()
	waitFor(t, "the close's end", sc.draining.Load)
	close(pd.release)
	<-ended
	stream := <-got

	h, err := ws.ReadHeader(bytes.NewReader(stream))
	if err != nil {
		t.Fatalf("frame header: %v", err)
	}
	if h.OpCode != ws.OpBinary || h.Length < int64(bigRecords*len(big)) {
		t.Fatalf("first frame is not the big page: %+v", h)
	}
	if ws.HeaderSize(h) > len(stream) || len(stream)-ws.HeaderSize(h) >= int(h.Length) {
		t.Fatalf("the page was finished (%d bytes of %d): a writer wrote its end", len(stream)-ws.HeaderSize(h), h.Length)
	}
	if cf := closeFrame(ws.StatusProtocolError, "reserved opcode"); bytes.Contains(stream, cf) {
		t.Errorf("the close frame came into the middle of the page: the stream's last bytes are %q", stream[len(stream)-len(cf):])
	}
}
