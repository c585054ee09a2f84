package transport

import (
	"strings"
	"testing"

	"github.com/convergo/convergo/transport/proto"
)

// A live session carries its token in its hello (key 3), since a browser
// cannot set headers on a WebSocket (docs/protocol.md, section 4): a hello
// without one is told so, not told to send an Authorization header, which
// the session never reads.
func TestLiveHelloWithoutTokenSaysWhere(t *testing.T) {
	ts := newTestServer(t, nil)
	c, _, err := ts.dial(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.send(proto.Hello{Protocol: proto.Version, Replica: "c1"})
	m, ok := c.recv().(proto.ErrorMessage)
	if !ok || m.Code != proto.CodeUnauthenticated {
		t.Fatalf("a hello without a token: got %#v, want error %s", m, proto.CodeUnauthenticated)
	}
	if strings.Contains(m.Message, "Authorization") || !strings.Contains(m.Message, "key 3") {
		t.Fatalf("a hello without a token is told %q, want where a hello carries its token (key 3)", m.Message)
	}
}
