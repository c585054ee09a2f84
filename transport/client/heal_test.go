package client_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/crdt/scope"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/bolt"
	"github.com/convergo/convergo/stores/memory"
	"github.com/convergo/convergo/stores/storetest"
	"github.com/convergo/convergo/transport"
	"github.com/convergo/convergo/transport/client"
	"github.com/convergo/convergo/transport/proto"
)

// lossServer is a server at a fixed URL whose store can go back in time:
// it is restarted on an empty store (a store without persistence that
// restarted, a wiped one) or on an older copy of its bolt file (a backup
// restored). The seal key outlives the store, as `convergo serve` derives
// it from the token secret.
type lossServer struct {
	t     *testing.T
	url   string
	auth  *transport.JWT
	key   []byte
	path  string // the bolt file, "" for memory stores
	lives atomic.Int64
	mu    sync.Mutex
	cur   *lossInstance
	swap  sync.Mutex // one restart at a time
	// wrap, when set, wraps the store of the next start, once.
	wrap func(stores.Store) stores.Store
	// open, when set, opens the store of every start instead of a memory
	// store or the bolt file.
	open func() stores.Store
	// limits are the limits of every start (zero fields: the defaults).
	limits transport.Limits
	// refuse, when set and returning an error for a request's path and
	// body, has the server refuse the request whole with it.
	refuse atomic.Pointer[func(path string, body []byte) *proto.Error]
	// rules, when set, are the collection rules of the next starts, and
	// now their clock; their engines collect only when a test calls
	// Collect.
	rules []engine.Rule
	now   func() time.Time
}

type lossInstance struct {
	srv   *transport.Server
	eng   *engine.Engine
	store stores.Store
}

// readsHome configures a replica that reads the notes of list "home"
// alone.
func readsHome(t *testing.T) func(*client.Config) {
	p, err := scope.Parse(`list == "home"`)
	if err != nil {
		t.Fatal(err)
	}
	return func(c *client.Config) { c.Scopes = map[string]map[string]*scope.Pred{"notes": {"home": p}} }
}

func newLossServer(t *testing.T, onBolt bool) *lossServer {
	t.Helper()
	return newLossServerOn(t, onBolt, nil)
}

func newLossServerOn(t *testing.T, onBolt bool, open func() stores.Store) *lossServer {
	t.Helper()
	auth, err := transport.NewJWT([]byte("client-test-secret-0123456789"), nil)
	if err != nil {
		t.Fatal(err)
	}
	s := &lossServer{t: t, auth: auth, key: []byte("a seal key of 32 bytes, for tests"), open: open}
	if onBolt {
		s.path = filepath.Join(t.TempDir(), "convergo.db")
	}
	s.cur = s.start()
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/live") {
			s.lives.Add(1)
		}
		if refuse := s.refuse.Load(); refuse != nil && r.Method == http.MethodPost {
			body, err := io.ReadAll(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			if e := (*refuse)(r.URL.Path, body); e != nil {
				b, _ := proto.Encode(proto.ErrorBody{Code: e.Code, Message: e.Message, RequestID: "refused-by-test"})
				w.Header().Set("Content-Type", proto.ContentType)
				w.Header().Set(proto.HeaderError, e.Code)
				w.WriteHeader(e.Status)
				_, _ = w.Write(b)
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		s.mu.Lock()
		in := s.cur
		s.mu.Unlock()
		in.srv.ServeHTTP(w, r)
	}))
	s.url = hs.URL
	t.Cleanup(func() {
		hs.CloseClientConnections()
		hs.Close()
		s.mu.Lock()
		in := s.cur
		s.mu.Unlock()
		in.stop(t)
	})
	return s
}

