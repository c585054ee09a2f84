package client

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/convergo/convergo/transport/proto"
)

// redials is a slog.Handler that keeps, in order, the backoff attempt of
// each redial Live logs (liveRedialMsg).
type redials struct {
	mu       sync.Mutex
	attempts []int64
}

func (h *redials) Enabled(context.Context, slog.Level) bool { return true }
func (h *redials) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *redials) WithGroup(string) slog.Handler            { return h }

func (h *redials) Handle(_ context.Context, r slog.Record) error {
	if r.Message != liveRedialMsg {
		return nil
	}
	attempt := int64(-1)
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "attempt" {
			attempt = a.Value.Int64()
		}
		return true
	})
	h.mu.Lock()
	defer h.mu.Unlock()
	h.attempts = append(h.attempts, attempt)
	return nil
}

func (h *redials) of() []int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.attempts)
}

// A server, or a proxy in front of it, that closes every live session a
// second or two after its welcome must not have the client dial again
// within the first step of the backoff (0 to 200 ms) each time, for ever:
// a session counts as one that lasted, and starts the backoff over, only
// after proto.StableSession, as in the browser client; until then the
// backoff grows.
func TestLiveSessionsCutSoonAfterTheirWelcomeBackOff(t *testing.T) {
	var dials atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer conn.CloseNow()
		dials.Add(1)
		if _, _, err := conn.Read(r.Context()); err != nil {
			return
		}
		b, _ := proto.EncodeMessage(proto.Welcome{Hello: proto.HelloResponse{Protocol: proto.Version, ServerTime: time.Now().UnixMilli()}})
		if conn.Write(r.Context(), websocket.MessageBinary, b) != nil {
			return
		}
		// The server's behaviour under test: the session ends 1.2 s
		// after its welcome, longer than a client's first backoff step.
		time.Sleep(1200 * time.Millisecond)
		conn.Close(websocket.StatusGoingAway, "cut")
	}))
	defer srv.Close()
	logs := &redials{}
	c, err := New(Config{URL: srv.URL, Replica: "a", Logger: slog.New(logs),
		Backoff: Backoff{Initial: time.Millisecond, Max: 20 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- c.Live(ctx, nil, func(string, Page) {}, nil) }()
	eventually(t, "three redials", func() bool { return len(logs.of()) >= 3 })
	cancel()
	<-done
	if got := logs.of()[:3]; !increasing(got) {
		t.Fatalf("backoff attempts of the redials %v, want 0, 1, 2 (sessions of 1.2 s are not stable)", got)
	}
}
