package client_test

import (
	"context"
	"errors"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/crdt/migrate"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores/memory"
	"github.com/convergo/convergo/transport"
	"github.com/convergo/convergo/transport/client"
)

// weeksServer is a real server whose engine can be replaced over the same
// store (a deploy with new rules), with one fake clock for the engine and
// the token issuer.
type weeksServer struct {
	t     *testing.T
	now   atomic.Int64
	store *memory.Store
	auth  *transport.JWT
	url   string
	cur   atomic.Pointer[weeksDeploy]
}

type weeksDeploy struct {
	eng *engine.Engine
	srv *transport.Server
}

func newWeeksServer(t *testing.T, rules string) *weeksServer {
	t.Helper()
	w := &weeksServer{t: t, store: memory.New()}
	w.now.Store(time.Now().UnixMilli())
	auth, err := transport.NewJWT([]byte("client-test-secret-0123456789"), w.clock)
	if err != nil {
		t.Fatal(err)
	}
	w.auth = auth
	hs := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
		w.cur.Load().srv.ServeHTTP(rw, req)
	}))
	w.url = hs.URL
	w.deploy(rules)
	t.Cleanup(func() {
		hs.CloseClientConnections()
		hs.Close()
		w.stop(w.cur.Load())
	})
	return w
}

func (w *weeksServer) clock() time.Time { return time.UnixMilli(w.now.Load()) }

func (w *weeksServer) stop(d *weeksDeploy) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d.srv.Shutdown(ctx)
	d.eng.Close()
}

// deploy runs a new engine with rules over the store, replacing the old.
func (w *weeksServer) deploy(rules string) {
	t := w.t
	t.Helper()
	rs, err := engine.ParseRules([]byte(rules))
	if err != nil {
		t.Fatal(err)
	}
	eng, err := engine.Open(engine.Config{Store: w.store, Rules: rs, Now: w.clock, CollectEvery: -1, CollectGrace: -1})
	if err != nil {
		t.Fatal(err)
	}
	// The seal key outlives deploys, as `convergo serve` derives it from
	// its token secret.
	srv, err := transport.New(transport.Config{Engine: eng, Authorizer: w.auth, SealKey: []byte("weeks-seal-key-0123456789")})
	if err != nil {
		t.Fatal(err)
	}
	if old := w.cur.Swap(&weeksDeploy{eng: eng, srv: srv}); old != nil {
		w.stop(old)
	}
}

func (w *weeksServer) eng() *engine.Engine { return w.cur.Load().eng }

// TestRealServerWeeksAway: a laptop replica of schema version 1 syncs,
// goes offline for three weeks with edits of a record then deleted and
// collected, of a record that lives on, and a new record. Meanwhile the
// server is deployed with notes at version 2 (title renamed name), its
// token expires and the phone deletes and the server collects. Back, the
// laptop is reset lease_expired, refreshes its token, keeps what it can,
// rejects the edit of the collected record visibly, resurrects nothing,
// and converges with the phone and the server.
func TestRealServerWeeksAway(t *testing.T) {
	t.Run("sync", func(t *testing.T) {
		weeksAway(t, func(ctx context.Context, laptop *client.Replica, _ func() bool) {
			if _, err := laptop.Client().Hello(ctx); err != nil {
				t.Fatal(err)
			}
			if err := laptop.Sync(ctx); err != nil {
				t.Fatal(err)
			}
		})
	})
	// Back by a live session alone: its welcome corrects the clock, its
	// dial meets the expired token, its subscription the reset.
	t.Run("live", func(t *testing.T) {
		weeksAway(t, func(ctx context.Context, laptop *client.Replica, done func() bool) {
			ctx, cancel := context.WithCancel(ctx)
			errc := make(chan error, 1)
			go func() { errc <- laptop.Live(ctx) }()
			deadline := time.Now().Add(10 * time.Second)
			for !done() {
				if time.Now().After(deadline) {
					cancel()
					t.Fatalf("the live session did not reconcile: outbox %v, rejected %v, holds %v (live: %v)",
						laptop.Pending(), laptop.Rejected(), liveIDs(laptop), <-errc)
				}
				time.Sleep(5 * time.Millisecond)
			}
			cancel()
			if err := <-errc; err != nil && !errors.Is(err, context.Canceled) {
				t.Fatalf("live: %v", err)
			}
		})
	})
}