func (s *lossServer) start() *lossInstance {
	s.t.Helper()
	var st stores.Store = memory.New()
	if s.open != nil {
		st = s.open()
	} else if s.path != "" {
		b, err := bolt.Open(context.Background(), s.path, bolt.Options{NoSync: true})
		if err != nil {
			s.t.Fatal(err)
		}
		st = b
	}
	if s.wrap != nil {
		st, s.wrap = s.wrap(st), nil
	}
	ecfg := engine.Config{Store: st}
	if s.rules != nil {
		ecfg.Rules, ecfg.Now, ecfg.CollectEvery, ecfg.CollectGrace = s.rules, s.now, -1, -1
	}
	eng, err := engine.Open(ecfg)
	if err != nil {
		s.t.Fatal(err)
	}
	srv, err := transport.New(transport.Config{Engine: eng, Authorizer: s.auth, SealKey: s.key, Limits: s.limits})
	if err != nil {
		s.t.Fatal(err)
	}
	return &lossInstance{srv: srv, eng: eng, store: st}
}

func (in *lossInstance) stop(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	in.srv.Shutdown(ctx)
	in.eng.Close()
	if err := in.store.Close(); err != nil {
		t.Error(err)
	}
}

// restart stops the server, calls lose (which may put an older copy of
// the bolt file in place), and starts it again on the store that leaves:
// a new memory store, or the bolt file.
func (s *lossServer) restart(lose func()) {
	s.swap.Lock()
	defer s.swap.Unlock()
	s.mu.Lock()
	old := s.cur
	s.mu.Unlock()
	old.stop(s.t)
	if lose != nil {
		lose()
	}
	in := s.start()
	s.mu.Lock()
	s.cur = in
	s.mu.Unlock()
}

// backup copies the bolt file, the server stopped meanwhile, and returns
// a function that restores the copy with its note; with marked, it then
// runs what `convergo store mark-restored` runs (backupAs).
func (s *lossServer) backup(marked bool) func() {
	s.t.Helper()
	if marked {
		return s.backupAs("bak", putBackMarked)
	}
	return s.backupAs("bak", putBackWithNote)
}

// replica returns a replica of "notes" for subject sub, a writer or a
// reader, with cfg's hooks; rt, when set, wraps its HTTP transport.
func (s *lossServer) replica(sub string, write bool, cfg client.ReplicaConfig, mod func(*client.Config)) *client.Replica {
	s.t.Helper()
	var w []string
	if write {
		w = []string{"notes"}
	}
	tok, err := s.auth.Issue(sub, []string{"notes"}, w, time.Hour)
	if err != nil {
		s.t.Fatal(err)
	}
	ccfg := client.Config{URL: s.url, Token: tok, Backoff: client.Backoff{Initial: 5 * time.Millisecond, Max: 200 * time.Millisecond}}
	if mod != nil {
		mod(&ccfg)
	}
	c, err := client.New(ccfg)
	if err != nil {
		s.t.Fatal(err)
	}
	if _, err := c.Hello(s.t.Context()); err != nil {
		s.t.Fatal(err)
	}
	cfg.Collections = []string{"notes"}
	r, err := client.NewReplica(c, cfg)
	if err != nil {
		s.t.Fatal(err)
	}
	return r
}

// served is what the server holds of "notes", as a new reader pulls it.
func (s *lossServer) served(t *testing.T) map[string]crdt.Record {
	t.Helper()
	r := s.replica("auditor", false, client.ReplicaConfig{}, nil)
	defer r.Close()
	if err := r.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	return r.Records("notes")
}

// sameRecords describes how got differs from want, "" when it does not.
func sameRecords(got, want map[string]crdt.Record) string {
	var b strings.Builder
	for _, id := range slices.Sorted(maps.Keys(want)) {
		g, ok := got[id]
		switch {
		case !ok:
			fmt.Fprintf(&b, "  %s missing (want %v)\n", id, want[id])
		case !g.Equal(want[id]):
			fmt.Fprintf(&b, "  %s: %v, want %v\n", id, g, want[id])
		}
	}
	for _, id := range slices.Sorted(maps.Keys(got)) {
		if _, ok := want[id]; !ok {
			fmt.Fprintf(&b, "  %s extra: %v\n", id, got[id])
		}
	}
	return b.String()
}

