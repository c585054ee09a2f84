package client_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
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
	h    atomic.Pointer[http.Handler]
}

func newSwapServer(t *testing.T) *swapServer {
	t.Helper()
	auth, err := transport.NewJWT([]byte("client-test-secret-0123456789"), nil)
	if err != nil {
		t.Fatal(err)
	}
	s := &swapServer{auth: auth}
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
	srv, err := transport.New(transport.Config{Engine: eng, Authorizer: s.auth})
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
	st := memory.New()
	stamp := crdt.Stamp{Wall: horizon, Replica: "srv"}
	rec := crdt.Record{ID: "notes", Fields: map[string]crdt.Field{
		engine.HorizonFieldRead: {Stamp: stamp, Value: mustEncode(t, []uint64{0})},
		engine.HorizonFieldWall: {Stamp: stamp, Value: mustEncode(t, horizon)},
	}}
	if _, err := st.Apply(ctx, []crdt.Change{{Collection: proto.HorizonCollection, Record: rec}}); err != nil {
		t.Fatal(err)
	}
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
