package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/crdt/scope"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores/memory"
	"github.com/convergo/convergo/transport"
	"github.com/convergo/convergo/transport/client"
	"github.com/convergo/convergo/transport/proto"
)

// realServer runs a transport.Server over a memory store with the given
// collection rules and returns its engine, its URL and a token issuer.
func realServer(t *testing.T, rules ...engine.Rule) (*engine.Engine, string, *transport.JWT) {
	t.Helper()
	eng, err := engine.Open(engine.Config{Store: memory.New(), Rules: rules})
	return serve(t, eng, err)
}

// serve runs a transport.Server over eng (opened with err) and returns
// eng, its URL and a token issuer; the test's cleanup shuts both down.
func serve(t *testing.T, eng *engine.Engine, err error) (*engine.Engine, string, *transport.JWT) {
	t.Helper()
	return serveThrough(t, eng, err, func(h http.Handler) http.Handler { return h })
}

// serveThrough is serve with the server's handler wrapped by wrap.
func serveThrough(t *testing.T, eng *engine.Engine, err error, wrap func(http.Handler) http.Handler) (*engine.Engine, string, *transport.JWT) {
	t.Helper()
	return serveConfig(t, eng, err, transport.Config{}, wrap)
}

// serveConfig is serveThrough of a server configured as cfg (its limits,
// its seal key), whose engine and authorizer it sets.
func serveConfig(t *testing.T, eng *engine.Engine, err error, cfg transport.Config, wrap func(http.Handler) http.Handler) (*engine.Engine, string, *transport.JWT) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	auth, err := transport.NewJWT([]byte("client-test-secret-0123456789"), nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Engine, cfg.Authorizer = eng, auth
	srv, err := transport.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(wrap(srv))
	t.Cleanup(func() {
		hs.CloseClientConnections()
		hs.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		eng.Close()
	})
	return eng, hs.URL, auth
}

