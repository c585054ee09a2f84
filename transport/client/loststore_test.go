package client_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/memory"
	"github.com/convergo/convergo/transport"
	"github.com/convergo/convergo/transport/client"
	"github.com/convergo/convergo/transport/proto"
)

// swapServer serves the protocol behind one URL from one engine at a
// time: swap puts a server on another store behind it, as when the
// store went back in time (Redis without persistence restarted, a backup
// restored) and the server came back on it.
type swapServer struct {
	url  string
	auth *transport.JWT
	// key is the seal key of every server it puts behind the URL: it
	// outlives the store, as `convergo serve` derives it from the token
	// secret.
	key []byte
	h   atomic.Pointer[http.Handler]
}

func newSwapServer(t *testing.T) *swapServer {
	t.Helper()
	auth, err := transport.NewJWT([]byte("client-test-secret-0123456789"), nil)
	if err != nil {
		t.Fatal(err)
	}
	s := &swapServer{auth: auth, key: []byte("a seal key of 32 bytes, for tests")}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { (*s.h.Load()).ServeHTTP(w, r) }))
	t.Cleanup(func() {
		hs.CloseClientConnections()
		hs.Close()
	})
	s.url = hs.URL
	return s
}

// swap serves from a new engine on st, with rules, from now on, and
// returns it.
func (s *swapServer) swap(t *testing.T, st stores.Store, rules ...engine.Rule) *engine.Engine {
	t.Helper()
	eng, err := engine.Open(engine.Config{Store: st, Rules: rules})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := transport.New(transport.Config{Engine: eng, Authorizer: s.auth, SealKey: s.key})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		eng.Close()
	})
	var h http.Handler = srv
	s.h.Store(&h)
	return eng
}

// TestFirstPullGivesBackWhatTheStoreLost: a replica pushes x while its
// cursor is the empty one (it never pulled), and the server's store goes
// back to before x (wiped, or restored from a backup that holds another
// record): an empty cursor carries no store identity, so no reset tells
// the replica. Its next reading from the beginning reconciles, and x,
// acknowledged and not delivered, is given back before anything is
// dropped: the server takes it back, so x stays in the replica and is on
// the server again. By Pull and by a live session.
func TestFirstPullGivesBackWhatTheStoreLost(t *testing.T) {
	for _, restored := range []bool{false, true} {
		for name, read := range map[string]func(ctx context.Context, t *testing.T, r *client.Replica, eng *engine.Engine) error{
			"pull": func(ctx context.Context, _ *testing.T, r *client.Replica, _ *engine.Engine) error { return r.Pull(ctx) },
			"live": func(ctx context.Context, t *testing.T, r *client.Replica, eng *engine.Engine) error {
				ctx, cancel := context.WithCancel(ctx)
				done := make(chan error, 1)
				go func() { done <- r.Live(ctx) }()
				waitFor(t, "x held and back on the server", func() bool {
					_, err := eng.GetRecord(t.Context(), "notes", "x")
					return err == nil && slices.Contains(held(r), "x")
				})
				cancel()
				<-done
				return nil
			},
		} {
			if restored {
				name += " restored"
			} else {
				name += " wiped"
			}
			t.Run(name, func(t *testing.T) {
				ctx := t.Context()
				s := newSwapServer(t)
				s.swap(t, memory.New())
				token, err := s.auth.Issue("alice", []string{"notes"}, []string{"notes"}, time.Hour)
				if err != nil {
					t.Fatal(err)
				}
				a := replicaOf(t, s.url, token, "laptop", nil, client.ReplicaConfig{})
				put(t, a, "title", map[string]string{"x": "mine"})
				if len(a.Cursor("notes")) != 0 {
					t.Fatal("the flush pulled: the scene needs a replica that never pulled")
				}

				st := memory.New()
				eng := s.swap(t, st)
				if restored {
					// The backup holds another record, written before x.
					b := replicaOf(t, s.url, token, "phone", nil, client.ReplicaConfig{})
					put(t, b, "title", map[string]string{"y": "theirs"})
				}
				if err := read(ctx, t, a, eng); err != nil {
					t.Fatal(err)
				}
				want := []string{"x"}
				if restored {
					want = []string{"x", "y"}
				}
				if got := held(a); !slices.Equal(got, want) {
					t.Fatalf("the replica holds %v, want %v: x, which the store lost, was dropped", got, want)
				}
				ent, err := eng.GetRecord(ctx, "notes", "x")
				if err != nil {
					t.Fatalf("x is not on the server after the sync: %v", err)
				}
				if v := ent.Record.Values()["title"]; !slices.Equal(v, mustEncode(t, "mine")) {
					t.Fatalf("x's title on the server is %x, want mine", v)
				}
				if rej := a.Rejected(); len(rej) != 0 {
					t.Fatalf("rejected %+v, want nothing", rej)
				}
				// It comes back in the next reading, as any record.
				if err := a.Sync(ctx); err != nil {
					t.Fatal(err)
				}
				if got := held(a); !slices.Equal(got, want) {
					t.Fatalf("after another sync the replica holds %v, want %v", got, want)
				}
			})
		}
	}
}

