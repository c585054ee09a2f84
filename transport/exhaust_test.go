package transport

import (
	"fmt"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/convergo/convergo/transport/proto"
)

// openFrom opens a live session whose client address is addr (the test
// server trusts its loopback peer as a proxy) and says hello with token.
// It returns the first answer to the hello.
func (ts *testServer) openFrom(t *testing.T, addr, token string) (*liveClient, proto.Message) {
	t.Helper()
	c, _, err := ts.dial(t, http.Header{"X-Forwarded-For": {addr}})
	if err != nil {
		t.Fatalf("dial from %s: %v", addr, err)
	}
	c.send(proto.Hello{Protocol: proto.Version, Replica: "c1", Token: token})
	return c, c.recv()
}

func trustLoopback(c *Config) {
	c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
}

// One subject's live sessions are bounded across client addresses: a
// subject holding tokens cannot take the server's connections (and the
// subscriptions, groups and queues each session may hold) from every
// other tenant by spreading its sessions over addresses, each under the
// per-address bound. A session beyond the bound is refused at its hello
// with rate_limited and closed with 1008; another subject at the same
// addresses is not, and a session that ends frees its place.
func TestLiveSessionsPerSubject(t *testing.T) {
	ts := newTestServer(t, trustLoopback)
	alice := ts.token(t, "alice", []string{"*"}, nil)
	limit := proto.DefaultMaxSessionsPerSubject
	if limit >= 2*proto.DefaultMaxConnsPerAddr {
		t.Fatalf("the bound per subject (%d) is not below two addresses' (%d)", limit, 2*proto.DefaultMaxConnsPerAddr)
	}
	var first *liveClient
	for i := range limit {
		addr := fmt.Sprintf("10.0.0.%d", 1+i%2)
		c, m := ts.openFrom(t, addr, alice)
		if _, ok := m.(proto.Welcome); !ok {
			t.Fatalf("session %d of alice from %s: %#v, want welcome", i+1, addr, m)
		}
		if first == nil {
			first = c
		}
	}
	c, m := ts.openFrom(t, "10.0.0.3", alice)
	if e, ok := m.(proto.ErrorMessage); !ok || e.Code != proto.CodeRateLimited {
		t.Fatalf("session %d of alice: %#v, want error %s", limit+1, m, proto.CodeRateLimited)
	}
	if _, err := c.recvErr(5 * time.Second); websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
		t.Fatalf("session %d of alice: %v, want close 1008", limit+1, err)
	}
	// Another tenant, from the same addresses, is served.
	for _, addr := range []string{"10.0.0.1", "10.0.0.3"} {
		if _, m := ts.openFrom(t, addr, ts.token(t, "bob", []string{"*"}, nil)); m.MessageType() != proto.TypeWelcome {
			t.Fatalf("bob from %s: %#v, want welcome", addr, m)
		}
	}
	// A session of alice that ends makes room for another.
	_ = first.ws.Close(websocket.StatusNormalClosure, "")
	waitFor(t, "alice's first session ended", func() bool { return ts.liveCount() == limit+1 })
	if _, m := ts.openFrom(t, "10.0.0.3", alice); m.MessageType() != proto.TypeWelcome {
		t.Fatalf("alice after one of hers ended: %#v, want welcome", m)
	}
}
