package transport

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/transport/proto"
)

// tokenOfLen returns a token ts's server signed, for alice, of exactly n
// bytes: a claim padded until the token has that length.
func (ts *testServer) tokenOfLen(t *testing.T, n int) string {
	t.Helper()
	for pad := n * 3 / 4; pad > 0; pad-- {
		tok, err := ts.jwt.IssueToken(TokenSpec{Subject: "alice", Read: []string{"notes"}, Write: []string{"notes"}, TTL: time.Hour,
			Claims: map[string]any{"pad": strings.Repeat("p", pad)}})
		if err != nil {
			t.Fatal(err)
		}
		if len(tok) == n {
			return tok
		}
		if len(tok) < n {
			break
		}
	}
	t.Fatalf("no token of exactly %d bytes", n)
	return ""
}

// Request headers, the token included, take at most MaxHeaderBytes
// (docs/protocol.md, section 11): a request with more is answered 431,
// without the protocol's error form. net/http lets up to 4 KiB beyond
// http.Server.MaxHeaderBytes through, so a push whose token alone was
// just over the bound reached the server, which answered it 413
// too_large: the code a client reads as the fault of the push's changes,
// halving its batch down to one change and settling that change refused
// (rolled back), every change of its outbox in turn. A token at the
// bound is served; one over it is answered 431.
func TestHTTPTokenOverHeaderBound(t *testing.T) {
	ts := newTestServer(t, nil)
	// Served as convergo serve serves it.
	hs := httptest.NewUnstartedServer(ts.srv)
	hs.Config.MaxHeaderBytes = MaxHeaderBytes
	hs.Start()
	t.Cleanup(hs.Close)
	at := ts.tokenOfLen(t, MaxHeaderBytes)
	over := ts.tokenOfLen(t, MaxHeaderBytes+1)
	push := func(tok string) *http.Response {
		t.Helper()
		ch := ts.bind(t, at, []crdt.Change{change(t, "notes", "n1", "f", 1)})
		body, err := proto.Encode(proto.PushRequest{Replica: proto.ReplicaFor("alice", ownReplica), Changes: ch})
		if err != nil {
			t.Fatal(err)
		}
		req, err := http.NewRequest(http.MethodPost, hs.URL+proto.PathPush, strings.NewReader(string(body)))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", proto.ContentType)
		req.Header.Set(proto.HeaderProtocol, "2")
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := hs.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if resp := push(at); resp.StatusCode != http.StatusOK {
		t.Fatalf("a push with a token of %d bytes: status %d (%s), want 200", MaxHeaderBytes, resp.StatusCode, resp.Header.Get(proto.HeaderError))
	}
	resp := push(over)
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge || resp.Header.Get(proto.HeaderError) != "" {
		t.Fatalf("a push with a token of %d bytes: status %d, %s %q; want 431 without a code", MaxHeaderBytes+1, resp.StatusCode, proto.HeaderError, resp.Header.Get(proto.HeaderError))
	}
	if resp.Header.Get(proto.HeaderRequestID) == "" {
		t.Fatalf("the 431 answer carries no %s", proto.HeaderRequestID)
	}
}