func mustEncode(t *testing.T, v any) []byte {
	t.Helper()
	b, err := crdt.EncodeValue(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestFirstPullGivesBackFieldsTheStoreLost: the store goes back to a
// backup that holds x as the replica first wrote it, without the field
// it wrote next (both pushed while its cursor was the empty one). The
// reading from the beginning delivers x, whose record replaces the one
// held; the field the server lacks is given back first, so it stays in
// the replica and is on the server again.
func TestFirstPullGivesBackFieldsTheStoreLost(t *testing.T) {
	ctx := t.Context()
	s := newSwapServer(t)
	eng1 := s.swap(t, memory.New())
	token, err := s.auth.Issue("alice", []string{"notes"}, []string{"notes"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	a := replicaOf(t, s.url, token, "laptop", nil, client.ReplicaConfig{})
	put(t, a, "title", map[string]string{"x": "one"})
	backup, err := eng1.GetRecord(ctx, "notes", "x")
	if err != nil {
		t.Fatal(err)
	}
	put(t, a, "note", map[string]string{"x": "two"})
	if len(a.Cursor("notes")) != 0 {
		t.Fatal("the flush pulled: the scene needs a replica that never pulled")
	}
	eng := s.swap(t, memory.New())
	if _, err := eng.Apply(ctx, []crdt.Change{{Collection: "notes", Record: backup.Record}}); err != nil {
		t.Fatal(err)
	}
	if err := a.Pull(ctx); err != nil {
		t.Fatal(err)
	}
	want := map[string][]byte{"title": mustEncode(t, "one"), "note": mustEncode(t, "two")}
	same := func(got map[string][]byte) bool {
		return len(got) == len(want) && slices.Equal(got["title"], want["title"]) && slices.Equal(got["note"], want["note"])
	}
	if got := a.Records("notes")["x"].Values(); !same(got) {
		t.Fatalf("the replica holds x as %q, want title one and note two", got)
	}
	ent, err := eng.GetRecord(ctx, "notes", "x")
	if err != nil {
		t.Fatal(err)
	}
	if got := ent.Record.Values(); !same(got) {
		t.Fatalf("the server holds x as %q, want title one and note two", got)
	}
}

// TestFirstPullKeepsWhatTheStoreTookBack: the store went back to before x,
// and the collection's write horizon has passed x's first field since:
// given back, that field comes back refused collected and the later one
// is taken back. x stays with the later field alone, in the replica as on
// the server (the refused field is not shown as if the server had it).
func TestFirstPullKeepsWhatTheStoreTookBack(t *testing.T) {
	ctx := t.Context()
	s := newSwapServer(t)
	s.swap(t, memory.New())
	token, err := s.auth.Issue("alice", []string{"notes"}, []string{"notes"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	a := replicaOf(t, s.url, token, "laptop", nil, client.ReplicaConfig{})
	// The horizon falls between the two fields' stamps, read off the
	// replica: its clock follows the server's, so its stamps can be ahead
	// of this process's clock.
	put(t, a, "title", map[string]string{"x": "old"})
	time.Sleep(5 * time.Millisecond)
	put(t, a, "note", map[string]string{"x": "new"})
	held := a.Records("notes")["x"].Fields
	horizon := held["title"].Stamp.Wall + 1
	if held["note"].Stamp.Wall <= horizon {
		t.Fatalf("note stamped at %d, title at %d: no horizon falls between them", held["note"].Stamp.Wall, held["title"].Stamp.Wall)
	}

	// The store restored holds no x, and a horizon published at W.
	st := storeWithHorizon(t, horizon)
	eng := s.swap(t, st, engine.Rule{Pattern: "notes", MaxOffline: time.Hour})
	if err := a.Pull(ctx); err != nil {
		t.Fatal(err)
	}
	want := map[string][]byte{"note": mustEncode(t, "new")}
	same := func(got map[string][]byte) bool {
		return len(got) == len(want) && slices.Equal(got["note"], want["note"])
	}
	if got := a.Records("notes")["x"].Values(); !same(got) {
		t.Fatalf("the replica holds x as %q, want note new alone", got)
	}
	ent, err := eng.GetRecord(ctx, "notes", "x")
	if err != nil {
		t.Fatal(err)
	}
	if got := ent.Record.Values(); !same(got) {
		t.Fatalf("the server holds x as %q, want note new alone", got)
	}
}

// TestHealRefusedCollectedDrops: the store went back in time to one
// without x, y or z, and the collection's write horizon has passed every
// stamp the replica holds (its lease had expired: the records were
// deleted and collected meanwhile). The reset says history_lost, so the
// replica heals: the server refuses every record it gives back
// collected. The reading from the beginning after the heal delivers y
// (written again since by another replica): it stays. x and z it does
// not deliver: they are dropped as a reconciliation drops them, and the
// edit of x waiting in the outbox is rejected with code collected
// without being pushed; live queries hear them leave. By Pull and by a
// live session.
func TestHealRefusedCollectedDrops(t *testing.T) {
	t.Run("pull", func(t *testing.T) {
		healRefusedCollected(t, func(ctx context.Context, t *testing.T, a *client.Replica) {
			if err := a.Pull(ctx); err != nil {
				t.Fatal(err)
			}
		})
	})
	t.Run("live", func(t *testing.T) {
		healRefusedCollected(t, func(ctx context.Context, t *testing.T, a *client.Replica) {
			ctx, cancel := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- a.Live(ctx) }()
			waitFor(t, "x and z dropped", func() bool { return slices.Equal(held(a), []string{"y"}) })
			cancel()
			<-done
		})
	})
}

// healRefusedCollected is TestHealRefusedCollectedDrops, the store's loss
// read by read.
func healRefusedCollected(t *testing.T, read func(ctx context.Context, t *testing.T, a *client.Replica)) {
	ctx := t.Context()
	s := newSwapServer(t)
	s.swap(t, memory.New(), engine.Rule{Pattern: "notes", MaxOffline: time.Hour})
	token, err := s.auth.Issue("alice", []string{"notes"}, []string{"notes"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var left []string
	var rejected []client.Rejection
	a := replicaOf(t, s.url, token, "laptop", nil, client.ReplicaConfig{
		OnLeave: func(_, id string) {
			mu.Lock()
			defer mu.Unlock()
			left = append(left, id)
		},
		OnRejected: func(j client.Rejection) {
			mu.Lock()
			defer mu.Unlock()
			rejected = append(rejected, j)
		},
	})
	put(t, a, "title", map[string]string{"x": "x", "y": "y", "z": "z"})
	if err := a.Pull(ctx); err != nil {
		t.Fatal(err)
	}
	if len(a.Cursor("notes")) == 0 {
		t.Fatal("no cursor after the pull: the scene needs a reset")
	}
	if err := a.Set("notes", "x", "title", "edited"); err != nil {
		t.Fatal(err)
	}
	var horizon int64
	for _, rec := range a.Records("notes") {
		for _, f := range rec.Fields {
			horizon = max(horizon, f.Stamp.Wall+1)
		}
	}

	// The store that comes back holds no x, y or z, and a horizon
	// published at W; y is written again there, after W.
	st := storeWithHorizon(t, horizon)
	eng := s.swap(t, st, engine.Rule{Pattern: "notes", MaxOffline: time.Hour})
	y := crdt.Record{ID: "y", Fields: map[string]crdt.Field{
		"note": {Stamp: crdt.Stamp{Wall: max(horizon, time.Now().UnixMilli()) + 1, Replica: "bob_phone"}, Value: mustEncode(t, "theirs")},
	}}
	if _, err := eng.Apply(ctx, []crdt.Change{{Collection: "notes", Record: y}}); err != nil {
		t.Fatal(err)
	}

	read(ctx, t, a)
	if got := held(a); !slices.Equal(got, []string{"y"}) {
		t.Fatalf("the replica holds %v, want [y]: what the server refused collected and did not serve again stays", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if got := a.Records("notes")["y"].Values(); !slices.Equal(got["note"], mustEncode(t, "theirs")) {
		t.Fatalf("y is %q, want the note the server serves", got)
	}
	slices.Sort(left)
	if !slices.Equal(left, []string{"x", "z"}) {
		t.Fatalf("left %v, want [x z]", left)
	}
	if len(rejected) != 1 || rejected[0].RecordID != "x" || rejected[0].Code != proto.CodeCollected {
		t.Fatalf("rejected %+v, want x's edit, code collected", rejected)
	}
	if got := a.Rejected(); len(got) != 1 || got[0].RecordID != "x" || got[0].Code != proto.CodeCollected {
		t.Fatalf("a.Rejected() = %+v, want x's edit, code collected", got)
	}
	if p := a.Pending(); len(p) != 0 {
		t.Fatalf("pending %+v, want nothing: x's edit is rejected, not pushed", p)
	}
	for _, id := range []string{"x", "z"} {
		if _, err := eng.GetRecord(ctx, "notes", id); err == nil {
			t.Fatalf("%s is on the server", id)
		}
	}
	// The next readings keep it so.
	if err := a.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := held(a); !slices.Equal(got, []string{"y"}) {
		t.Fatalf("after another sync the replica holds %v, want [y]", got)
	}
}

// storeWithHorizon is a memory store that holds nothing but a horizon of
// notes published at W = horizon (R at the start): a store put back
// whose collection run had published one.
func storeWithHorizon(t *testing.T, horizon int64) *memory.Store {
	t.Helper()
	st := memory.New()
	stamp := crdt.Stamp{Wall: horizon, Replica: "srv"}
	rec := crdt.Record{ID: "notes", Fields: map[string]crdt.Field{
		engine.HorizonFieldRead: {Stamp: stamp, Value: mustEncode(t, []uint64{0})},
		engine.HorizonFieldWall: {Stamp: stamp, Value: mustEncode(t, horizon)},
	}}
	if _, err := st.Apply(t.Context(), []crdt.Change{{Collection: proto.HorizonCollection, Record: rec}}); err != nil {
		t.Fatal(err)
	}
	return st
}

// TestHealGivesBackOwnWritesByStamp: the replica's own writes of a record
// straddle the write horizon of the store that comes back (p before it,
// q after), which holds no such record: its restore is refused collected
// for p. The heal gives back its own writes one change per stamp, as a
// reconciliation does and the browser client's heal does: q is taken
// back, and the record stays, with q, on the replica and the server.
// Before, its own writes went back as one change, refused collected whole
// for p, and the record was dropped at the end of the reading after the
// heal, q with it.
func TestHealGivesBackOwnWritesByStamp(t *testing.T) {
	ctx := t.Context()
	s := newSwapServer(t)
	s.swap(t, memory.New(), engine.Rule{Pattern: "notes", MaxOffline: time.Hour})
	token, err := s.auth.Issue("alice", []string{"notes"}, []string{"notes"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	a := replicaOf(t, s.url, token, "laptop", nil, client.ReplicaConfig{})
	put(t, a, "p", map[string]string{"x": "p"})
	time.Sleep(5 * time.Millisecond)
	put(t, a, "q", map[string]string{"x": "q"})
	if err := a.Pull(ctx); err != nil {
		t.Fatal(err)
	}
	x := a.Records("notes")["x"]
	p, q := x.Fields["p"].Stamp.Wall, x.Fields["q"].Stamp.Wall
	if p >= q {
		t.Fatalf("p stamped at %d, q at %d: the scene needs q after p", p, q)
	}
	eng := s.swap(t, storeWithHorizon(t, q), engine.Rule{Pattern: "notes", MaxOffline: time.Hour})
	if err := a.Pull(ctx); err != nil {
		t.Fatal(err)
	}
	if got := a.Records("notes")["x"].Values(); !slices.Equal(got["q"], mustEncode(t, "q")) {
		t.Fatalf("x holds %q after the heal, want q kept", got)
	}
	rec, err := eng.GetRecord(ctx, "notes", "x")
	if err != nil {
		t.Fatalf("x is not on the server after the heal: %v", err)
	}
	if _, ok := rec.Record.Fields["q"]; !ok {
		t.Fatalf("the server holds x as %v, without q", rec.Record)
	}
}
