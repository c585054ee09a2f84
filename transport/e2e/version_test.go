package e2e

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/transport/client"
	"github.com/convergo/convergo/transport/proto"
)

// TestVersion1IsRefused checks that a client of protocol version 1 is told
// to upgrade, over HTTP and over WebSocket, and that the Go client reports
// it as ErrUnsupportedVersion.
func TestVersion1IsRefused(t *testing.T) {
	srv := startServer(t, openEmbedded(t), nil)
	tok := srv.token(t, "old", []string{"e2e.v1"}, []string{"e2e.v1"})
	now := time.Now().UnixMilli()

	t.Run("push on the version 1 path", func(t *testing.T) {
		a := rawPost(t, srv.URL, "/v1/push", tok, pushBody("old", setAt(t, "e2e.v1", "r", now, "old")),
			map[string]string{proto.HeaderProtocol: "1"})
		if a.Status != http.StatusBadRequest || a.Code != proto.CodeUnsupportedVersion {
			t.Fatalf("got %d %q (%q), want 400 %s", a.Status, a.Code, a.Body, proto.CodeUnsupportedVersion)
		}
		if _, err := srv.Engine.GetRecord(t.Context(), "e2e.v1", "r"); err == nil {
			t.Fatal("the version 1 push was applied")
		}
	})

	t.Run("live hello of version 1", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+proto.PathLive, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.CloseNow()
		if err := conn.Write(ctx, websocket.MessageBinary, msg(t, proto.Hello{Protocol: 1, Replica: "old", Token: tok})); err != nil {
			t.Fatal(err)
		}
		_, b, err := conn.Read(ctx)
		if err != nil {
			t.Fatalf("read: %v (no error message)", err)
		}
		m, err := proto.DecodeServerMessage(b)
		e, ok := m.(proto.ErrorMessage)
		if err != nil || !ok || e.Code != proto.CodeUnsupportedVersion {
			t.Fatalf("got %+v, %v; want an error message %s", m, err, proto.CodeUnsupportedVersion)
		}
		_, _, err = conn.Read(ctx)
		if got := websocket.CloseStatus(err); got != proto.CloseProtocolVersion {
			t.Fatalf("closed with %v (%d), want close code %d", err, got, proto.CloseProtocolVersion)
		}
	})

	t.Run("the Go client against a server of another version", func(t *testing.T) {
		// A server of a later version answers unsupported_version: the
		// client must stop, not retry.
		old := http.NewServeMux()
		old.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			b, _ := proto.Encode(proto.ErrorBody{Code: proto.CodeUnsupportedVersion, Message: "speak 3"})
			w.Header().Set(proto.HeaderError, proto.CodeUnsupportedVersion)
			w.WriteHeader(http.StatusBadRequest)
			w.Write(b)
		})
		hs := httptest.NewServer(old)
		defer hs.Close()
		c, err := client.New(client.Config{URL: hs.URL, Device: "new", Backoff: client.Backoff{MaxAttempts: 2}})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Push(t.Context(), []crdt.Change{setAt(t, "e2e.v1", "r", now, "new")})
		if !errors.Is(err, client.ErrUnsupportedVersion) {
			t.Fatalf("push: got %v, want ErrUnsupportedVersion", err)
		}
		err = c.Live(t.Context(), map[string][]byte{"e2e.v1": nil}, func(string, client.Page) {}, nil)
		if !errors.Is(err, client.ErrUnsupportedVersion) {
			t.Fatalf("live: got %v, want ErrUnsupportedVersion", err)
		}
	})
}
