package transport

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/transport/proto"
)

// Every message the server writes is at most maxMessageBytes of UTF-8,
// cut with an ellipsis where it would quote more of the request
// (docs/protocol.md, section 5), whatever part of the request it quotes
// and whatever it puts before the quote: a header (the protocol version,
// the Origin), a query (the demo's name), a body's device part or a
// scope's parameter, over HTTP and live.
func TestErrorMessagesBounded(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.Demo = true })
	tok := ts.token(t, "alice", []string{"m.*"}, []string{"m.*"})
	long := strings.Repeat("é", 2000) // 4,000 bytes
	longScope := []any{"eq", "f", map[string]any{"$": "claims." + strings.Repeat("p", 3000)}}
	check := func(t *testing.T, code, msg string) {
		t.Helper()
		if len(msg) > maxMessageBytes || !utf8.ValidString(msg) || !strings.HasSuffix(msg, "…") {
			t.Errorf("%s, message of %d bytes, want at most %d of UTF-8 ending with …: %.60q…", code, len(msg), maxMessageBytes, msg)
		}
	}
	checkAnswer := func(t *testing.T, a answer) {
		t.Helper()
		var e proto.ErrorBody
		if err := proto.Decode(a.body, &e); err != nil {
			t.Fatalf("error body (status %d): %v", a.status, err)
		}
		check(t, e.Code, e.Message)
	}
	t.Run("device part", func(t *testing.T) {
		body := map[int]any{9: long, 2: []any{}}
		checkAnswer(t, ts.post(t, proto.PathPush, tok, mustMarshal(t, body)))
	})
	t.Run("scope parameter", func(t *testing.T) {
		body := map[int]any{1: "m.notes", 4: longScope}
		checkAnswer(t, ts.post(t, proto.PathPull, tok, mustMarshal(t, body)))
	})
	t.Run("protocol header", func(t *testing.T) {
		a := ts.post(t, proto.PathHello, tok, proto.HelloRequest{Protocol: proto.Version, Replica: proto.ReplicaFor("alice", "d1")},
			func(r *http.Request) { r.Header.Set(proto.HeaderProtocol, strings.Repeat("9", 4000)) })
		checkAnswer(t, a)
	})
	t.Run("origin", func(t *testing.T) {
		a := ts.post(t, proto.PathHello, tok, proto.HelloRequest{Protocol: proto.Version, Replica: proto.ReplicaFor("alice", "d1")},
			func(r *http.Request) { r.Header.Set("Origin", "https://"+strings.Repeat("o", 4000)+".example") })
		checkAnswer(t, a)
	})
	t.Run("demo name", func(t *testing.T) {
		resp, err := ts.Client().Post(ts.URL+PathDemoToken+"?name="+url.QueryEscape(long), "", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		var e DemoTokenError
		if err := json.Unmarshal(b, &e); err != nil {
			t.Fatalf("demo token answer %.80q (status %d): %v", b, resp.StatusCode, err)
		}
		check(t, e.Code, e.Message)
	})
	t.Run("live sub scope parameter", func(t *testing.T) {
		c, _ := ts.open(t, tok)
		c.send(proto.Sub{Collection: "m.notes", Scope: mustMarshal(t, longScope)})
		e, ok := c.recv().(proto.ErrorMessage)
		if !ok {
			t.Fatal("the sub was not refused")
		}
		check(t, e.Code, e.Message)
	})
}

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := crdt.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
