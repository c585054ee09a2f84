package transport

import (
	"bytes"
	"context"
	"crypto/hmac"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/memory"
	"github.com/convergo/convergo/transport/proto"
)

var testSecret = []byte("0123456789abcdef0123456789abcdef")

// liveNoPoll makes newTestServer's servers read live connections with a
// goroutine each, the path of connections that cannot be polled
// (TestLiveFallback).
var liveNoPoll bool

type testServer struct {
	*httptest.Server
	srv   *Server
	eng   *engine.Engine
	jwt   *JWT
	store stores.Store // the engine's store
}

// newTestServer starts a server on a memory store. edit adjusts the config
// before New.
func newTestServer(t *testing.T, edit func(*Config)) *testServer {
	t.Helper()
	store := memory.New()
	eng, err := engine.Open(engine.Config{Store: store, Replica: "srv-test", PollInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	j, err := NewJWT(testSecret, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Engine: eng, Authorizer: j, noPoll: liveNoPoll}
	if edit != nil {
		edit(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// As the binary does: the metrics beside the protocol, mounted by the
	// program (the Server itself serves no /metrics).
	ts := httptest.NewServer(srv.WithMetrics())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		ts.Close()
		_ = eng.Close()
		_ = store.Close()
	})
	return &testServer{Server: ts, srv: srv, eng: eng, store: store, jwt: j}
}

func (ts *testServer) token(t *testing.T, sub string, read, write []string) string {
	t.Helper()
	tok, err := ts.jwt.Issue(sub, read, write, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

type answer struct {
	status int
	header http.Header
	body   []byte
}

// errorCode decodes an error answer, checking that header and body agree.
func (a answer) errorCode(t *testing.T) string {
	t.Helper()
	var e proto.ErrorBody
	if err := proto.Decode(a.body, &e); err != nil {
		t.Fatalf("error body %x (status %d): %v", a.body, a.status, err)
	}
	if h := a.header.Get(proto.HeaderError); h != e.Code {
		t.Fatalf("header %s %q, body code %q", proto.HeaderError, h, e.Code)
	}
	if want := proto.StatusOf(e.Code); a.status != want && a.status != http.StatusMethodNotAllowed {
		t.Fatalf("code %s with status %d, want %d", e.Code, a.status, want)
	}
	return e.Code
}

// post sends body (encoded unless it is []byte) with the protocol header and
// token, if any.
// ownReplica is the placeholder replica id of test changes: post stamps
// them with the pushing subject's own device id (proto.ReplicaFor), so
// tests read as "my write"; a test of forged ids uses any other id.
const ownReplica = "c1"

// bind gives the changes stamped ownReplica the replica id the token's
// subject owns.
func (ts *testServer) bind(t *testing.T, token string, changes []crdt.Change) []crdt.Change {
	t.Helper()
	subject := ""
	if token != "" {
		if p, err := ts.jwt.Authenticate(context.Background(), token); err == nil {
			subject = p.Subject
		}
	}
	own := proto.ReplicaFor(subject, ownReplica)
	out := make([]crdt.Change, len(changes))
	for i, c := range changes {
		r := c.Record.Clone()
		if r.Deleted.Replica == ownReplica {
			r.Deleted.Replica = own
		}
		for name, f := range r.Fields {
			if f.Stamp.Replica == ownReplica {
				f.Stamp.Replica = own
				r.Fields[name] = f
			}
		}
		out[i] = crdt.Change{Collection: c.Collection, Record: r}
	}
	return out
}

func (ts *testServer) post(t *testing.T, path, token string, body any, edit ...func(*http.Request)) answer {
	t.Helper()
	if p, ok := body.(proto.PushRequest); ok {
		p.Changes = ts.bind(t, token, p.Changes)
		body = p
	}
	raw, ok := body.([]byte)
	if !ok {
		var err error
		if raw, err = proto.Encode(body); err != nil {
			t.Fatal(err)
		}
	}
	req, err := http.NewRequest(http.MethodPost, ts.URL+path, bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", proto.ContentType)
	req.Header.Set(proto.HeaderProtocol, strconv.Itoa(proto.Version))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for _, e := range edit {
		e(req)
	}
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{status: resp.StatusCode, header: resp.Header, body: b}
}

func (ts *testServer) push(t *testing.T, token string, changes ...crdt.Change) []proto.PushResult {
	t.Helper()
	a := ts.post(t, proto.PathPush, token, proto.PushRequest{Replica: "c1", Changes: changes})
	if a.status != http.StatusOK {
		t.Fatalf("push: status %d, code %s", a.status, a.errorCode(t))
	}
	var resp proto.PushResponse
	if err := proto.Decode(a.body, &resp); err != nil {
		t.Fatal(err)
	}
	if len(resp.Results) != len(changes) {
		t.Fatalf("push: %d results for %d changes", len(resp.Results), len(changes))
	}
	return resp.Results
}

func (ts *testServer) pull(t *testing.T, token, coll string, cursor uint64) proto.PullResponse {
	t.Helper()
	a := ts.post(t, proto.PathPull, token, proto.PullRequest{Collection: coll, Cursor: ts.cur(t, coll, cursor)})
	if a.status != http.StatusOK {
		t.Fatalf("pull: status %d, code %s", a.status, a.errorCode(t))
	}
	var resp proto.PullResponse
	if err := proto.Decode(a.body, &resp); err != nil {
		t.Fatal(err)
	}
	return resp
}

func (ts *testServer) get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := ts.Client().Get(ts.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// cur is the wire cursor after sequence number seq of coll's log, in the
// store's current history.
func (ts *testServer) cur(t *testing.T, coll string, seq uint64) []byte {
	t.Helper()
	c, err := ts.eng.CursorAt(context.Background(), coll, seq)
	if err != nil {
		t.Fatal(err)
	}
	return ts.srv.sealer.cursorBytes(coll, c)
}

// isCur reports whether b is a cursor this server made (its tag verifies)
// of coll's current history at seq: what ts.cur returns, but for the slot
// marks a pull notes (engine.Cursor), which CursorAt does not know.
func (ts *testServer) isCur(t *testing.T, coll string, b []byte, seq uint64) bool {
	t.Helper()
	n := len(b) - cursorTagBytes
	if n <= 0 || !hmac.Equal(b[n:], ts.srv.sealer.cursorTag(coll, b[:n])) {
		return false
	}
	got, err := engine.ParseCursor(b[:n])
	if err != nil {
		return false
	}
	want, err := ts.eng.CursorAt(context.Background(), coll, seq)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Equal(got.Bytes()[1:9], want.Bytes()[1:9]) && got.Epoch() == want.Epoch() && got.Seq() == seq && !got.Scoped()
}

func mustValue(t *testing.T, v any) []byte {
	t.Helper()
	b, err := crdt.EncodeValue(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// change sets one field, stamped now.
func change(t *testing.T, coll, id, field string, v any) crdt.Change {
	t.Helper()
	return crdt.Change{Collection: coll, Record: crdt.SetField(id, field, mustValue(t, v), crdt.Stamp{Wall: time.Now().UnixMilli(), Replica: ownReplica})}
}

// liveClient is a test WebSocket client.
type liveClient struct {
	t  *testing.T
	ws *websocket.Conn
}

func (ts *testServer) dial(t *testing.T, header http.Header) (*liveClient, *http.Response, error) {
	t.Helper()
	return ts.dialURL(t, "", header)
}

// dialURL dials the live path with query (empty, or starting with "?").
func (ts *testServer) dialURL(t *testing.T, query string, header http.Header) (*liveClient, *http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	url := "ws" + strings.TrimPrefix(ts.URL, "http") + proto.PathLive + query
	ws, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: header, HTTPClient: ts.Client()})
	if err != nil {
		return nil, resp, err
	}
	ws.SetReadLimit(64 << 20)
	t.Cleanup(func() { ws.CloseNow() })
	return &liveClient{t: t, ws: ws}, resp, nil
}

// open dials and says hello, returning the welcome.
func (ts *testServer) open(t *testing.T, token string) (*liveClient, proto.HelloResponse) {
	t.Helper()
	c, _, err := ts.dial(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.send(proto.Hello{Protocol: proto.Version, Replica: "c1", Token: token})
	w, ok := c.recv().(proto.Welcome)
	if !ok {
		t.Fatal("no welcome")
	}
	return c, w.Hello
}

func (c *liveClient) send(m proto.Message) {
	c.t.Helper()
	b, err := proto.EncodeMessage(m)
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.ws.Write(ctx, websocket.MessageBinary, b); err != nil {
		c.t.Fatalf("send %T: %v", m, err)
	}
}

func (c *liveClient) recvErr(timeout time.Duration) (proto.Message, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	typ, b, err := c.ws.Read(ctx)
	if err != nil {
		return nil, err
	}
	if typ != websocket.MessageBinary {
		c.t.Fatalf("got a %v frame", typ)
	}
	return proto.DecodeServerMessage(b)
}

func (c *liveClient) recv() proto.Message {
	c.t.Helper()
	m, err := c.recvErr(5 * time.Second)
	if err != nil {
		c.t.Fatalf("recv: %v", err)
	}
	return m
}

func engineOn(s stores.Store) (*engine.Engine, error) {
	return engine.Open(engine.Config{Store: s, Replica: "srv-test", PollInterval: -1})
}

// serveOver has ts's server use an engine over s (ts.store wrapped to
// count, hold or fail its calls) from now on; the engine closes as t ends.
func (ts *testServer) serveOver(t *testing.T, s stores.Store) *engine.Engine {
	t.Helper()
	eng, err := engineOn(s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Close() })
	ts.srv.eng = eng
	return eng
}

// metric returns the value of the sample name (with its labels) on the
// server's /metrics.
func (ts *testServer) metric(t *testing.T, name string) float64 {
	t.Helper()
	_, body := ts.get(t, "/metrics")
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			return f
		}
	}
	t.Fatalf("metrics lack %s", name)
	return 0
}

// held returns how many connections the pinger holds: a connection it
// found silent is no longer among them.
func (p *pinger) held() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}

// resynced reports whether the server has stopped a subscription of coll
// with resync: the resync is owed to its client (it waits for room in the
// send queue) or was sent (counted).
func (ts *testServer) resynced(t *testing.T, coll string) bool {
	t.Helper()
	ts.srv.mu.Lock()
	conns := make([]*liveConn, 0, len(ts.srv.live))
	for c := range ts.srv.live {
		conns = append(conns, c)
	}
	ts.srv.mu.Unlock()
	for _, c := range conns {
		c.mu.Lock()
		_, owed := c.resyncs[coll]
		c.mu.Unlock()
		if owed {
			return true
		}
	}
	return ts.metric(t, "convergo_live_resyncs_total") >= 1
}