// weeksAway runs TestRealServerWeeksAway's scene; back brings the laptop
// back, until done says its reconciliation ended.
func weeksAway(t *testing.T, back func(ctx context.Context, laptop *client.Replica, done func() bool)) {
	const v1 = `{"notes": {"maxOffline": "168h"}}`
	const v2 = `{"notes": {"maxOffline": "168h", "migrations": {"version": 2, "steps": [{"to": 2, "ops": [
		{"op": "rename", "from": "title", "to": "name"}]}]}}}`
	w := newWeeksServer(t, v1)
	ctx := t.Context()

	var mu sync.Mutex
	var left []string
	var onErr []error
	var refusedSeen []string
	// Short-lived tokens, issued at the server's time and cached per
	// device until the server refuses one expired.
	cached := map[string]string{}
	tokenFunc := func(device string) func(context.Context) (string, error) {
		return func(ctx context.Context) (string, error) {
			mu.Lock()
			defer mu.Unlock()
			refused, ok := client.RefusedToken(ctx)
			if ok {
				refusedSeen = append(refusedSeen, device)
			}
			if tok := cached[device]; tok != "" && (!ok || refused != tok) {
				return tok, nil
			}
			tok, err := w.auth.Issue("alice", []string{"notes"}, []string{"notes"}, time.Hour)
			cached[device] = tok
			return tok, err
		}
	}
	v1def, err := migrate.Parse([]byte(`{"version": 1, "steps": []}`))
	if err != nil {
		t.Fatal(err)
	}
	replica := func(device string, laptop bool) *client.Replica {
		cfg := client.Config{URL: w.url, TokenFunc: tokenFunc(device), Device: device,
			Migrations: map[string]*migrate.Definition{"notes": v1def}}
		c, err := client.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		rc := client.ReplicaConfig{Collections: []string{"notes"}}
		if laptop {
			rc.OnLeave = func(coll, id string) {
				mu.Lock()
				defer mu.Unlock()
				left = append(left, coll+"/"+id)
			}
			rc.OnError = func(err error) {
				mu.Lock()
				defer mu.Unlock()
				onErr = append(onErr, err)
			}
		}
		// Online at first: a client with a TokenFunc binds its replica id at
		// its first request.
		if _, err := c.Hello(ctx); err != nil {
			t.Fatal(err)
		}
		r, err := client.NewReplica(c, rc)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	phone := replica("phone", false)
	laptop := replica("laptop", true)
	for _, id := range []string{"n1", "n2", "n3"} {
		if err := phone.Set("notes", id, "title", "first"); err != nil {
			t.Fatal(err)
		}
	}
	if err := phone.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := w.eng().Collect(ctx); err != nil {
		t.Fatal(err)
	}
	if err := laptop.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := liveIDs(laptop); !slices.Equal(got, []string{"n1", "n2", "n3"}) {
		t.Fatalf("laptop holds %v", got)
	}
	// Offline: edits of n1 and n2, a new n4.
	for _, wr := range [][2]string{{"n1", "edited"}, {"n2", "lost"}, {"n4", "new"}} {
		if err := laptop.Set("notes", wr[0], "title", wr[1]); err != nil {
			t.Fatal(err)
		}
	}
	// And a delete of n3, which the phone's later edit outweighs: its
	// re-stamp after the collection must not hide that edit.
	if err := laptop.Delete("notes", "n3"); err != nil {
		t.Fatal(err)
	}
	// The phone deletes n2 and n3 is edited, later: the two replicas
	// stamp by the same wall clock, and the laptop's four writes may have
	// taken its counter past the phone's within one millisecond, where
	// the delete would outweigh the edit by its stamp, as it should.
	for start := time.Now().UnixMilli(); time.Now().UnixMilli() <= start+1; {
		time.Sleep(time.Millisecond)
	}
	if err := phone.Delete("notes", "n2"); err != nil {
		t.Fatal(err)
	}
	if err := phone.Set("notes", "n3", "title", "phone"); err != nil {
		t.Fatal(err)
	}
	if err := phone.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	// Weeks pass: a week at a time, the phone syncs and the server
	// collects; in the second the server is deployed at version 2.
	for week := range 3 {
		w.now.Add((7*24*time.Hour + time.Minute).Milliseconds())
		if week == 1 {
			w.deploy(v2)
		}
		if _, err := phone.Client().Hello(ctx); err != nil {
			t.Fatal(err)
		}
		if err := phone.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := w.eng().Collect(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.eng().Get(ctx, "notes", "n2"); err == nil {
		// Get of a collected record: whatever it returns, it must not exist.
	}
	// The laptop comes back.
	back(ctx, laptop, func() bool {
		return len(laptop.Pending()) == 0 && len(laptop.Rejected()) == 1 && slices.Equal(liveIDs(laptop), []string{"n1", "n3", "n4"})
	})
	if err := phone.Sync(ctx); err != nil {
		t.Fatal(err)
	}

	if got := liveIDs(laptop); !slices.Equal(got, []string{"n1", "n3", "n4"}) {
		t.Fatalf("laptop holds %v, want n1 n3 n4", got)
	}
	if got := liveIDs(phone); !slices.Equal(got, []string{"n1", "n3", "n4"}) {
		t.Fatalf("phone holds %v, want n1 n3 n4", got)
	}
	mu.Lock()
	if !slices.Equal(left, []string{"notes/n2"}) {
		t.Errorf("OnLeave saw %v, want notes/n2", left)
	}
	if !slices.Contains(refusedSeen, "laptop") {
		t.Errorf("the laptop's TokenFunc was never told its token expired: %v", refusedSeen)
	}
	if len(onErr) != 0 {
		t.Errorf("OnError: %v", onErr)
	}
	mu.Unlock()
	if p := laptop.Pending(); len(p) != 0 {
		t.Fatalf("laptop outbox %+v, want empty", p)
	}
	rej := laptop.Rejected()
	if len(rej) != 1 || rej[0].RecordID != "n2" || !errors.Is(rej[0].Err(), client.ErrCollected) {
		t.Fatalf("rejected %+v, want n2's edit, collected", rej)
	}
	titles := func(r *client.Replica) map[string]string {
		out := map[string]string{}
		for id, rec := range r.Records("notes") {
			if !rec.Exists() {
				continue
			}
			var s string
			if err := crdt.DecodeValue(rec.Fields["title"].Value, &s); err != nil {
				t.Fatalf("%s: %v (%v)", id, err, rec.Fields)
			}
			out[id] = s
		}
		return out
	}
	want := map[string]string{"n1": "edited", "n3": "phone", "n4": "new"}
	if got := titles(laptop); !maps.Equal(got, want) {
		t.Fatalf("laptop: %v, want %v", got, want)
	}
	if got := titles(phone); !maps.Equal(got, want) {
		t.Fatalf("phone: %v, want %v", got, want)
	}
	for id, title := range want {
		got, err := w.eng().Get(ctx, "notes", id)
		if err != nil || got["name"] != title {
			t.Fatalf("server %s: %v (%v), want name %q", id, got, err, title)
		}
	}
	if got, err := w.eng().Get(ctx, "notes", "n2"); err == nil && got != nil {
		t.Fatalf("server resurrected n2: %v", got)
	}

	// The phone deletes n3; then the server's store is lost (a new empty
	// one behind the same URL, same rules and seal key). The laptop,
	// offline again, edits n1; back, it heals the server, and with the
	// phone they converge, n3 still deleted.
	if err := phone.Delete("notes", "n3"); err != nil {
		t.Fatal(err)
	}
	if err := phone.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := laptop.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := laptop.Set("notes", "n1", "title", "after"); err != nil {
		t.Fatal(err)
	}
	w.store = memory.New()
	w.deploy(v2)
	for _, r := range []*client.Replica{laptop, phone, laptop} {
		if err := r.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	want = map[string]string{"n1": "after", "n4": "new"}
	if got := titles(laptop); !maps.Equal(got, want) {
		t.Fatalf("laptop after the store was lost: %v, want %v", got, want)
	}
	if got := titles(phone); !maps.Equal(got, want) {
		t.Fatalf("phone after the store was lost: %v, want %v", got, want)
	}
	for id, title := range want {
		got, err := w.eng().Get(ctx, "notes", id)
		if err != nil || got["name"] != title {
			t.Fatalf("healed server %s: %v (%v), want name %q", id, got, err, title)
		}
	}
	for _, id := range []string{"n2", "n3"} {
		if got, err := w.eng().Get(ctx, "notes", id); err == nil && got != nil {
			t.Fatalf("healed server resurrected %s: %v", id, got)
		}
	}
	if len(laptop.Pending()) != 0 || len(phone.Pending()) != 0 {
		t.Fatalf("outboxes after the heal: laptop %v, phone %v", laptop.Pending(), phone.Pending())
	}
	mu.Lock()
	defer mu.Unlock()
	if len(onErr) != 0 {
		t.Errorf("OnError after the heal: %v", onErr)
	}
}
