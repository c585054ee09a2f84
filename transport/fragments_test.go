package transport

import (
	"errors"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// A client that sends fragments of a message that never ends, each on
// time and with pings between them, is closed with 1008 once the message
// has taken WriteTimeout: the deadline is the message's, which neither
// fragments nor control frames extend, so a message in progress holds a
// reader and its bytes only that long.
func TestLiveEndlessFragmentsClosed(t *testing.T) {
	const timeout = 300 * time.Millisecond
	ts := newTestServer(t, func(c *Config) { c.Demo = true; c.WriteTimeout = timeout })
	c := rawDial(t, ts.URL)
	closed := make(chan error, 1)
	start := time.Now()
	go func() {
		for {
			_, err := c.recvErr()
			if err != nil {
				closed <- err
				return
			}
		}
	}()
	write := func(h ws.Header, p []byte) bool {
		h.Masked, h.Mask, h.Length = true, ws.NewMask(), int64(len(p))
		q := append([]byte(nil), p...)
		ws.Cipher(q, h.Mask, 0)
		return ws.WriteHeader(c.conn, h) == nil && func() bool { _, err := c.conn.Write(q); return err == nil }()
	}
	op := ws.OpBinary
	var err error
fragments:
	for {
		if !write(ws.Header{OpCode: op}, make([]byte, 10)) || !write(ws.Header{Fin: true, OpCode: ws.OpPing}, []byte("p")) {
			break // the server closed the socket
		}
		op = ws.OpContinuation
		select {
		case err = <-closed:
			break fragments
		case <-time.After(timeout / 10):
		}
	}
	if err == nil {
		err = <-closed
	}
	var ce wsutil.ClosedError
	if !errors.As(err, &ce) || ce.Code != ws.StatusPolicyViolation || ce.Reason != reasonReadTimeout {
		t.Fatalf("got %v, want close 1008 %q", err, reasonReadTimeout)
	}
	if d := time.Since(start); d < timeout*2/3 {
		t.Fatalf("closed after %v, before the message's deadline %v", d, timeout)
	}
}
