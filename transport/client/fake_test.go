package client

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores/memory"
)

// fakeServer speaks the protocol over an engine on a memory store, with
// knobs to misbehave. The real server is tested end to end in
// transport/e2e; this one lets the client's tests control failures.
type fakeServer struct {
	t   *testing.T
	eng *engine.Engine
	srv *httptest.Server

	// fail, when it returns a non-nil error body and status, answers an
	// HTTP request with it instead of serving it.
	fail atomic.Pointer[func(path string) (int, string)]
	// pushes counts push requests served.
	pushes atomic.Int64
	// maxPush is sent in hello answers.
	maxPush int

	mu    sync.Mutex
	conns map[*websocket.Conn]chan string // live connections and their control channels
}

func newFakeServer(t *testing.T) *fakeServer {
	t.Helper()
	eng, err := engine.Open(engine.Config{Store: memory.New(), Replica: "srv", PollInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeServer{t: t, eng: eng, maxPush: 1000, conns: map[*websocket.Conn]chan string{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/hello", f.serveHTTP(f.hello))
	mux.HandleFunc("POST /v1/push", f.serveHTTP(f.push))
	mux.HandleFunc("POST /v1/pull", f.serveHTTP(f.pull))
	mux.HandleFunc("GET /v1/live", f.live)
	f.srv = httptest.NewServer(mux)
	t.Cleanup(func() {
		f.srv.CloseClientConnections()
		f.srv.Close()
		eng.Close()
	})
	return f
}

func (f *fakeServer) client(t *testing.T, replica string, mod func(*Config)) *Client {
	t.Helper()
	cfg := Config{URL: f.srv.URL, Replica: replica, Backoff: Backoff{Initial: time.Millisecond, Max: 20 * time.Millisecond, MaxAttempts: 4}}
	if mod != nil {
		mod(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (f *fakeServer) failWith(fn func(path string) (int, string)) { f.fail.Store(&fn) }

func writeError(w http.ResponseWriter, status int, code, msg string) {
	b, _ := crdt.Marshal(errorBody{Code: code, Message: msg})
	w.Header().Set("Content-Type", contentType)
	w.Header().Set(headerError, code)
	w.WriteHeader(status)
	w.Write(b)
}

func (f *fakeServer) serveHTTP(h func(ctx context.Context, body []byte) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if fp := f.fail.Load(); fp != nil {
			if status, code := (*fp)(r.URL.Path); status != 0 {
				if status == http.StatusTooManyRequests {
					w.Header().Set("Retry-After", "1")
				}
				writeError(w, status, code, "injected")
				return
			}
		}
		if r.Header.Get(headerProtocol) != "1" || r.Header.Get("Content-Type") != contentType {
			writeError(w, 400, CodeUnsupportedVersion, "headers")
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		answer, err := h(r.Context(), body)
		if err != nil {
			writeError(w, 400, CodeMalformed, err.Error())
			return
		}
		b, err := crdt.Marshal(answer)
		if err != nil {
			f.t.Error(err)
			return
		}
		w.Header().Set("Content-Type", contentType)
		w.Write(b)
	}
}

func (f *fakeServer) helloAnswer() helloAnswer {
	return helloAnswer{Protocol: 1, ServerTime: f.eng.ServerTime(), ServerReplica: "srv", MaxPush: f.maxPush, MaxPull: 1000, MaxBody: 4 << 20, MaxDrift: f.eng.MaxDrift().Milliseconds()}
}

func (f *fakeServer) hello(_ context.Context, body []byte) (any, error) {
	var req helloRequest
	if err := crdt.Unmarshal(body, &req); err != nil {
		return nil, err
	}
	return f.helloAnswer(), nil
}

func (f *fakeServer) push(ctx context.Context, body []byte) (any, error) {
	var req pushRequest
	if err := crdt.Unmarshal(body, &req); err != nil {
		return nil, err
	}
	f.pushes.Add(1)
	res, err := f.eng.Apply(ctx, req.Changes)
	if err != nil {
		return nil, err
	}
	var a pushAnswer
	for _, r := range res {
		switch r.Status {
		case engine.StatusApplied:
			a.Results = append(a.Results, resultWire{Status: 0, Seq: r.Seq})
		case engine.StatusNoop:
			a.Results = append(a.Results, resultWire{Status: 1, Seq: r.Seq})
		default:
			code := CodeInvalid
			if errors.Is(r.Err, crdt.ErrClockDrift) {
				code = CodeClockDrift
			}
			a.Results = append(a.Results, resultWire{Status: 2, Code: code, Message: r.Err.Error()})
		}
	}
	return a, nil
}

func (f *fakeServer) pull(ctx context.Context, body []byte) (any, error) {
	var req pullRequest
	if err := crdt.Unmarshal(body, &req); err != nil {
		return nil, err
	}
	p, err := f.eng.Pull(ctx, req.Collection, req.Cursor, req.Limit)
	if err != nil {
		return nil, err
	}
	a := pullAnswer{Next: p.Next, More: p.More, Entries: []entryWire{}}
	for _, e := range p.Entries {
		a.Entries = append(a.Entries, entryWire{Seq: e.Seq, Record: e.Record})
	}
	return a, nil
}

// live serves a WebSocket: hello, then subs streamed from the engine. The
// control channel of a connection takes "drop" (close it abruptly),
// "resync:<coll>" (stop streaming coll and send resync), "forbid" (send a
// fatal forbidden error), "mute" (stop answering pings).
func (f *fakeServer) live(w http.ResponseWriter, r *http.Request) {
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer conn.CloseNow()
	ctl := make(chan string, 4)
	f.mu.Lock()
	f.conns[conn] = ctl
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.conns, conn)
		f.mu.Unlock()
	}()
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	send := func(m any) error {
		b, err := crdt.Marshal(m)
		if err != nil {
			return err
		}
		return conn.Write(ctx, websocket.MessageBinary, b)
	}
	_, b, err := conn.Read(ctx)
	if err != nil {
		return
	}
	var h wsHello
	if err := crdt.Unmarshal(b, &h); err != nil || h.Type != msgHello {
		send(wsError{Type: msgError, Code: CodeMalformed, Message: "hello first"})
		return
	}
	if h.Token == "bad" {
		send(wsError{Type: msgError, Code: CodeUnauthenticated, Message: "bad token"})
		return
	}
	if err := send(wsWelcome{Type: msgWelcome, Hello: f.helloAnswer()}); err != nil {
		return
	}
	var muted atomic.Bool
	var (
		smu     sync.Mutex
		streams = map[string]context.CancelFunc{}
	)
	stream := func(coll string, cursor uint64) {
		sctx, scancel := context.WithCancel(ctx)
		smu.Lock()
		if old := streams[coll]; old != nil {
			old()
		}
		streams[coll] = scancel
		smu.Unlock()
		sub, err := f.eng.Subscribe(coll)
		if err != nil {
			return
		}
		go func() {
			defer sub.Close()
			for {
				p, err := f.eng.Pull(sctx, coll, cursor, 1000)
				if err != nil {
					return
				}
				if len(p.Entries) > 0 {
					m := wsChanges{Type: msgChanges, Collection: coll, Next: p.Next, More: p.More}
					for _, e := range p.Entries {
						m.Entries = append(m.Entries, entryWire{Seq: e.Seq, Record: e.Record})
					}
					if send(m) != nil {
						return
					}
					cursor = p.Next
				}
				if p.More {
					continue
				}
				select {
				case <-sctx.Done():
					return
				case <-sub.C():
				}
			}
		}()
	}
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case c := <-ctl:
				switch {
				case c == "drop":
					conn.CloseNow()
					cancel()
					return
				case c == "mute":
					muted.Store(true)
				case c == "forbid":
					send(wsError{Type: msgError, Code: CodeForbidden, Message: "no"})
					conn.Close(websocket.StatusPolicyViolation, "forbidden")
					return
				case len(c) > 7 && c[:7] == "resync:":
					coll := c[7:]
					smu.Lock()
					if s := streams[coll]; s != nil {
						s()
						delete(streams, coll)
					}
					smu.Unlock()
					send(wsResync{Type: msgResync, Collection: coll})
				}
			}
		}
	}()
	for {
		_, b, err := conn.Read(ctx)
		if err != nil {
			return
		}
		typ, err := messageType(b)
		if err != nil {
			return
		}
		switch typ {
		case msgSub:
			var s wsSub
			if crdt.Unmarshal(b, &s) != nil {
				return
			}
			stream(s.Collection, s.Cursor)
		case msgPing:
			if muted.Load() {
				continue
			}
			var p wsPing
			if crdt.Unmarshal(b, &p) != nil {
				return
			}
			send(struct {
				Type  string `cbor:"0,keyasint"`
				Nonce uint64 `cbor:"1,keyasint"`
			}{msgPong, p.Nonce})
		}
	}
}

// control sends cmd to every live connection and returns how many got it.
func (f *fakeServer) control(cmd string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, ctl := range f.conns {
		ctl <- cmd
	}
	return len(f.conns)
}

func (f *fakeServer) liveConns() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.conns)
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
