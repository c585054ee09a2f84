package client

import (
	"cmp"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/crdt/scope"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/memory"
	"github.com/convergo/convergo/transport/proto"
)

// fakeServer speaks the protocol over an engine on a memory store, with
// knobs to misbehave. The real server is tested end to end in
// transport/e2e; this one lets the client's tests control failures.
type fakeServer struct {
	t   *testing.T
	eng *engine.Engine
	mem *memory.Store
	srv *httptest.Server

	// subjects, when set, reads an HTTP request's bearer token as the
	// name of its subject: a hello answers it, and a push naming its
	// replica by its device part is read with its prefix.
	subjects atomic.Bool
	// expired, when set, is a token refused token_expired: an HTTP
	// request and a live hello sent with it.
	expired atomic.Pointer[string]
	// fail, when it returns a non-nil error body and status, answers an
	// HTTP request with it instead of serving it.
	fail atomic.Pointer[func(path string) (int, string)]
	// requests counts the HTTP requests that reached the server.
	requests atomic.Int64
	// pushes counts push requests served, livePushes the pushes over live
	// sessions among them.
	pushes, livePushes atomic.Int64
	// holdLive, when set, applies the live pushes and does not answer
	// them (an answer lost with its session).
	holdLive atomic.Bool
	// refuseWhole, when set and returning a code for a push's changes,
	// refuses that push (HTTP or live) whole with the code, nothing
	// applied.
	refuseWhole atomic.Pointer[func([]crdt.Change) string]
	// maxMessage, when not 0, is the hello's max live message bytes.
	maxMessage atomic.Int64
	// maxPush is sent in hello answers.
	maxPush int
	// writeScope, when set, is every writer's write scope: a change
	// outside it is refused out_of_scope.
	writeScope atomic.Pointer[scope.Pred]
	// revoked, when set, answers every request 403 revoked and every live
	// hello with a revoked error.
	revoked atomic.Bool
	// horizon, when not 0, is every collection's write horizon (wall ms):
	// a change with a stamp before it is refused collected.
	horizon atomic.Int64
	// refuseSub, when set and returning a code for a live sub's
	// collection, answers the sub with an error of that code naming the
	// collection (the session goes on).
	refuseSub atomic.Pointer[func(coll string) string]
	// liveDials counts the live connections accepted.
	liveDials atomic.Int64
	// resetSubs, when set, answers every live sub with a reset of reason
	// rebuilt (a reset storm); subs counts the subs received.
	resetSubs atomic.Bool
	subs      atomic.Int64
	// pageResetSubs, when set, answers every live sub with an empty page
	// at its cursor, then a reset of reason rebuilt (a reset storm that
	// serves the collection before each reset).
	pageResetSubs atomic.Bool
	// rewritePull, when set, is given each pull and the answer the engine
	// made for it, and returns the answer sent (a broken server's).
	rewritePull atomic.Pointer[func(proto.PullRequest, proto.PullResponse) proto.PullResponse]
	// rewriteHello, when set, is given each hello answer (HTTP or a live
	// welcome's) and returns the answer sent (a broken or newer server's).
	rewriteHello atomic.Pointer[func(proto.HelloResponse) proto.HelloResponse]

	smu    sync.Mutex
	scopes []string // the scope of each pull and sub received, in order ("" for none)
	// leases notes the replica and pending floor of each pull and sub.
	leases []leaseNote
	// expiredLeases holds, per collected collection, the replicas (named
	// by pulls and subs) whose leases the collection ended: their next
	// pull or sub from a cursor is reset lease_expired, until one from
	// the beginning starts a new lease.
	expiredLeases map[string]map[string]bool
	// pushed counts the changes pushed per "collection/id", and
	// pushedRecords holds their records.
	pushed        map[string]int
	pushedRecords map[string][]crdt.Record

	mu    sync.Mutex
	conns map[*websocket.Conn]chan string // live connections and their control channels
}

