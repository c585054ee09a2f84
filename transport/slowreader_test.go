package transport

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/transport/proto"
)

// A client that reads its session one byte at a time, never stalled but
// far slower than its pages come, is closed once a write waits for it
// longer than WriteTimeout: its progress within a write does not extend
// the write's deadline, so it holds a writer and its queue only that long.
func TestLiveByteReaderClosed(t *testing.T) {
	ts := newTestServer(t, func(c *Config) {
		c.Demo = true
		c.Limits.MaxBodyBytes = 64 << 20
		c.Limits.Rate = -1
		c.WriteTimeout = 300 * time.Millisecond
	})
	// 16 MB of records, more than the socket buffers of loopback hold.
	value := strings.Repeat("x", 100<<10)
	for batch := range 4 {
		var cs []crdt.Change
		for i := range 40 {
			cs = append(cs, change(t, DemoCollection, string(rune('a'+batch))+string(rune('A'+i)), "f", value))
		}
		ts.push(t, "", cs...)
	}
	d := ws.Dialer{NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var nd net.Dialer
		conn, err := nd.DialContext(ctx, network, addr)
		if err == nil {
			// A small receive window: the server's writes wait for the
			// client's reads once its own send buffer is full.
			_ = conn.(*net.TCPConn).SetReadBuffer(4 << 10)
		}
		return conn, err
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, br, _, err := d.Dial(ctx, wsURL(ts.URL))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if br != nil {
		t.Fatal("the server wrote behind its upgrade answer before the hello")
	}
	for _, m := range []proto.Message{proto.Hello{Protocol: proto.Version, Replica: "c1"}, proto.Sub{Collection: DemoCollection}} {
		b, err := proto.EncodeMessage(m)
		if err != nil {
			t.Fatal(err)
		}
		if err := wsutil.WriteClientBinary(conn, b); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the session", func() bool { return ts.metric(t, "convergo_live_connections") == 1 })
	// One byte every 5 ms: 200 bytes a second, until the server closes.
	done := make(chan struct{})
	defer close(done)
	go func() {
		one := make([]byte, 1)
		for {
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
			if _, err := conn.Read(one); err != nil {
				return
			}
		}
	}()
	waitFor(t, "the byte-at-a-time reader closed", func() bool { return ts.metric(t, "convergo_live_connections") == 0 })
}
