package client

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/convergo/convergo/transport/proto"
)

// While a push is in flight the session's reader reads on past messages
// its loop has not taken, but only to readAhead of them: then it ends the
// session (the client reconnects and resumes from its cursors) rather than
// hold in memory whatever the server sends meanwhile.
func TestLivePushReadAheadBounded(t *testing.T) {
	const n = 5000
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		for i := range n {
			data, _ := proto.EncodeMessage(proto.Pong{Nonce: uint64(i)})
			if c.Write(r.Context(), websocket.MessageBinary, data) != nil {
				return
			}
		}
		<-r.Context().Done()
	}))
	defer hs.Close()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	conn, _, err := websocket.Dial(ctx, "ws"+hs.URL[4:], nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	l := newLiveLink(conn, proto.Session{}, proto.DefaultMaxMessageBytes, ctx.Done(), proto.ClientPushTimeout)
	var ended atomic.Bool
	l.end = func() { ended.Store(true) }
	l.slot <- struct{}{} // a push in flight, its answer slow (a held store)
	in := newInbox()
	done := make(chan struct{})
	go func() { defer close(done); readInto(ctx, conn, DefaultMaxResponseBytes, in, l, func() {}) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("the reader still reads, %d messages buffered while the loop took none", in.waiting())
	}
	if got := in.waiting(); got > readAhead+1 {
		t.Fatalf("%d messages buffered by the reader while the loop took none", got)
	}
	if !ended.Load() {
		t.Fatal("the session was not ended")
	}
	var last read
	for {
		r, ok := in.pop()
		if !ok {
			break
		}
		last = r
	}
	if !errors.Is(last.err, errReadAhead) {
		t.Fatalf("last read %+v, want errReadAhead", last)
	}
}