func newFakeServer(t *testing.T) *fakeServer {
	t.Helper()
	mem := memory.New()
	eng, err := engine.Open(engine.Config{Store: mem, Replica: "srv", PollInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeServer{t: t, eng: eng, mem: mem, maxPush: 1000, conns: map[*websocket.Conn]chan string{},
		expiredLeases: map[string]map[string]bool{}, pushed: map[string]int{}, pushedRecords: map[string][]crdt.Record{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+proto.PathHello, f.serveHTTP(f.hello))
	mux.HandleFunc("POST "+proto.PathPush, f.serveHTTP(f.push))
	mux.HandleFunc("POST "+proto.PathPull, f.serveHTTP(f.pull))
	mux.HandleFunc("GET "+proto.PathLive, f.live)
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

// livePushID is the request id the fake gives its n-th live push.
func livePushID(n int64) string { return fmt.Sprint("live-push-", n) }

// fakeRequestID is the request id of every error answer of the fake.
const fakeRequestID = "req-1"

func writeError(w http.ResponseWriter, status int, code, msg string) {
	b, _ := proto.Encode(proto.ErrorBody{Code: code, Message: msg, RequestID: fakeRequestID})
	w.Header().Set("Content-Type", proto.ContentType)
	w.Header().Set(proto.HeaderError, code)
	w.Header().Set(proto.HeaderRequestID, fakeRequestID)
	w.WriteHeader(status)
	w.Write(b)
}

func (f *fakeServer) serveHTTP(h func(ctx context.Context, body []byte) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		f.requests.Add(1)
		if fp := f.fail.Load(); fp != nil {
			if status, code := (*fp)(r.URL.Path); status != 0 {
				if status == http.StatusTooManyRequests {
					w.Header().Set("Retry-After", "1")
				}
				writeError(w, status, code, "injected")
				return
			}
		}
		if e := f.expired.Load(); e != nil && r.Header.Get("Authorization") == "Bearer "+*e {
			writeError(w, http.StatusUnauthorized, proto.CodeTokenExpired, "the token expired")
			return
		}
		if f.revoked.Load() {
			writeError(w, http.StatusForbidden, proto.CodeRevoked, "access to this server was revoked")
			return
		}
		if r.Header.Get(proto.HeaderProtocol) != fmt.Sprint(proto.Version) || r.Header.Get("Content-Type") != proto.ContentType {
			writeError(w, 400, proto.CodeUnsupportedVersion, "headers")
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		ctx := r.Context()
		if f.subjects.Load() {
			ctx = context.WithValue(ctx, subjectKey{}, strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
		}
		answer, err := h(ctx, body)
		if e := (*Error)(nil); errors.As(err, &e) {
			writeError(w, proto.StatusOf(e.Code), e.Code, e.Message)
			return
		}
		if err != nil {
			writeError(w, 400, proto.CodeMalformed, err.Error())
			return
		}
		b, err := proto.Encode(answer)
		if err != nil {
			f.t.Error(err)
			return
		}
		w.Header().Set("Content-Type", proto.ContentType)
		w.Write(b)
	}
}

func (f *fakeServer) helloAnswer() proto.HelloResponse {
	a := f.plainHello()
	if fn := f.rewriteHello.Load(); fn != nil {
		a = (*fn)(a)
	}
	return a
}

func (f *fakeServer) plainHello() proto.HelloResponse {
	return proto.HelloResponse{Protocol: proto.Version, ServerTime: f.eng.ServerTime(), ServerReplica: "srv",
		MaxPush: uint64(f.maxPush), MaxPull: proto.DefaultMaxPullRecords, MaxBodyBytes: proto.DefaultMaxBodyBytes,
		MaxDrift: uint64(f.eng.MaxDrift().Milliseconds()), MaxPageBytes: proto.DefaultMaxPageBytes, MaxMessageBytes: uint64(cmp.Or(f.maxMessage.Load(), proto.DefaultMaxMessageBytes))}
}

func (f *fakeServer) hello(ctx context.Context, body []byte) (any, error) {
	var req proto.HelloRequest
	if err := proto.Decode(body, &req); err != nil {
		return nil, err
	}
	a := f.helloAnswer()
	if sub, ok := ctx.Value(subjectKey{}).(string); ok {
		a.Subject = sub
	}
	return a, nil
}

// subjectKey is the context key of a request's subject (fakeServer.subjects).
type subjectKey struct{}

func refusal(err error) proto.PushResult {
	code := proto.CodeInvalid
	switch {
	case errors.Is(err, crdt.ErrClockDrift):
		code = proto.CodeClockDrift
	case errors.Is(err, crdt.ErrTooLarge), errors.Is(err, engine.ErrTooLarge):
		code = proto.CodeTooLarge
	case errors.Is(err, crdt.ErrMalformed):
		code = proto.CodeMalformed
	case errors.Is(err, engine.ErrOutOfScope):
		code = proto.CodeOutOfScope
	case errors.Is(err, engine.ErrSchema):
		code = proto.CodeSchema
	case errors.Is(err, errCollected):
		code = proto.CodeCollected
	}
	return proto.PushResult{Status: proto.StatusRefused, Code: code, Message: err.Error()}
}

func (f *fakeServer) push(ctx context.Context, body []byte) (any, error) {
	var req proto.PushRequest
	var err error
	if sub, ok := ctx.Value(subjectKey{}).(string); ok {
		req, err = proto.DecodePush(body, proto.ReplicaPrefix(sub))
	} else {
		err = proto.Decode(body, &req)
	}
	if err != nil {
		return nil, err
	}
	if code := f.refusedWhole(req.Changes); code != "" {
		return nil, &Error{Code: code, Message: "refused whole by the test"}
	}
	return f.apply(ctx, req)
}

// refusedWhole is the code refuseWhole gives changes, "" for none.
func (f *fakeServer) refusedWhole(changes []crdt.Change) string {
	if fn := f.refuseWhole.Load(); fn != nil {
		return (*fn)(changes)
	}
	return ""
}

// apply serves a push, over HTTP or a live session.
func (f *fakeServer) apply(ctx context.Context, req proto.PushRequest) (proto.PushResponse, error) {
	f.pushes.Add(1)
	f.smu.Lock()
	for _, ch := range req.Changes {
		f.pushed[ch.Collection+"/"+ch.Record.ID]++
		f.pushedRecords[ch.Collection+"/"+ch.Record.ID] = append(f.pushedRecords[ch.Collection+"/"+ch.Record.ID], ch.Record.Clone())
	}
	f.smu.Unlock()
	var opts []engine.ApplyOption
	if ws := f.writeScope.Load(); ws != nil {
		opts = append(opts, engine.WithWriteScope(func(string) (*scope.Pred, error) { return ws, nil }))
	}
	// A change stamped before the write horizon is refused collected; the
	// engine applies the others.
	horizon := f.horizon.Load()
	collected := make([]bool, len(req.Changes))
	var apply []crdt.Change
	for i, ch := range req.Changes {
		if horizon != 0 && slices.ContainsFunc(stampsOf(ch.Record), func(s crdt.Stamp) bool { return s.Wall < horizon }) {
			collected[i] = true
			continue
		}
		apply = append(apply, ch)
	}
	applied, err := f.eng.Apply(ctx, apply, opts...)
	if err != nil {
		return proto.PushResponse{}, err
	}
	res := make([]engine.Result, len(req.Changes))
	for i := range res {
		if collected[i] {
			res[i] = engine.Result{Status: engine.StatusRefused, Err: fmt.Errorf("%w: a stamp of %s is before the write horizon", errCollected, req.Changes[i].Record.ID)}
			continue
		}
		res[i], applied = applied[0], applied[1:]
	}
	var a proto.PushResponse
	for i, r := range res {
		switch {
		case req.Refused != nil && req.Refused[i] != nil:
			a.Results = append(a.Results, refusal(req.Refused[i]))
		case r.Status == engine.StatusRefused:
			a.Results = append(a.Results, refusal(r.Err))
		default:
			a.Results = append(a.Results, proto.PushResult{Status: r.Status, Lost: r.Lost})
		}
	}
	return a, nil
}

// fakePage is a page of a collection as the server sends it.
type fakePage struct {
	records []crdt.Record
	leaves  [][]byte
	next    []byte
	more    bool
}

// page reads a page of coll after cursor under the client's scope sc (its
// wire form; none when empty), as the server sends it, and notes sc.
func (f *fakeServer) page(ctx context.Context, coll string, cursor []byte, limit int, sc []byte) (fakePage, error) {
	cur, err := engine.ParseCursor(cursor)
	if err != nil {
		return fakePage{}, err
	}
	var pred *scope.Pred
	if len(sc) > 0 {
		if pred, err = scope.Decode(sc); err != nil {
			return fakePage{}, err
		}
	}
	p, err := f.eng.PullScoped(ctx, coll, cur, engine.PageLimit{Records: limit}, pred)
	if err != nil {
		return fakePage{}, err
	}
	out := fakePage{records: []crdt.Record{}, next: p.Next.Bytes(), more: p.More}
	for _, e := range p.Entries {
		out.records = append(out.records, e.Record)
	}
	for _, l := range p.Left {
		out.leaves = append(out.leaves, proto.LeaveDigest(coll, l.ID))
	}
	return out, nil
}

// noteScope records the scope of a pull or sub.
func (f *fakeServer) noteScope(sc []byte) {
	f.smu.Lock()
	defer f.smu.Unlock()
	f.scopes = append(f.scopes, string(sc))
}

// seenScopes returns the scopes of the pulls and subs received so far.
func (f *fakeServer) seenScopes() []string {
	f.smu.Lock()
	defer f.smu.Unlock()
	return slices.Clone(f.scopes)
}

// errCollected is the fake's refusal of a change stamped before the write
// horizon.
var errCollected = errors.New("collected")

// leaseNote is what a pull or sub said of its reader.
type leaseNote struct {
	collection, replica string
	pending             *uint64
	live                bool
}

// lease notes what a pull or sub said of its reader, and reports whether
// the reader's lease expired: a reader named before its collection was
// collected, reading from a cursor.
func (f *fakeServer) lease(n leaseNote, cursor []byte) (expired bool) {
	f.smu.Lock()
	defer f.smu.Unlock()
	f.leases = append(f.leases, n)
	cur, err := engine.ParseCursor(cursor)
	if err != nil {
		return false
	}
	if cur.IsStart() {
		delete(f.expiredLeases[n.collection], n.replica)
		return false
	}
	return f.expiredLeases[n.collection][n.replica]
}

// seenLeases returns what the pulls and subs received so far said of
// their readers.
func (f *fakeServer) seenLeases() []leaseNote {
	f.smu.Lock()
	defer f.smu.Unlock()
	return slices.Clone(f.leases)
}

// pushedOf returns how many times a change of coll/id was pushed.
func (f *fakeServer) pushedOf(coll, id string) int {
	f.smu.Lock()
	defer f.smu.Unlock()
	return f.pushed[coll+"/"+id]
}

// pushedValues returns the title of each change of coll/id pushed, in
// order ("" for a change that sets none).
func (f *fakeServer) pushedValues(t *testing.T, coll, id string) []string {
	t.Helper()
	f.smu.Lock()
	defer f.smu.Unlock()
	var out []string
	for _, rec := range f.pushedRecords[coll+"/"+id] {
		var v string
		if fl, ok := rec.Fields["title"]; ok && fl.Value != nil {
			if err := crdt.DecodeValue(fl.Value, &v); err != nil {
				t.Fatal(err)
			}
		}
		out = append(out, v)
	}
	return out
}

// collect runs the horizon job on coll as if the lease of every reader
// named so far had expired: the read horizon is the head of its log, the
// write horizon wall (ms); from then on the server refuses changes stamped
// before wall (collected) and resets those readers' cursors
// (lease_expired).
func (f *fakeServer) collect(coll string, wall int64) stores.PurgeResult {
	f.t.Helper()
	ctx := context.Background()
	head, err := f.eng.Head(ctx, coll)
	if err != nil {
		f.t.Fatal(err)
	}
	f.horizon.Store(wall)
	m, err := f.mem.Meta(ctx, coll)
	if err != nil {
		f.t.Fatal(err)
	}
	var total stores.PurgeResult
	scan := stores.PurgeScan{}
	for {
		res, err := f.mem.Purge(ctx, coll, stores.Horizon{Epoch: m.Epoch, Read: []uint64{head}, Wall: wall}, scan)
		if err != nil {
			f.t.Fatal(err)
		}
		total.Scanned += res.Scanned
		total.Records += res.Records
		total.Deletes += res.Deletes
		total.Fields += res.Fields
		if !res.More {
			break
		}
		scan.After = res.Next
	}
	f.smu.Lock()
	expired := map[string]bool{}
	for _, n := range f.leases {
		if n.collection == coll {
			expired[n.replica] = true
		}
	}
	f.expiredLeases[coll] = expired
	f.smu.Unlock()
	return total
}

func (f *fakeServer) pull(ctx context.Context, body []byte) (any, error) {
	var req proto.PullRequest
	if err := proto.Decode(body, &req); err != nil {
		return nil, err
	}
	f.noteScope(req.Scope)
	if f.lease(leaseNote{collection: req.Collection, replica: req.Replica, pending: req.Pending}, req.Cursor) {
		return proto.PullResponse{Records: []crdt.Record{}, Next: []byte{}, Reset: &proto.ResetInfo{Reason: proto.ResetLeaseExpired, Message: "lease expired"}}, nil
	}
	a, err := f.pullAnswer(ctx, req)
	if rw := f.rewritePull.Load(); rw != nil && err == nil {
		a = (*rw)(req, a)
	}
	return a, err
}

// pullAnswer is the engine's answer to pull req.
func (f *fakeServer) pullAnswer(ctx context.Context, req proto.PullRequest) (proto.PullResponse, error) {
	p, err := f.page(ctx, req.Collection, req.Cursor, int(req.Limit), req.Scope)
	var re *engine.ResetError
	if errors.As(err, &re) {
		return proto.PullResponse{Records: []crdt.Record{}, Next: []byte{}, Reset: &proto.ResetInfo{Reason: re.Reason.String(), Message: "reset"}}, nil
	}
	if err != nil {
		return proto.PullResponse{}, err
	}
	return proto.PullResponse{Records: p.records, Leaves: p.leaves, Next: p.next, More: p.more}, nil
}

// live serves a WebSocket: hello, then subs streamed from the engine, each
// starting with a page even when it is empty. The control channel of a
// connection takes "drop" (close it abruptly), "resync:<coll>" (stop
// streaming coll and send resync), "forbid" (send a fatal forbidden error),
// "revoke" (send a revoked error and close),
// "mute" (stop answering pings), "raw:<hex>" (send these bytes as a frame).
func (f *fakeServer) live(w http.ResponseWriter, r *http.Request) {
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	f.liveDials.Add(1)
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
	send := func(m proto.Message) error {
		b, err := proto.EncodeMessage(m)
		if err != nil {
			return err
		}
		return conn.Write(ctx, websocket.MessageBinary, b)
	}
	_, b, err := conn.Read(ctx)
	if err != nil {
		return
	}
	m, err := proto.DecodeClientMessage(b, proto.Session{})
	h, ok := m.(proto.Hello)
	if err != nil || !ok {
		send(proto.ErrorMessage{Code: proto.CodeMalformed, Message: "hello first"})
		return
	}
	if h.Protocol != proto.Version {
		send(proto.ErrorMessage{Code: proto.CodeUnsupportedVersion, Message: "version"})
		return
	}
	if h.Token == "bad" {
		send(proto.ErrorMessage{Code: proto.CodeUnauthenticated, Message: "bad token"})
		return
	}
	if e := f.expired.Load(); e != nil && h.Token == *e {
		send(proto.ErrorMessage{Code: proto.CodeTokenExpired, Message: "the token expired"})
		conn.Close(websocket.StatusPolicyViolation, "token expired")
		return
	}
	if f.revoked.Load() {
		send(proto.ErrorMessage{Code: proto.CodeRevoked, Message: "access to this server was revoked"})
		return
	}
	welcome := f.helloAnswer()
	if err := send(proto.Welcome{Hello: welcome}); err != nil {
		return
	}
	session := proto.Session{Replica: h.Replica, Base: welcome.ServerTime}
	var muted atomic.Bool
	var (
		smu     sync.Mutex
		streams = map[string]context.CancelFunc{}
	)
	stream := func(coll string, cursor, sc []byte) {
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
			for first := true; ; first = false {
				p, err := f.page(sctx, coll, cursor, 1000, sc)
				if err != nil {
					return
				}
				if len(p.records) > 0 || len(p.leaves) > 0 || p.more || first {
					if send(proto.Changes{Collection: coll, Records: p.records, Leaves: p.leaves, Next: p.next, More: p.more}) != nil {
						return
					}
					cursor = p.next
				}
				if p.more {
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
					send(proto.ErrorMessage{Code: proto.CodeForbidden, Message: "no"})
					conn.Close(websocket.StatusPolicyViolation, "forbidden")
					return
				case c == "revoke":
					send(proto.ErrorMessage{Code: proto.CodeRevoked, Message: "access to this server was revoked"})
					conn.Close(websocket.StatusPolicyViolation, "revoked")
					return
				case strings.HasPrefix(c, "resync:"):
					coll := strings.TrimPrefix(c, "resync:")
					smu.Lock()
					if s := streams[coll]; s != nil {
						s()
						delete(streams, coll)
					}
					smu.Unlock()
					send(proto.Resync{Collection: coll})
				case strings.HasPrefix(c, "raw:"):
					b, err := hex.DecodeString(strings.TrimPrefix(c, "raw:"))
					if err != nil {
						f.t.Error(err)
						return
					}
					conn.Write(ctx, websocket.MessageBinary, b)
				}
			}
		}
	}()
	for {
		_, b, err := conn.Read(ctx)
		if err != nil {
			return
		}
		m, err := proto.DecodeClientMessage(b, session)
		if err != nil {
			return
		}
		switch m := m.(type) {
		case proto.PushLive:
			id := livePushID(f.livePushes.Add(1))
			if fp := f.fail.Load(); fp != nil {
				if status, code := (*fp)(proto.PathPush); status != 0 {
					send(proto.Pushed{Code: code, Message: "injected", RequestID: id})
					continue
				}
			}
			if f.revoked.Load() {
				send(proto.ErrorMessage{Code: proto.CodeRevoked, Message: "access to this server was revoked"})
				conn.Close(websocket.StatusPolicyViolation, "revoked")
				return
			}
			if code := f.refusedWhole(m.Changes); code != "" {
				send(proto.Pushed{Code: code, Message: "refused whole by the test", RequestID: id})
				continue
			}
			a, err := f.apply(ctx, proto.PushRequest{Replica: m.Session.Replica, Changes: m.Changes, Versions: m.Versions, Refused: m.Refused})
			if err != nil {
				send(proto.Pushed{Code: proto.CodeMalformed, Message: err.Error(), RequestID: id})
				continue
			}
			if f.holdLive.Load() {
				continue
			}
			send(proto.Pushed{Results: a.Results, RequestID: id})
		case proto.Sub:
			f.subs.Add(1)
			if f.resetSubs.Load() {
				send(proto.Reset{Collection: m.Collection, Reason: proto.ResetRebuilt, Message: "again"})
				continue
			}
			if f.pageResetSubs.Load() {
				send(proto.Changes{Collection: m.Collection, Next: m.Cursor})
				send(proto.Reset{Collection: m.Collection, Reason: proto.ResetRebuilt, Message: "again"})
				continue
			}
			if rf := f.refuseSub.Load(); rf != nil {
				if code := (*rf)(m.Collection); code != "" {
					send(proto.ErrorMessage{Code: code, Message: "refused by the test", Collection: m.Collection})
					continue
				}
			}
			f.noteScope(m.Scope)
			if f.lease(leaseNote{collection: m.Collection, replica: m.Replica, pending: m.Pending, live: true}, m.Cursor) {
				send(proto.Reset{Collection: m.Collection, Reason: proto.ResetLeaseExpired, Message: "lease expired"})
				continue
			}
			stream(m.Collection, m.Cursor, m.Scope)
		case proto.Ping:
			if !muted.Load() {
				send(proto.Pong{Nonce: m.Nonce})
			}
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
