package client

import (
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/coder/websocket"

	"github.com/convergo/convergo/transport/proto"
)

// A live hello refused error unavailable and closed 1013 (try again
// later), as a server whose clock is off its store's does, is retried
// with backoff: the session opens once the server serves again.
func TestLiveRetriesTryAgainLater(t *testing.T) {
	f := newFakeServer(t)
	inner := f.srv.Config.Handler
	var refused atomic.Int32
	f.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == proto.PathLive && refused.Load() < 2 {
			conn, err := websocket.Accept(w, r, nil)
			if err != nil {
				return
			}
			defer conn.CloseNow()
			if _, _, err := conn.Read(r.Context()); err != nil {
				return
			}
			refused.Add(1)
			b, _ := proto.EncodeMessage(proto.ErrorMessage{Code: proto.CodeUnavailable, Message: "this server's clock is off its store's"})
			_ = conn.Write(r.Context(), websocket.MessageBinary, b)
			_ = conn.Close(websocket.StatusCode(proto.CloseTryAgainLater), "unavailable")
			return
		}
		inner.ServeHTTP(w, r)
	})
	a := newReplica(t, f, "a", nil, "c")
	runLive(t, a)
	eventually(t, "a live connection after two refusals closed 1013", func() bool { return f.liveConns() == 1 })
	if n := refused.Load(); n != 2 {
		t.Fatalf("%d refused hellos, want 2", n)
	}
}