// eventuallyConverged waits (generously: the machine may be loaded) until
// the server and every replica hold want; sync, when set, is called
// between checks (a replica that is not live syncs then).
func (s *lossServer) eventuallyConverged(t *testing.T, want map[string]crdt.Record, rs map[string]*client.Replica, sync func()) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if sync != nil {
			sync()
		}
		diff := ""
		if d := sameRecords(s.served(t), want); d != "" {
			diff += "server:\n" + d
		}
		for _, name := range slices.Sorted(maps.Keys(rs)) {
			if d := sameRecords(rs[name].Records("notes"), want); d != "" {
				diff += name + ":\n" + d
			}
		}
		if diff == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no convergence on what was acknowledged before the loss:\n%s", diff)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// liveConns is how many live sessions the running server holds, as its
// metrics say.
func (s *lossServer) liveConns(t *testing.T) int {
	t.Helper()
	return s.metric(t, "convergo_live_connections")
}

// metric is the value of the running server's metric series (its name
// and labels as exported), 0 when it exports none.
func (s *lossServer) metric(t *testing.T, series string) int {
	t.Helper()
	s.mu.Lock()
	in := s.cur
	s.mu.Unlock()
	rec := httptest.NewRecorder()
	in.srv.MetricsHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	for line := range strings.Lines(rec.Body.String()) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), series+" "); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatalf("%s %q: %v", series, v, err)
			}
			return n
		}
	}
	return 0
}