// TestRealServerRevoked denies a subject on a real server: the next sync
// of its replica purges the records and moves the outbox to the rejected
// changes with code revoked, and the replica syncs no more.
func TestRealServerRevoked(t *testing.T) {
	eng, url, auth := realServer(t)
	ctx := t.Context()
	token, err := auth.Issue("alice", []string{"notes"}, []string{"notes"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	r := helloReplica(t, client.Config{URL: url, Token: token, Device: "laptop"}, client.ReplicaConfig{})
	if err := r.Set("notes", "n1", "title", "kept"); err != nil {
		t.Fatal(err)
	}
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.Set("notes", "n2", "title", "queued"); err != nil {
		t.Fatal(err)
	}

	if err := transport.Deny(ctx, eng, transport.DenyEntry{ID: transport.DenySubject + "alice", Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	// The server follows its deny list: wait until it refuses.
	deadline := time.Now().Add(10 * time.Second)
	for {
		err = r.Pull(ctx)
		if errors.Is(err, client.ErrRevoked) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatal("the server never revoked alice")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := r.Records("notes"); len(got) != 0 {
		t.Fatalf("%d records held after revoked", len(got))
	}
	if got := r.Pending(); len(got) != 0 {
		t.Fatalf("outbox %+v after revoked", got)
	}
	rej := r.Rejected()
	if len(rej) != 1 || rej[0].RecordID != "n2" || rej[0].Code != proto.CodeRevoked {
		t.Fatalf("rejected %+v, want n2 with code revoked", rej)
	}
	if err := r.Sync(ctx); !errors.Is(err, client.ErrRevoked) {
		t.Fatalf("sync after revoked: %v, want ErrRevoked", err)
	}
	if err := r.Set("notes", "n3", "title", "x"); !errors.Is(err, client.ErrRevoked) {
		t.Fatalf("write after revoked: %v, want ErrRevoked", err)
	}
}

// TestRealServerLiveRevoked denies a subject whose replica is live: the
// server ends the session with revoked, and Live returns it after the
// replica purged itself.
func TestRealServerLiveRevoked(t *testing.T) {
	eng, url, auth := realServer(t)
	ctx := t.Context()
	token, err := auth.Issue("bob", []string{"notes"}, []string{"notes"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	r := helloReplica(t, client.Config{URL: url, Token: token, Device: "phone"}, client.ReplicaConfig{})
	if err := r.Set("notes", "n1", "title", "synced"); err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- r.Live(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for len(r.Records("notes")) == 0 || len(r.Cursor("notes")) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("live never delivered n1")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := transport.Deny(ctx, eng, transport.DenyEntry{ID: transport.DenySubject + "bob", Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, client.ErrRevoked) {
			t.Fatalf("live: %v, want ErrRevoked", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("live went on after bob was denied")
	}
	if got := r.Records("notes"); len(got) != 0 {
		t.Fatalf("%d records held after revoked", len(got))
	}
}

// replicaOf returns a replica of notes through a client of url with token
// and scopes, bound by a hello.
func replicaOf(t *testing.T, url, token, device string, scopes map[string]*scope.Pred, cfg client.ReplicaConfig) *client.Replica {
	t.Helper()
	ccfg := client.Config{URL: url, Token: token, Device: device}
	if scopes != nil {
		ccfg.Scopes = map[string]map[string]*scope.Pred{"notes": scopes}
	}
	return helloReplica(t, ccfg, cfg)
}

// helloReplica returns a replica of notes with cfg through a client with
// ccfg, bound by a hello.
func helloReplica(t *testing.T, ccfg client.Config, cfg client.ReplicaConfig) *client.Replica {
	t.Helper()
	c, err := client.New(ccfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Hello(t.Context()); err != nil {
		t.Fatal(err)
	}
	cfg.Collections = []string{"notes"}
	r, err := client.NewReplica(c, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func parse(t *testing.T, text string) *scope.Pred {
	t.Helper()
	p, err := scope.Parse(text)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// put writes field name of each record through r and pushes it.
func put(t *testing.T, r *client.Replica, name string, values map[string]string) {
	t.Helper()
	for _, id := range slices.Sorted(maps.Keys(values)) {
		if err := r.Set("notes", id, name, values[id]); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func held(r *client.Replica) []string {
	var out []string
	for id, rec := range r.Records("notes") {
		if rec.Exists() {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// TestRealServerScopeChange narrows a reader of a real server and changes
// its scopes, over HTTP and live: each change gets the difference.
func TestRealServerScopeChange(t *testing.T) {
	_, url, auth := realServer(t)
	ctx := t.Context()
	admin, err := auth.Issue("admin", []string{"notes"}, []string{"notes"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	reader, err := auth.Issue("carol", []string{"notes"}, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	w := replicaOf(t, url, admin, "desk", nil, client.ReplicaConfig{})
	put(t, w, "list", map[string]string{"n1": "home", "n2": "work", "n3": "work"})

	var mu sync.Mutex
	var left []string
	r := replicaOf(t, url, reader, "phone", map[string]*scope.Pred{"mine": parse(t, `list == "home"`)},
		client.ReplicaConfig{OnLeave: func(_, id string) { mu.Lock(); left = append(left, id); mu.Unlock() }})
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := held(r); !slices.Equal(got, []string{"n1"}) {
		t.Fatalf("scoped to home: %v, want [n1]", got)
	}
	if err := r.Client().SetScope("notes", "mine", parse(t, `list == "work"`)); err != nil {
		t.Fatal(err)
	}
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := held(r); !slices.Equal(got, []string{"n2", "n3"}) {
		t.Fatalf("scoped to work: %v, want [n2 n3]", got)
	}
	mu.Lock()
	if !slices.Equal(left, []string{"n1"}) {
		t.Fatalf("OnLeave saw %v, want [n1]", left)
	}
	mu.Unlock()

	// Live: a scope added while subscribed, then a record moved out.
	ctx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { errc <- r.Live(ctx) }()
	defer func() {
		cancel()
		if err := <-errc; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("live: %v", err)
		}
	}()
	if err := r.Client().SetScope("notes", "home", parse(t, `list == "home"`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "every note", func() bool { return slices.Equal(held(r), []string{"n1", "n2", "n3"}) })
	put(t, w, "list", map[string]string{"n2": "archive"})
	waitFor(t, "n2 to leave", func() bool { return slices.Equal(held(r), []string{"n1", "n3"}) })
}

// TestRealServerWriteScope gives a writer a token whose cvg_scopes claim
// holds it to its own notes: an edit outside is rejected out_of_scope, and
// a note moved out by someone else leaves the replica while the writer's
// pending edit of it stays queued until the server refuses it.
func TestRealServerWriteScope(t *testing.T) {
	_, url, auth := realServer(t)
	ctx := t.Context()
	admin, err := auth.Issue("admin", []string{"notes"}, []string{"notes"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	own, err := auth.IssueToken(transport.TokenSpec{Subject: "dave", Read: []string{"notes"}, Write: []string{"notes"},
		TTL: time.Hour, Scopes: map[string]*scope.Pred{"notes": parse(t, `owner == $sub`)}})
	if err != nil {
		t.Fatal(err)
	}
	w := replicaOf(t, url, admin, "desk", nil, client.ReplicaConfig{})
	put(t, w, "owner", map[string]string{"d1": "dave", "d2": "dave", "e1": "erin"})

	r := replicaOf(t, url, own, "laptop", nil, client.ReplicaConfig{})
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := held(r); !slices.Equal(got, []string{"d1", "d2"}) {
		t.Fatalf("dave holds %v, want [d1 d2]", got)
	}
	// A note outside the write scope: refused.
	if err := r.Set("notes", "x1", "owner", "erin"); err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	rej := r.Rejected()
	if len(rej) != 1 || rej[0].RecordID != "x1" || !errors.Is(rej[0].Err(), client.ErrOutOfScope) {
		t.Fatalf("rejected %+v, want x1 refused out_of_scope", rej)
	}
	// d1 is moved out while dave edits it offline.
	if err := r.Set("notes", "d1", "title", "mine"); err != nil {
		t.Fatal(err)
	}
	put(t, w, "owner", map[string]string{"d1": "erin"})
	if err := r.Pull(ctx); err != nil {
		t.Fatal(err)
	}
	if got := r.Pending(); len(got) != 1 || got[0].Record.ID != "d1" {
		t.Fatalf("outbox %+v, want dave's edit of d1", got)
	}
	if v, _ := r.Get("notes", "d1"); v.Values()["owner"] != nil {
		t.Fatalf("d1 left but its server version stays: %+v", v)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	rej = r.Rejected()
	if len(rej) != 2 || rej[1].RecordID != "d1" || rej[1].Code != proto.CodeOutOfScope {
		t.Fatalf("rejected %+v, want d1's edit refused out_of_scope", rej)
	}
	if _, ok := r.Get("notes", "d1"); ok {
		t.Fatal("d1 is still held after its edit was refused")
	}
	if got := held(r); !slices.Equal(got, []string{"d2"}) {
		t.Fatalf("dave holds %v, want [d2]", got)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRealServerSchema: a change the collection's schema refuses is a
// rejected change with code schema, and the valid ones go through.
func TestRealServerSchema(t *testing.T) {
	rules, err := engine.ParseRules([]byte(`{"notes": {"schema": {"fields": {"title": {"type": "string"}}}}}`))
	if err != nil {
		t.Fatal(err)
	}
	_, url, auth := realServer(t, rules...)
	token, err := auth.Issue("frank", []string{"notes"}, []string{"notes"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	r := replicaOf(t, url, token, "desk", nil, client.ReplicaConfig{})
	if err := r.Set("notes", "ok", "title", "text"); err != nil {
		t.Fatal(err)
	}
	if err := r.Set("notes", "bad", "title", 42); err != nil {
		t.Fatal(err)
	}
	if err := r.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	rej := r.Rejected()
	if len(rej) != 1 || rej[0].RecordID != "bad" || rej[0].Code != proto.CodeSchema || !errors.Is(rej[0].Err(), client.ErrSchema) {
		t.Fatalf("rejected %+v, want bad refused schema", rej)
	}
	if got := held(r); !slices.Equal(got, []string{"ok"}) {
		t.Fatalf("held %v, want [ok]", got)
	}
}

// collectingServer runs a transport.Server whose engine collects the
// tombstones of notes (MaxOffline an hour) when the test calls Collect,
// on a clock the test moves (ms in now).
func collectingServer(t *testing.T, now *atomic.Int64) (*engine.Engine, string, *transport.JWT) {
	t.Helper()
	eng, err := engine.Open(engine.Config{
		Store:        memory.New(),
		Rules:        []engine.Rule{{Pattern: "notes", MaxOffline: time.Hour}},
		Now:          func() time.Time { return time.UnixMilli(now.Load()) },
		CollectEvery: -1,
		CollectGrace: -1,
	})
	return serve(t, eng, err)
}

// awayScene is TestRealServerLeaseExpired's set: alice's laptop synced
// n1, n2 and n3 of notes, went offline and edited n1 and n2 and created
// n4; her phone deleted n2; two hours later (MaxOffline is one) the
// server collected n2's tombstone.
type awayScene struct {
	eng    *engine.Engine
	now    atomic.Int64
	laptop *client.Replica
	spy    *pushSpy // the laptop's pushes
	left   []string
	lmu    sync.Mutex
}

// pushSpy notes the ids of the records of the changes pushed through it.
type pushSpy struct {
	mu  sync.Mutex
	ids map[string]int
}

func (p *pushSpy) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Path == proto.PathPush && req.Body != nil {
		body, err := io.ReadAll(req.Body)
		if err != nil {
			return nil, err
		}
		req.Body = io.NopCloser(bytes.NewReader(body))
		// The spy counts changes, not replicas: any prefix reads a push
		// that names its replica by its device part.
		if push, err := proto.DecodePush(body, proto.ReplicaPrefix("")); err == nil {
			p.mu.Lock()
			for _, ch := range push.Changes {
				p.ids[ch.Record.ID]++
			}
			p.mu.Unlock()
		}
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err == nil && req.URL.Path == proto.PathLive && resp.StatusCode == http.StatusSwitchingProtocols {
		if rwc, ok := resp.Body.(io.ReadWriteCloser); ok {
			resp.Body = &liveSpy{ReadWriteCloser: rwc, p: p}
		}
	}
	return resp, err
}

// liveSpy reads the frames a client writes on its live session and counts
// the changes of its pushes, as pushSpy counts those of HTTP pushes.
type liveSpy struct {
	io.ReadWriteCloser
	p   *pushSpy
	buf []byte
}

func (l *liveSpy) Write(b []byte) (int, error) {
	l.buf = append(l.buf, b...)
	for {
		r := bytes.NewReader(l.buf)
		h, err := ws.ReadHeader(r)
		if err != nil || int64(r.Len()) < h.Length {
			break // the rest of the frame is still to come
		}
		start := len(l.buf) - r.Len()
		payload := bytes.Clone(l.buf[start : start+int(h.Length)])
		l.buf = l.buf[start+int(h.Length):]
		ws.Cipher(payload, h.Mask, 0)
		if t, err := proto.PeekType(payload); h.OpCode != ws.OpBinary || err != nil || t != proto.TypePush {
			continue
		}
		// Any session reads the record ids.
		if push, err := proto.DecodePushLive(payload, proto.Session{Replica: "spy"}); err == nil {
			l.p.mu.Lock()
			for _, ch := range push.Changes {
				l.p.ids[ch.Record.ID]++
			}
			l.p.mu.Unlock()
		}
	}
	return l.ReadWriteCloser.Write(b)
}

func (p *pushSpy) pushed(id string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ids[id]
}

// newAwayScene sets the scene; fresh is the laptop's
// ReplicaConfig.FreshFor.
func newAwayScene(t *testing.T, fresh time.Duration) *awayScene {
	t.Helper()
	ctx := t.Context()
	s := &awayScene{spy: &pushSpy{ids: map[string]int{}}}
	s.now.Store(time.Now().UnixMilli())
	eng, url, auth := collectingServer(t, &s.now)
	s.eng = eng
	token, err := auth.Issue("alice", []string{"notes"}, []string{"notes"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	replica := func(device string, onLeave func(coll, id string)) *client.Replica {
		cfg := client.Config{URL: url, Token: token, Device: device}
		if onLeave != nil {
			cfg.HTTPClient = &http.Client{Transport: s.spy}
		}
		c, err := client.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Hello(ctx); err != nil {
			t.Fatal(err)
		}
		r, err := client.NewReplica(c, client.ReplicaConfig{Collections: []string{"notes"}, OnLeave: onLeave, FreshFor: fresh})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	phone := replica("phone", nil)
	s.laptop = replica("laptop", func(coll, id string) {
		s.lmu.Lock()
		defer s.lmu.Unlock()
		s.left = append(s.left, coll+"/"+id)
	})
	for _, id := range []string{"n1", "n2", "n3"} {
		if err := phone.Set("notes", id, "title", "first"); err != nil {
			t.Fatal(err)
		}
	}
	if err := phone.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	// The server has collected notes since now: its write horizon is
	// held for MaxOffline from its first horizon of them.
	if _, err := eng.Collect(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.laptop.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := liveIDs(s.laptop); !slices.Equal(got, []string{"n1", "n2", "n3"}) {
		t.Fatalf("laptop holds %v", got)
	}
	for _, w := range [][2]string{{"n1", "edited"}, {"n2", "lost"}, {"n4", "new"}} {
		if err := s.laptop.Set("notes", w[0], "title", w[1]); err != nil {
			t.Fatal(err)
		}
	}
	if err := phone.Delete("notes", "n2"); err != nil {
		t.Fatal(err)
	}
	if err := phone.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	// Two hours on, the phone is still about (its lease renewed at the
	// head), the laptop is not.
	s.now.Add((2 * time.Hour).Milliseconds())
	if _, err := phone.Client().Hello(ctx); err != nil {
		t.Fatal(err)
	}
	if err := phone.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	reports, err := eng.Collect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(reports) != 1 || reports[0].Records != 1 {
		t.Fatalf("collect: %+v, want n2 removed", reports)
	}
	s.spy.mu.Lock()
	clear(s.spy.ids) // count from here
	s.spy.mu.Unlock()
	return s
}

// liveIDs returns the ids of the records of notes that exist in r's view.
func liveIDs(r *client.Replica) []string {
	var out []string
	for id, rec := range r.Records("notes") {
		if rec.Exists() {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// reconciledPushes is how many times the laptop pushes each offline write
// when it reconciles before it pushes: n2's edit never, n1's and n4 twice
// (refused collected, then re-stamped).
var reconciledPushes = map[string]int{"n1": 2, "n2": 0, "n4": 2}

// check checks the end: n2 dropped from the laptop without a delete and
// its edit rejected collected; n1's edit and n4 on the server; each
// offline write pushed as often as pushes says.
func (s *awayScene) check(t *testing.T, pushes map[string]int) {
	t.Helper()
	for id, want := range pushes {
		if n := s.spy.pushed(id); n != want {
			t.Fatalf("%s pushed %d times, want %d", id, n, want)
		}
	}
	if got := liveIDs(s.laptop); !slices.Equal(got, []string{"n1", "n3", "n4"}) {
		t.Fatalf("laptop holds %v, want n1 n3 n4", got)
	}
	if _, ok := s.laptop.Get("notes", "n2"); ok {
		t.Fatal("the laptop still holds n2")
	}
	s.lmu.Lock()
	left := slices.Clone(s.left)
	s.lmu.Unlock()
	if !slices.Equal(left, []string{"notes/n2"}) {
		t.Fatalf("OnLeave saw %v, want notes/n2", left)
	}
	if p := s.laptop.Pending(); len(p) != 0 {
		t.Fatalf("laptop outbox %+v, want empty", p)
	}
	rej := s.laptop.Rejected()
	if len(rej) != 1 || rej[0].RecordID != "n2" || !errors.Is(rej[0].Err(), client.ErrCollected) {
		t.Fatalf("rejected %+v, want n2's edit, collected", rej)
	}
	got := map[string]string{}
	page, err := s.eng.Pull(t.Context(), "notes", engine.Cursor{}, engine.PageLimit{Records: 100})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range page.Entries {
		if !e.Record.Exists() {
			continue
		}
		var title string
		if err := crdt.DecodeValue(e.Record.Fields["title"].Value, &title); err != nil {
			t.Fatal(err)
		}
		got[e.Record.ID] = title
	}
	want := map[string]string{"n1": "edited", "n3": "first", "n4": "new"}
	if !maps.Equal(got, want) {
		t.Fatalf("server holds %v, want %v", got, want)
	}
}

// TestRealServerLeaseExpired: a replica away longer than the collection's
// MaxOffline comes back to a real server that collected a tombstone
// meanwhile. Its pull is reset lease_expired; it drops the collected
// record, rejects its edit of it collected without pushing it, and its
// edit of a surviving record and its new record, refused collected once,
// land re-stamped.
func TestRealServerLeaseExpired(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fresh time.Duration
		sync  func(context.Context, *client.Replica) error
	}{
		// Pull, then Sync.
		{"pull", time.Hour, func(ctx context.Context, r *client.Replica) error {
			return errors.Join(r.Pull(ctx), r.Sync(ctx))
		}},
		// Sync pushes first, but the collection is stale: Flush pulls it
		// first.
		{"sync stale", -1, func(ctx context.Context, r *client.Replica) error { return r.Sync(ctx) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newAwayScene(t, tc.fresh)
			ctx := t.Context()
			// The laptop comes back: its hello corrects its clock to the
			// server's.
			if _, err := s.laptop.Client().Hello(ctx); err != nil {
				t.Fatal(err)
			}
			if err := tc.sync(ctx, s.laptop); err != nil {
				t.Fatal(err)
			}
			s.check(t, reconciledPushes)
		})
	}
}

// TestRealServerCollectedBeforeTheReset: with the collection fresh, Sync
// pushes before it pulls; the server refuses the offline changes
// collected, and the laptop reconciles before it decides: the same end,
// except that the edit of the collected record went out once, refused, and
// the others are re-stamped without being pushed again as they were.
func TestRealServerCollectedBeforeTheReset(t *testing.T) {
	s := newAwayScene(t, time.Hour)
	ctx := t.Context()
	if _, err := s.laptop.Client().Hello(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.laptop.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	// n2's edit once, refused; n1's and n4 refused and held, then
	// re-stamped when the reconciliation kept them.
	s.check(t, map[string]int{"n1": 2, "n2": 1, "n4": 2})
}

// TestRealServerLiveLeaseExpired: the same, learnt by a live subscription.
func TestRealServerLiveLeaseExpired(t *testing.T) {
	s := newAwayScene(t, time.Hour)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.laptop.Live(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	deadline := time.Now().Add(10 * time.Second)
	for len(s.laptop.Pending()) != 0 || len(s.laptop.Rejected()) != 1 || !slices.Equal(liveIDs(s.laptop), []string{"n1", "n3", "n4"}) {
		if time.Now().After(deadline) {
			t.Fatalf("the live reconciliation did not end: outbox %v, rejected %v", s.laptop.Pending(), s.laptop.Rejected())
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.check(t, reconciledPushes)
}

// TestRealServerLease: a pull names the replica and its pending floor, and
// the server keeps them as the replica's lease (engine.LeaseField*).
func TestRealServerLease(t *testing.T) {
	var now atomic.Int64
	now.Store(time.Now().UnixMilli())
	eng, url, auth := collectingServer(t, &now)
	ctx := t.Context()
	token, err := auth.Issue("carol", []string{"notes"}, []string{"notes"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	r := helloReplica(t, client.Config{URL: url, Token: token, Device: "desk"}, client.ReplicaConfig{})
	c := r.Client()
	if err := r.Set("notes", "n1", "title", "pending"); err != nil {
		t.Fatal(err)
	}
	if err := r.Pull(ctx); err != nil {
		t.Fatal(err)
	}
	page, err := eng.Pull(ctx, proto.LeaseCollection, engine.Cursor{}, engine.PageLimit{Records: 100})
	if err != nil {
		t.Fatal(err)
	}
	var lease crdt.Record
	for _, e := range page.Entries {
		if e.Record.ID == "notes/"+c.Replica() {
			lease = e.Record
		}
	}
	if lease.ID == "" {
		t.Fatalf("no lease of notes/%s among %d records", c.Replica(), len(page.Entries))
	}
	var floor int64
	if err := crdt.DecodeValue(lease.Fields[engine.LeaseFieldFloor].Value, &floor); err != nil {
		t.Fatalf("lease floor: %v", err)
	}
	if want := r.Pending()[0].Record.Fields["title"].Stamp.Wall; floor != want {
		t.Fatalf("lease floor %d, want the pending change's wall %d", floor, want)
	}
}

// pullSpy counts, through it, the pull requests that said fresh (key 7)
// and the leave entries of pull answers.
type pullSpy struct {
	fresh, leaves atomic.Int64
}

func (p *pullSpy) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Path != proto.PathPull || req.Body == nil {
		return http.DefaultTransport.RoundTrip(req)
	}
	body, err := io.ReadAll(req.Body)
	if err != nil {
		return nil, err
	}
	req.Body = io.NopCloser(bytes.NewReader(body))
	var pr proto.PullRequest
	if proto.Decode(body, &pr) == nil && pr.Fresh {
		p.fresh.Add(1)
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		return resp, err
	}
	answer, err := peekBody(resp)
	if err != nil {
		return nil, err
	}
	var pa proto.PullResponse
	if proto.Decode(answer, &pa) == nil {
		p.leaves.Add(int64(len(pa.Leaves)))
	}
	return resp, nil
}

// peekBody reads resp's body and puts it back, for a RoundTripper that
// looks at an answer before the client reads it.
func peekBody(resp *http.Response) ([]byte, error) {
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return b, nil
}

// TestRealServerFreshScopedSync: a replica that holds nothing says so on
// its first pull, and its scoped first sync brings its records and no
// leave entries for the others; later pulls carry leaves as usual.
func TestRealServerFreshScopedSync(t *testing.T) {
	_, url, auth := realServer(t)
	ctx := t.Context()
	admin, err := auth.Issue("admin", []string{"notes"}, []string{"notes"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	w := replicaOf(t, url, admin, "desk", nil, client.ReplicaConfig{})
	put(t, w, "list", map[string]string{"n1": "a", "n2": "b", "n3": "b", "n4": "b", "n5": "a"})

	reader, err := auth.Issue("reader", []string{"notes"}, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	spy := &pullSpy{}
	r := helloReplica(t, client.Config{URL: url, Token: reader, Device: "tablet", HTTPClient: &http.Client{Transport: spy},
		Scopes: map[string]map[string]*scope.Pred{"notes": {"a": parse(t, `list == "a"`)}}}, client.ReplicaConfig{})
	if err := r.Pull(ctx); err != nil {
		t.Fatal(err)
	}
	if got := held(r); !slices.Equal(got, []string{"n1", "n5"}) {
		t.Fatalf("holds %v, want n1 n5", got)
	}
	if spy.fresh.Load() != 1 || spy.leaves.Load() != 0 {
		t.Fatalf("first sync: %d fresh pulls, %d leave entries; want 1 and 0", spy.fresh.Load(), spy.leaves.Load())
	}
	put(t, w, "list", map[string]string{"n1": "b"})
	if err := r.Pull(ctx); err != nil {
		t.Fatal(err)
	}
	if got := held(r); !slices.Equal(got, []string{"n5"}) || spy.leaves.Load() != 1 || spy.fresh.Load() != 1 {
		t.Fatalf("after n1 moved out: holds %v, %d leaves, %d fresh pulls", got, spy.leaves.Load(), spy.fresh.Load())
	}
}

// bodySpy keeps the push bodies a client sends.
type bodySpy struct {
	mu     sync.Mutex
	bodies [][]byte
}

func (s *bodySpy) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Path == proto.PathPush && req.Body != nil {
		body, err := io.ReadAll(req.Body)
		if err != nil {
			return nil, err
		}
		req.Body = io.NopCloser(bytes.NewReader(body))
		s.mu.Lock()
		s.bodies = append(s.bodies, body)
		s.mu.Unlock()
	}
	return http.DefaultTransport.RoundTrip(req)
}

// A client with a fixed token names its replica by its device part once a
// hello named the token's subject (docs/protocol.md, "Push": the server
// reads the prefix from the token); with a TokenFunc, whose subject may
// change between the hello and a push, it names the replica whole. Both
// pushes apply as the subject's own writes.
func TestRealServerPushByDevicePart(t *testing.T) {
	_, url, auth := realServer(t)
	ctx := t.Context()
	token, err := auth.Issue("alice", []string{"notes"}, []string{"notes"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, fixed := range []bool{true, false} {
		spy := &bodySpy{}
		cfg := client.Config{URL: url, Device: "laptop", HTTPClient: &http.Client{Transport: spy}}
		if fixed {
			cfg.Token = token
		} else {
			cfg.TokenFunc = func(context.Context) (string, error) { return token, nil }
		}
		c, err := client.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Hello(ctx); err != nil {
			t.Fatal(err)
		}
		s, err := c.Now()
		if err != nil {
			t.Fatal(err)
		}
		res, err := c.Push(ctx, []crdt.Change{{Collection: "notes", Record: crdt.SetField(fmt.Sprint(fixed), "x", []byte{1}, s)}})
		if err != nil || len(res) != 1 || res[0].Status != client.StatusApplied {
			t.Fatalf("fixed %v: push %+v (%v)", fixed, res, err)
		}
		if len(spy.bodies) != 1 {
			t.Fatalf("fixed %v: %d push bodies", fixed, len(spy.bodies))
		}
		hasPrefix := bytes.Contains(spy.bodies[0], []byte(proto.ReplicaPrefix("alice")))
		if back, err := proto.DecodePush(spy.bodies[0], proto.ReplicaPrefix("alice")); err != nil || back.Replica != proto.ReplicaFor("alice", "laptop") {
			t.Fatalf("fixed %v: body %x reads as %q (%v)", fixed, spy.bodies[0], back.Replica, err)
		}
		if hasPrefix == fixed {
			t.Errorf("fixed token %v: body %x carries the prefix: %v", fixed, spy.bodies[0], hasPrefix)
		}
	}
}