// waitLong waits for cond, generously: the machine may be loaded.
func waitLong(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// runLive runs r.Live until the test ends.
func runLive(t *testing.T, r *client.Replica) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Live(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

func set(t *testing.T, r *client.Replica, id, name string, v any) {
	t.Helper()
	if err := r.Set("notes", id, name, v); err != nil {
		t.Fatal(err)
	}
}

// setEach sets field name of records prefix+i to i, for i from from to
// below to.
func setEach(t *testing.T, r *client.Replica, prefix, name string, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		set(t, r, fmt.Sprint(prefix, i), name, i)
	}
}

func syncAll(t *testing.T, rs ...*client.Replica) {
	t.Helper()
	for _, r := range rs {
		if err := r.Sync(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
}

// TestHealLiveAcrossAnEmptyStore: the server restarts on an empty store
// while two replicas hold live sessions (a writer and a reader); both are
// reset, heal, and the server and both converge on everything
// acknowledged, without redialing over and over.
func TestHealLiveAcrossAnEmptyStore(t *testing.T) {
	for _, onBolt := range []bool{false, true} {
		t.Run(map[bool]string{false: "memory", true: "bolt"}[onBolt], func(t *testing.T) {
			s := newLossServer(t, onBolt)
			alice, reader, want := s.liveWriterAndReader(t)
			s.restart(func() {
				if onBolt {
					if err := os.Remove(s.path); err != nil {
						t.Fatal(err)
					}
				}
			})
			s.eventuallyConverged(t, want, map[string]*client.Replica{"alice": alice, "reader": reader}, nil)
			// The sessions opened after the restart stay: a write goes
			// live from alice to the reader with no dial.
			waitLong(t, "both sessions open again", func() bool { return s.liveConns(t) == 2 })
			dials := s.lives.Load()
			set(t, alice, "after", "n", 1)
			if err := alice.Flush(t.Context()); err != nil {
				t.Fatal(err)
			}
			waitLong(t, "the reader to get a write live", func() bool { _, ok := reader.Get("notes", "after"); return ok })
			if n := s.lives.Load() - dials; n != 0 {
				t.Errorf("%d live dials after the heal, want none", n)
			}
		})
	}
}

// liveWriterAndReader sets up the live heal scenarios: alice and bob write
// 10 records each, the reader reads all 20, then alice and the reader run
// live sessions while bob goes away for good, so the reader alone holds
// his records. It returns alice, the reader and the 20 records.
func (s *lossServer) liveWriterAndReader(t *testing.T) (alice, reader *client.Replica, want map[string]crdt.Record) {
	t.Helper()
	alice = s.replica("alice", true, client.ReplicaConfig{}, nil)
	reader = s.replica("reader", false, client.ReplicaConfig{}, nil)
	bob := s.replica("bob", true, client.ReplicaConfig{}, nil)
	for i := range 10 {
		set(t, alice, fmt.Sprint("a", i), "n", i)
		set(t, bob, fmt.Sprint("b", i), "n", i)
	}
	syncAll(t, alice, bob, reader, alice)
	want = reader.Records("notes")
	if len(want) != 20 {
		t.Fatalf("the reader holds %d records, want 20", len(want))
	}
	runLive(t, alice)
	runLive(t, reader)
	return alice, reader, want
}

// union merges the local views of rs: what the server must end up with
// once each has synced.
func union(rs ...*client.Replica) map[string]crdt.Record {
	out := map[string]crdt.Record{}
	for _, r := range rs {
		for id, rec := range r.Records("notes") {
			u, ok := out[id]
			if !ok {
				u = crdt.Record{ID: id}
			}
			u.Merge(rec)
			out[id] = u
		}
	}
	return out
}

// TestHealTwoHoldersConverge: two writers hold the same lost records
// (each wrote some, edited the other's) and both heal at once, over and
// over: the server ends up with exactly the records they held, nothing
// duplicated, nothing older winning.
func TestHealTwoHoldersConverge(t *testing.T) {
	s := newLossServer(t, true)
	alice := s.replica("alice", true, client.ReplicaConfig{}, nil)
	carol := s.replica("carol", true, client.ReplicaConfig{}, nil)
	setEach(t, alice, "r", "a", 0, 8)
	syncAll(t, alice, carol)
	for i := range 4 {
		set(t, carol, fmt.Sprint("r", i), "a", 100+i)
		set(t, carol, fmt.Sprint("c", i), "c", i)
	}
	if err := carol.Delete("notes", "r5"); err != nil {
		t.Fatal(err)
	}
	syncAll(t, carol, alice, carol)
	want := union(alice, carol)
	if d := sameRecords(alice.Records("notes"), want); d != "" {
		t.Fatalf("before the loss alice and carol differ:\n%s", d)
	}
	s.restart(func() {
		if err := os.Remove(s.path); err != nil {
			t.Fatal(err)
		}
	})
	var wg sync.WaitGroup
	for _, r := range []*client.Replica{alice, carol} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 3 {
				if err := r.Sync(t.Context()); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	s.eventuallyConverged(t, want, map[string]*client.Replica{"alice": alice, "carol": carol}, func() { syncAll(t, alice, carol) })
}

// TestHealOfflineWriterComesBack: a writer is offline while the store is
// lost and the others heal; it comes back with acknowledged writes (some
// of them edited by no one else) and a pending outbox, and everything
// reaches the server.
func TestHealOfflineWriterComesBack(t *testing.T) {
	for _, onBolt := range []bool{false, true} {
		t.Run(map[bool]string{false: "empty store", true: "older copy, marked restored"}[onBolt], func(t *testing.T) {
			s := newLossServer(t, onBolt)
			alice := s.replica("alice", true, client.ReplicaConfig{}, nil)
			dave := s.replica("dave", true, client.ReplicaConfig{}, nil)
			for i := range 5 {
				set(t, alice, fmt.Sprint("a", i), "n", i)
				set(t, dave, fmt.Sprint("d", i), "n", i)
			}
			syncAll(t, alice, dave, alice)
			restore := func() {}
			if onBolt {
				restore = s.backup(true)
			}
			// Written after the backup, acknowledged, then lost.
			setEach(t, dave, "d", "n", 5, 10)
			set(t, dave, "a1", "d", "dave's")
			syncAll(t, dave)
			// Dave goes offline with more pending.
			set(t, dave, "d0", "n", "edited offline")
			set(t, dave, "x", "n", "new offline")
			if err := dave.Delete("notes", "d2"); err != nil {
				t.Fatal(err)
			}
			want := union(alice, dave)
			s.restart(func() {
				if !onBolt {
					return
				}
				restore()
			})
			runLive(t, alice)
			// The server heals from alice first; dave comes back later.
			s.eventuallyConverged(t, union(alice), map[string]*client.Replica{"alice": alice}, nil)
			syncAll(t, dave)
			s.eventuallyConverged(t, want, map[string]*client.Replica{"alice": alice, "dave": dave}, func() { syncAll(t, dave) })
		})
	}
}

// TestHealKeepsDeletes: a record deleted and acknowledged before the loss
// stays deleted after the heal, whoever gives back its older state: a
// store restored from a backup taken before the delete, a reader that
// pulled the record before the delete and was away since.
func TestHealKeepsDeletes(t *testing.T) {
	for _, pulled := range []bool{false, true} {
		t.Run(map[bool]string{false: "the deleter only pushed the delete", true: "the deleter pulled after its delete"}[pulled], func(t *testing.T) {
			s := newLossServer(t, true)
			alice := s.replica("alice", true, client.ReplicaConfig{}, nil)
			reader := s.replica("reader", false, client.ReplicaConfig{}, nil)
			setEach(t, alice, "r", "n", 0, 4)
			syncAll(t, alice, reader)
			restore := s.backup(true)
			if err := alice.Delete("notes", "r1"); err != nil {
				t.Fatal(err)
			}
			if pulled {
				syncAll(t, alice)
			} else if err := alice.Flush(t.Context()); err != nil {
				t.Fatal(err)
			}
			want := union(alice, reader)
			if want["r1"].Exists() {
				t.Fatal("r1 exists before the loss")
			}
			s.restart(restore)
			// The reader, still holding r1 alive, heals first.
			syncAll(t, reader, alice, reader)
			s.eventuallyConverged(t, want, map[string]*client.Replica{"alice": alice, "reader": reader}, func() { syncAll(t, reader, alice) })
		})
	}
}

// gatedStore holds the first Apply of a change to "notes" once armed
// until open is closed.
type gatedStore struct {
	stores.Store
	armed   atomic.Bool
	entered chan struct{}
	open    chan struct{}
	once    sync.Once
}

func (g *gatedStore) Apply(ctx context.Context, changes []crdt.Change) ([]stores.Result, error) {
	if g.armed.Load() && len(changes) > 0 && changes[0].Collection == "notes" {
		g.once.Do(func() {
			close(g.entered)
			<-g.open
		})
	}
	return g.Store.Apply(ctx, changes)
}

// TestHealLivePushInFlight: the store is lost while a push over a live
// session is being applied to it (the store commits it, then the server
// restarts on an empty store): the pushed write, and everything else
// acknowledged, reaches the new store.
func TestHealLivePushInFlight(t *testing.T) {
	s := newLossServer(t, false)
	g := &gatedStore{entered: make(chan struct{}), open: make(chan struct{})}
	s.wrap = func(st stores.Store) stores.Store { g.Store = st; return g }
	s.restart(nil)
	alice := s.replica("alice", true, client.ReplicaConfig{}, nil)
	setEach(t, alice, "a", "n", 0, 5)
	syncAll(t, alice)
	runLive(t, alice)
	waitLong(t, "a live session", func() bool { return s.liveConns(t) == 1 })
	g.armed.Store(true)
	set(t, alice, "inflight", "n", "pushed live")
	flushed := make(chan error, 1)
	go func() { flushed <- alice.Flush(t.Context()) }()
	<-g.entered
	restarted := make(chan struct{})
	go func() {
		defer close(restarted)
		s.restart(nil)
	}()
	// Let the store commit while the server shuts down.
	close(g.open)
	<-restarted
	if err := <-flushed; err != nil {
		t.Logf("flush across the restart: %v", err)
	}
	want := union(alice)
	if !want["inflight"].Exists() {
		t.Fatal("alice lost her own write")
	}
	s.eventuallyConverged(t, want, map[string]*client.Replica{"alice": alice}, func() {
		if len(alice.Pending()) > 0 {
			alice.Flush(t.Context())
		}
	})
}

// TestHealScopedReplica: a writer that reads a scope holds only what
// matches it; after the loss it gives back only that (not a stale copy of
// a record that left its scope), and the server gets the rest back from
// an unscoped holder.
func TestHealScopedReplica(t *testing.T) {
	s := newLossServer(t, false)
	admin := s.replica("admin", true, client.ReplicaConfig{}, nil)
	home := s.replica("sam", true, client.ReplicaConfig{}, readsHome(t))
	for i, list := range []string{"home", "work", "home", "work"} {
		set(t, admin, fmt.Sprint("n", i), "list", list)
	}
	syncAll(t, admin, home)
	set(t, home, "n0", "s", "sam's")
	set(t, home, "n2", "s", "sam's")
	set(t, home, "h", "list", "home")
	syncAll(t, home, admin)
	// n0 leaves sam's scope.
	set(t, admin, "n0", "list", "work")
	syncAll(t, admin, home)
	if _, ok := home.Get("notes", "n0"); ok {
		t.Fatal("n0 is still held out of sam's scope")
	}
	scoped := union(home)
	all := union(admin, home)
	s.restart(nil)
	syncAll(t, home, home)
	s.eventuallyConverged(t, scoped, map[string]*client.Replica{"sam": home}, nil)
	// The admin, away meanwhile, comes back and gives back the rest.
	syncAll(t, admin, home)
	s.eventuallyConverged(t, all, map[string]*client.Replica{"admin": admin}, func() { syncAll(t, admin, home) })
	if d := sameRecords(home.Records("notes"), scoped); d != "" {
		t.Errorf("sam after the heal:\n%s", d)
	}
}

// TestHealOlderCopyLive: the bolt file is replaced by an older copy while
// two replicas are live, with `convergo store mark-restored` run, and
// without it (the copy is behind every cursor, so each cursor is past
// the head): both are detected, and the replicas heal the server.
func TestHealOlderCopyLive(t *testing.T) {
	for _, marked := range []bool{true, false} {
		t.Run(map[bool]string{true: "marked restored", false: "not marked"}[marked], func(t *testing.T) {
			s := newLossServer(t, true)
			alice := s.replica("alice", true, client.ReplicaConfig{}, nil)
			reader := s.replica("reader", false, client.ReplicaConfig{}, nil)
			bob := s.replica("bob", true, client.ReplicaConfig{}, nil)
			setEach(t, alice, "a", "n", 0, 5)
			syncAll(t, alice, reader)
			restore := s.backup(marked)
			for i := range 5 {
				set(t, bob, fmt.Sprint("b", i), "n", i)
				set(t, alice, fmt.Sprint("a", i), "m", i)
			}
			syncAll(t, alice, bob, reader, alice)
			want := union(reader)
			if len(want) != 10 {
				t.Fatalf("the reader holds %d records, want 10", len(want))
			}
			runLive(t, alice)
			runLive(t, reader)
			s.restart(restore)
			s.eventuallyConverged(t, want, map[string]*client.Replica{"alice": alice, "reader": reader}, nil)
		})
	}
}

// TestHealOlderCopyNotMarkedWitness: an older copy of the bolt file is
// put back without `convergo store mark-restored`, and a writer writes
// past the copy's head before the replicas come back. The first replica
// back whose cursor is still past the head proves that the store went
// back: the server starts a new epoch, so a replica whose cursor the head
// has passed again, back later, is reset too. It reads the writes made in
// the new history at the positions it had read in the old one, and gives
// back what it alone holds of the old one.
func TestHealOlderCopyNotMarkedWitness(t *testing.T) {
	s := newLossServer(t, true)
	alice := s.replica("alice", true, client.ReplicaConfig{}, nil)
	reader := s.replica("reader", false, client.ReplicaConfig{}, nil)
	witness := s.replica("witness", false, client.ReplicaConfig{}, nil)
	setEach(t, alice, "a", "n", 0, 5)
	syncAll(t, alice, reader, witness)
	restore := s.backup(false)
	bob := s.replica("bob", true, client.ReplicaConfig{}, nil)
	setEach(t, bob, "b", "n", 0, 5)
	syncAll(t, bob, reader) // the reader at 10
	setEach(t, bob, "b", "n", 5, 10)
	syncAll(t, bob, witness) // the witness at 15
	want := union(witness)
	bob.Close()        // bob's device is gone: what he wrote lives in the replicas only
	s.restart(restore) // the head is 5 again

	carol := s.replica("carol", true, client.ReplicaConfig{}, nil)
	setEach(t, carol, "c", "n", 0, 5)
	syncAll(t, carol)   // the head at 10: seqs 6..10 handed out again
	syncAll(t, witness) // past the head: the proof
	if n := s.metric(t, "convergo_store_went_back_total"); n != 1 {
		t.Errorf("convergo_store_went_back_total %d after the proof, want 1", n)
	}
	if n := s.metric(t, `convergo_resets_total{reason="history_lost"}`); n < 1 {
		t.Errorf(`convergo_resets_total{reason="history_lost"} %d after the witness was reset, want at least 1`, n)
	}
	setEach(t, carol, "c", "n", 5, 10)
	syncAll(t, carol)
	maps.Copy(want, union(carol))
	if len(want) != 25 {
		t.Fatalf("the replicas hold %d records, want 25", len(want))
	}
	all := func() { syncAll(t, reader, witness, carol) }
	s.eventuallyConverged(t, want, map[string]*client.Replica{"reader": reader, "witness": witness, "carol": carol}, all)
}

// TestHealOlderCopyNotMarkedWrittenPast: an older copy of the bolt file is
// put back without `convergo store mark-restored`, and a writer writes
// past every cursor before any reader comes back, so no cursor is past
// the head. The entry at the reader's position is of another record now:
// the reader is reset, reads what the new history wrote where it had
// read, and gives back what it alone holds.
func TestHealOlderCopyNotMarkedWrittenPast(t *testing.T) {
	writtenPastScene(t, nil)
}

// TestHealOlderCopyNotMarkedMovedOn: as TestHealOlderCopyNotMarkedWrittenPast,
// but the entry at the reader's position has moved on since (its record
// written again), so no record is at that position. The record the reader
// read there is nowhere after it either: the reader is reset as well, and
// heals.
func TestHealOlderCopyNotMarkedMovedOn(t *testing.T) {
	writtenPastScene(t, func(carol *client.Replica) {
		set(t, carol, "c4", "m", 1)
		syncAll(t, carol) // c4 leaves seq 10 for 14: nothing is at the reader's position
	})
}

// writtenPastScene: alice writes a0..a4 and the reader reads them; the
// bolt file is copied; bob writes b0..b4, the reader reads them (at 10)
// and bob's device is gone; the copy is put back without the procedure
// (head 5); carol writes c0..c7 (head 13), then does what then says.
// The server, the reader and carol must converge on all 18 records.
func writtenPastScene(t *testing.T, then func(carol *client.Replica)) {
	s := newLossServer(t, true)
	alice := s.replica("alice", true, client.ReplicaConfig{}, nil)
	reader := s.replica("reader", false, client.ReplicaConfig{}, nil)
	setEach(t, alice, "a", "n", 0, 5)
	syncAll(t, alice, reader)
	restore := s.backup(false)
	bob := s.replica("bob", true, client.ReplicaConfig{}, nil)
	setEach(t, bob, "b", "n", 0, 5)
	syncAll(t, bob, reader) // the reader at 10
	want := union(reader)
	bob.Close()        // bob's device is gone: what he wrote lives in the reader only
	s.restart(restore) // the head is 5 again

	carol := s.replica("carol", true, client.ReplicaConfig{}, nil)
	setEach(t, carol, "c", "n", 0, 8)
	syncAll(t, carol) // the head at 13: seqs 6..10 handed out again
	if then != nil {
		then(carol)
	}
	maps.Copy(want, union(carol))
	if len(want) != 18 {
		t.Fatalf("the replicas hold %d records, want 18", len(want))
	}
	all := func() { syncAll(t, reader, carol) }
	s.eventuallyConverged(t, want, map[string]*client.Replica{"reader": reader, "carol": carol}, all)
}

// failRT fails the first n requests to a path ending in suffix once armed.
type failRT struct {
	suffix string
	armed  *atomic.Bool
	n      *atomic.Int64
}

func (f failRT) RoundTrip(req *http.Request) (*http.Response, error) {
	if f.armed.Load() && strings.HasSuffix(req.URL.Path, f.suffix) && f.n.Add(-1) >= 0 {
		return nil, fmt.Errorf("the network failed the %s", f.suffix)
	}
	return http.DefaultTransport.RoundTrip(req)
}

// TestHealLiveRetriesAFailedHeal: a live replica whose heal after a reset
// fails (the network, for longer than its retries) heals later by itself,
// while only Live runs: what it alone holds reaches the server.
func TestHealLiveRetriesAFailedHeal(t *testing.T) {
	s := newLossServer(t, false)
	var armed atomic.Bool
	var fails atomic.Int64
	fails.Store(2) // as many as the client tries a request
	reader := s.replica("reader", false, client.ReplicaConfig{}, func(c *client.Config) {
		c.Backoff.MaxAttempts = 2
		c.HTTPClient = &http.Client{Transport: failRT{suffix: "/restore", armed: &armed, n: &fails}}
	})
	bob := s.replica("bob", true, client.ReplicaConfig{}, nil)
	setEach(t, bob, "b", "n", 0, 5)
	syncAll(t, bob, reader)
	want := reader.Records("notes")
	if len(want) != 5 {
		t.Fatalf("the reader holds %d records, want 5", len(want))
	}
	runLive(t, reader)
	waitLong(t, "a live session", func() bool { return s.liveConns(t) == 1 })
	armed.Store(true)
	s.restart(nil)
	waitLong(t, "the heal to fail", func() bool { return fails.Load() <= 0 })
	s.eventuallyConverged(t, want, map[string]*client.Replica{"reader": reader}, nil)
}

// TestHealRefusedSaysSo: the server comes back on an empty store with
// another seal key (a demo server without --secret restarted): a reader
// cannot give back the records others wrote, which stay local, and it
// says so in its log, record by record; a writer still gives back its own
// writes.
func TestHealRefusedSaysSo(t *testing.T) {
	s := newLossServer(t, false)
	var logs storetest.LogBuffer
	reader := s.replica("reader", false, client.ReplicaConfig{}, func(c *client.Config) {
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	alice := s.replica("alice", true, client.ReplicaConfig{}, nil)
	bob := s.replica("bob", true, client.ReplicaConfig{}, nil)
	set(t, alice, "a", "n", 1)
	set(t, bob, "b", "n", 2)
	syncAll(t, alice, bob, reader)
	held := reader.Records("notes")
	s.key = []byte("another seal key of 32 bytes, for tests")
	// Bob goes away for good.
	s.restart(nil)
	syncAll(t, reader, alice, reader)
	if d := sameRecords(reader.Records("notes"), held); d != "" {
		t.Errorf("the reader dropped what the server refused:\n%s", d)
	}
	s.eventuallyConverged(t, union(alice), map[string]*client.Replica{"alice": alice}, nil)
	for _, id := range []string{"a", "b"} {
		if !strings.Contains(logs.String(), "refused a sealed record") || !strings.Contains(logs.String(), "record="+id) {
			t.Errorf("the reader's log does not say that %s was refused:\n%s", id, logs.String())
		}
	}
}
