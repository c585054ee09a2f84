package client

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/crdt/scope"
	"github.com/convergo/convergo/transport/proto"
)

func mustScope(t *testing.T, text string) *scope.Pred {
	t.Helper()
	p, err := scope.Parse(text)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// seeds numbers the writers of seed.
var seeds atomic.Int64

// seed writes records id → list through a writer of its own and pushes
// them. Each writer's id sorts after the last one's, so a later seed wins
// even when its stamps tie with an earlier one's in wall and logical time.
func seed(t *testing.T, f *fakeServer, lists map[string]string) {
	t.Helper()
	w := newReplica(t, f, fmt.Sprintf("writer%06d", seeds.Add(1)), nil)
	for _, id := range slices.Sorted(maps.Keys(lists)) {
		if err := w.Set("todos", id, "list", lists[id]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// ids returns the ids of the records of coll that exist in r's view.
func ids(r *Replica, coll string) []string {
	var out []string
	for id, rec := range r.Records(coll) {
		if rec.Exists() {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// watched is a replica of todos that records what OnLeave and OnRejected
// report.
type watched struct {
	*Replica
	wmu     sync.Mutex
	left    []string
	refused []Rejection
	results []resultNote
}

// resultNote is a call of OnResult.
type resultNote struct {
	change crdt.Change
	result Result
}

// newScoped returns a watched replica whose client has the given scopes
// of todos.
func newScoped(t *testing.T, f *fakeServer, id string, scopes map[string]*scope.Pred) *watched {
	t.Helper()
	return newWatched(t, f, id, func(cfg *Config) {
		if scopes != nil {
			cfg.Scopes = map[string]map[string]*scope.Pred{"todos": scopes}
		}
	})
}

// newWatched returns a watched replica of todos whose client's config mod
// changes (nil: none).
func newWatched(t *testing.T, f *fakeServer, id string, mod func(*Config)) *watched {
	t.Helper()
	return newWatchedWith(t, f, id, mod, ReplicaConfig{})
}

// newWatchedWith is newWatched with the fields of rc that it does not set
// (Collections, OnLeave, OnRejected).
func newWatchedWith(t *testing.T, f *fakeServer, id string, mod func(*Config), rc ReplicaConfig) *watched {
	t.Helper()
	c := f.client(t, id, mod)
	w := &watched{}
	r, err := NewReplica(c, ReplicaConfig{
		FreshFor:    rc.FreshFor,
		Collections: []string{"todos"},
		OnLeave: func(coll, id string) {
			w.wmu.Lock()
			defer w.wmu.Unlock()
			w.left = append(w.left, coll+"/"+id)
		},
		OnRejected: func(j Rejection) {
			w.wmu.Lock()
			defer w.wmu.Unlock()
			w.refused = append(w.refused, j)
		},
		OnResult: func(ch crdt.Change, res Result) {
			w.wmu.Lock()
			defer w.wmu.Unlock()
			w.results = append(w.results, resultNote{ch, res})
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	w.Replica = r
	return w
}

func (w *watched) refusedAll() []Rejection {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	return slices.Clone(w.refused)
}

func (w *watched) resultsAll() []resultNote {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	return slices.Clone(w.results)
}

func (w *watched) leftIDs() []string {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	return slices.Clone(w.left)
}

func TestScopedReplicaReceivesOnlyItsScope(t *testing.T) {
	f := newFakeServer(t)
	seed(t, f, map[string]string{"a1": "a", "a2": "a", "b1": "b", "c1": "c"})
	mine := mustScope(t, `list == "a"`)
	r := newScoped(t, f, "r", map[string]*scope.Pred{"mine": mine})
	if err := r.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got, want := ids(r.Replica, "todos"), []string{"a1", "a2"}; !slices.Equal(got, want) {
		t.Fatalf("records %v, want %v", got, want)
	}
	if got := f.seenScopes(); len(got) == 0 || got[len(got)-1] != string(mine.Encode()) {
		t.Fatalf("pulls carried scopes %q, want %q", got, mine.Encode())
	}

	// Two scopes: their or.
	shared := mustScope(t, `list == "b"`)
	if err := r.Client().SetScope("todos", "shared", shared); err != nil {
		t.Fatal(err)
	}
	if err := r.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got, want := ids(r.Replica, "todos"), []string{"a1", "a2", "b1"}; !slices.Equal(got, want) {
		t.Fatalf("with two scopes: records %v, want %v", got, want)
	}
	seen := f.seenScopes()
	or := scope.Or(mine, shared)
	if got := seen[len(seen)-1]; got != string(or.Encode()) {
		t.Fatalf("pull carried %x, want the or %x", got, or.Encode())
	}

	// An unscoped client sends no scope at all.
	u := newReplica(t, f, "u", nil, "todos")
	if err := u.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := f.seenScopes(); got[len(got)-1] != "" {
		t.Fatalf("an unscoped pull carried a scope: %x", got[len(got)-1])
	}
	if got := len(ids(u, "todos")); got != 4 {
		t.Fatalf("unscoped: %d records, want 4", got)
	}
}

func TestLeaveDropsTheRecordAndKeepsTheOutbox(t *testing.T) {
	f := newFakeServer(t)
	ctx := t.Context()
	seed(t, f, map[string]string{"t1": "a", "t2": "a"})
	r := newScoped(t, f, "r", map[string]*scope.Pred{"mine": mustScope(t, `list == "a"`)})
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	// A local edit of t1, not pushed yet.
	if err := r.Set("todos", "t1", "title", "mine"); err != nil {
		t.Fatal(err)
	}
	// Someone moves both records out of the scope.
	seed(t, f, map[string]string{"t1": "b", "t2": "b"})
	if err := r.Pull(ctx); err != nil {
		t.Fatal(err)
	}
	if got, want := r.leftIDs(), []string{"todos/t1", "todos/t2"}; !slices.Equal(slices.Sorted(slices.Values(got)), want) {
		t.Fatalf("OnLeave saw %v, want %v", got, want)
	}
	if _, ok := r.Get("todos", "t2"); ok {
		t.Fatal("t2 left the scope but is still held")
	}
	if b := baseOf(r.Replica, "todos", "t1"); b.ID != "" {
		t.Fatalf("t1 left the scope but its base stays: %+v", b)
	}
	// Not a delete: the outbox is the local edit alone, and the view of
	// t1 is that edit alone.
	pending := r.Pending()
	if len(pending) != 1 || pending[0].Record.ID != "t1" || !pending[0].Record.Deleted.IsZero() {
		t.Fatalf("outbox %+v, want the edit of t1 alone", pending)
	}
	v, ok := r.Get("todos", "t1")
	if !ok || v.Fields["list"].Value != nil || !slices.Equal(slices.Sorted(maps.Keys(v.Values())), []string{"title"}) {
		t.Fatalf("view of t1 %+v, want the pending title alone", v)
	}

	// The server's write scope refuses the edit of a record outside it:
	// the refusal takes the existing path into the rejected changes.
	f.writeScope.Store(mustScope(t, `list == "a"`))
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if len(r.Pending()) != 0 {
		t.Fatalf("outbox %+v after the refusal", r.Pending())
	}
	if _, ok := r.Get("todos", "t1"); ok {
		t.Fatal("the refused edit is still in the view")
	}
	rej := r.Rejected()
	if len(rej) != 1 || rej[0].RecordID != "t1" || rej[0].Code != proto.CodeOutOfScope || !errors.Is(rej[0].Err(), ErrOutOfScope) {
		t.Fatalf("rejected %+v, want t1's edit refused out_of_scope", rej)
	}
	if len(r.refusedAll()) != 1 {
		t.Fatalf("OnRejected saw %d refusals, want 1", len(r.refusedAll()))
	}
}

func TestEditOutsideTheWriteScopeIsRejected(t *testing.T) {
	f := newFakeServer(t)
	ctx := t.Context()
	f.writeScope.Store(mustScope(t, `list == "a"`))
	r := newScoped(t, f, "r", map[string]*scope.Pred{"mine": mustScope(t, `list == "a"`)})
	if err := r.Set("todos", "in", "list", "a"); err != nil {
		t.Fatal(err)
	}
	if err := r.Set("todos", "out", "list", "b"); err != nil {
		t.Fatal(err)
	}
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got, want := ids(r.Replica, "todos"), []string{"in"}; !slices.Equal(got, want) {
		t.Fatalf("records %v, want %v", got, want)
	}
	rej := r.Rejected()
	if len(rej) != 1 || rej[0].RecordID != "out" || !errors.Is(rej[0].Err(), ErrOutOfScope) {
		t.Fatalf("rejected %+v, want the record outside refused out_of_scope", rej)
	}
}

func TestScopeChangeGetsTheDifference(t *testing.T) {
	f := newFakeServer(t)
	ctx := t.Context()
	seed(t, f, map[string]string{"a1": "a", "a2": "a", "b1": "b", "c1": "c"})
	r := newScoped(t, f, "r", map[string]*scope.Pred{"mine": mustScope(t, `list == "a"`)})
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name   string
		change func(c *Client) error
		want   []string
		left   []string // OnLeave of this step
	}{
		{"narrowed to b", func(c *Client) error { return c.SetScope("todos", "mine", mustScope(t, `list == "b"`)) },
			[]string{"b1"}, []string{"todos/a1", "todos/a2"}},
		{"a second scope", func(c *Client) error { return c.SetScope("todos", "more", mustScope(t, `list == "c"`)) },
			[]string{"b1", "c1"}, nil},
		{"one removed", func(c *Client) error { c.RemoveScope("todos", "mine"); return nil },
			[]string{"c1"}, []string{"todos/b1"}},
		{"none left", func(c *Client) error { c.RemoveScope("todos", "more"); return nil },
			[]string{"a1", "a2", "b1", "c1"}, nil},
	}
	for _, s := range steps {
		before := len(r.leftIDs())
		cursor := r.Cursor("todos")
		if err := s.change(r.Client()); err != nil {
			t.Fatal(err)
		}
		if got := r.Cursor("todos"); !slices.Equal(got, cursor) {
			t.Fatalf("%s: the cursor changed before any pull", s.name)
		}
		if err := r.Sync(ctx); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if got := ids(r.Replica, "todos"); !slices.Equal(got, s.want) {
			t.Fatalf("%s: records %v, want %v", s.name, got, s.want)
		}
		if got := slices.Sorted(slices.Values(r.leftIDs()[before:])); !slices.Equal(got, s.left) {
			t.Fatalf("%s: OnLeave saw %v, want %v", s.name, got, s.left)
		}
	}
}

func TestSetScopeRefusesTooLarge(t *testing.T) {
	f := newFakeServer(t)
	c := f.client(t, "r", nil)
	// Each scope fits; the or of three does not.
	for i := range 3 {
		values := make([]any, 0, 100)
		for j := range 100 {
			values = append(values, fmt.Sprintf("scope-%d-value-%03d", i, j))
		}
		p, err := scope.FromValue([]any{"in", "list", values})
		if err != nil {
			t.Fatal(err)
		}
		err = c.SetScope("todos", fmt.Sprint(i), p)
		if i < 2 && err != nil {
			t.Fatalf("scope %d: %v", i, err)
		}
		if i == 2 && err == nil {
			t.Fatal("SetScope took scopes whose or is over scope.MaxBytes")
		}
		// The server's code for a scope over the limits (invalid), and
		// a sentinel of its own to tell this refusal from the others.
		if i == 2 && (!errors.Is(err, ErrScopeTooLarge) || !errors.Is(err, ErrInvalid)) {
			t.Fatalf("SetScope over scope.MaxBytes: %v, want ErrScopeTooLarge and ErrInvalid", err)
		}
	}
	if got := c.Scopes("todos"); len(got) != 2 {
		t.Fatalf("%d scopes kept, want the 2 that fit", len(got))
	}
	if err := c.SetScope("bad collection!", "x", nil); err == nil {
		t.Fatal("SetScope took an invalid collection")
	}
	if _, err := New(Config{URL: f.srv.URL, Scopes: map[string]map[string]*scope.Pred{"bad collection!": {"x": nil}}}); err == nil {
		t.Fatal("New took Config.Scopes of an invalid collection")
	}
}

func TestLiveScopeChangeResubscribes(t *testing.T) {
	f := newFakeServer(t)
	seed(t, f, map[string]string{"a1": "a", "b1": "b"})
	r := newScoped(t, f, "r", map[string]*scope.Pred{"mine": mustScope(t, `list == "a"`)})
	runLive(t, r.Replica)
	eventually(t, "the records of scope a", func() bool { return slices.Equal(ids(r.Replica, "todos"), []string{"a1"}) })
	b := mustScope(t, `list == "b"`)
	if err := r.Client().SetScope("todos", "mine", b); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the records of scope b", func() bool { return slices.Equal(ids(r.Replica, "todos"), []string{"b1"}) })
	if got := r.leftIDs(); !slices.Equal(got, []string{"todos/a1"}) {
		t.Fatalf("OnLeave saw %v, want todos/a1", got)
	}
	if n := f.liveConns(); n != 1 {
		t.Fatalf("%d live connections: a scope change redialled", n)
	}
	seen := f.seenScopes()
	if got := seen[len(seen)-1]; got != string(b.Encode()) {
		t.Fatalf("the last sub carried %x, want %x", got, b.Encode())
	}
	// A record moved out while subscribed leaves over the live session.
	seed(t, f, map[string]string{"b1": "a"})
	eventually(t, "b1 to leave", func() bool { return len(ids(r.Replica, "todos")) == 0 })
}

func TestRevokedPurgesAndMovesTheOutbox(t *testing.T) {
	f := newFakeServer(t)
	ctx := t.Context()
	seed(t, f, map[string]string{"t1": "a", "t2": "a"})
	r := newScoped(t, f, "r", nil)
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.Set("todos", "t1", "title", "x"); err != nil {
		t.Fatal(err)
	}
	if err := r.Set("other", "o1", "f", 1); err != nil {
		t.Fatal(err)
	}
	f.revoked.Store(true)
	err := r.Sync(ctx)
	if !errors.Is(err, ErrRevoked) {
		t.Fatalf("sync: %v, want ErrRevoked", err)
	}
	if !errors.Is(r.Revoked(), ErrRevoked) {
		t.Fatalf("Revoked() = %v", r.Revoked())
	}
	for _, coll := range []string{"todos", "other"} {
		if got := r.Records(coll); len(got) != 0 {
			t.Fatalf("%s still holds %v", coll, slices.Collect(maps.Keys(got)))
		}
	}
	if got := r.Pending(); len(got) != 0 {
		t.Fatalf("outbox %+v after revoked", got)
	}
	rej := r.Rejected()
	if len(rej) != 2 {
		t.Fatalf("%d rejected changes, want the outbox's 2", len(rej))
	}
	for _, j := range rej {
		if j.Code != proto.CodeRevoked || !errors.Is(j.Err(), ErrRevoked) {
			t.Fatalf("rejected %+v, want code revoked", j)
		}
	}
	if len(r.refusedAll()) != 2 {
		t.Fatalf("OnRejected saw %d, want 2", len(r.refusedAll()))
	}
	if got, want := r.leftIDs(), []string{"other/o1", "todos/t1", "todos/t2"}; !slices.Equal(got, want) {
		t.Fatalf("OnLeave saw %v, want %v", got, want)
	}
	if len(r.Cursor("todos")) != 0 {
		t.Fatal("the cursor survived the purge")
	}
	// Stopped: no request, no write.
	f.revoked.Store(false)
	pushes := f.pushes.Load()
	if err := r.Sync(ctx); !errors.Is(err, ErrRevoked) {
		t.Fatalf("sync after revoked: %v, want ErrRevoked", err)
	}
	if err := r.Live(ctx); !errors.Is(err, ErrRevoked) {
		t.Fatalf("live after revoked: %v, want ErrRevoked", err)
	}
	if f.pushes.Load() != pushes || len(r.Records("todos")) != 0 {
		t.Fatal("a revoked replica synced")
	}
	if err := r.Set("todos", "t3", "f", 1); !errors.Is(err, ErrRevoked) {
		t.Fatalf("write after revoked: %v, want ErrRevoked", err)
	}
	if err := r.Retry(rej[0].ID); !errors.Is(err, ErrRevoked) {
		t.Fatalf("retry after revoked: %v, want ErrRevoked", err)
	}
	if err := r.Discard(rej[0].ID); err != nil {
		t.Fatalf("discard after revoked: %v", err)
	}
}

func TestLiveRevokedStopsAndPurges(t *testing.T) {
	f := newFakeServer(t)
	seed(t, f, map[string]string{"t1": "a"})
	r := newScoped(t, f, "r", nil)
	errc := make(chan error, 1)
	go func() { errc <- r.Live(t.Context()) }()
	eventually(t, "t1", func() bool { return hasValue(r.Replica, "todos", "t1", "list") })
	if err := r.Set("todos", "t1", "title", "x"); err != nil {
		t.Fatal(err)
	}
	f.revoked.Store(true)
	f.control("revoke")
	if err := <-errc; !errors.Is(err, ErrRevoked) {
		t.Fatalf("live: %v, want ErrRevoked", err)
	}
	if len(r.Records("todos")) != 0 || len(r.Pending()) != 0 {
		t.Fatalf("after revoked: records %v, outbox %v", r.Records("todos"), r.Pending())
	}
	if rej := r.Rejected(); len(rej) != 1 || rej[0].Code != proto.CodeRevoked {
		t.Fatalf("rejected %+v, want the edit with code revoked", rej)
	}
}

func TestLiveEndsWhenAFlushLearnsOfRevocation(t *testing.T) {
	f := newFakeServer(t)
	r := newScoped(t, f, "r", nil)
	errc := make(chan error, 1)
	go func() { errc <- r.Live(t.Context()) }()
	eventually(t, "a live connection", func() bool { return f.liveConns() == 1 })
	if err := r.Set("todos", "t1", "f", 1); err != nil {
		t.Fatal(err)
	}
	f.revoked.Store(true)
	if err := r.Flush(t.Context()); !errors.Is(err, ErrRevoked) {
		t.Fatalf("flush: %v, want ErrRevoked", err)
	}
	if err := <-errc; !errors.Is(err, ErrRevoked) {
		t.Fatalf("live: %v, want ErrRevoked", err)
	}
}

func TestLeaveIndexFollowsTheBase(t *testing.T) {
	f := newFakeServer(t)
	r := newReplica(t, f, "r", nil, "todos")
	r.Apply("todos", Page{Records: []crdt.Record{crdt.SetField("x", "f", mustValue(t, 1), crdt.Stamp{Wall: 1, Replica: "w"})}, Next: []byte{}})
	// A leave of a record not held changes nothing and builds the index.
	r.Apply("todos", Page{Leaves: [][]byte{proto.LeaveDigest("todos", "nope"), proto.LeaveDigest("other", "x")}, Next: []byte{}})
	if _, ok := r.Get("todos", "x"); !ok {
		t.Fatal("a leave of another record (or collection) dropped x")
	}
	// A record arriving after the index was built is in it.
	r.Apply("todos", Page{Records: []crdt.Record{crdt.SetField("y", "f", mustValue(t, 1), crdt.Stamp{Wall: 2, Replica: "w"})}, Next: []byte{}})
	r.Apply("todos", Page{Leaves: [][]byte{proto.LeaveDigest("todos", "y")}, Next: []byte{}})
	if _, ok := r.Get("todos", "y"); ok {
		t.Fatal("y left but is held")
	}
	// A record that left and comes back is dropped again by its next leave.
	r.Apply("todos", Page{Records: []crdt.Record{crdt.SetField("y", "f", mustValue(t, 2), crdt.Stamp{Wall: 3, Replica: "w"})}, Next: []byte{}})
	if _, ok := r.Get("todos", "y"); !ok {
		t.Fatal("y came back but is not held")
	}
	r.Apply("todos", Page{Leaves: [][]byte{proto.LeaveDigest("todos", "y"), proto.LeaveDigest("todos", "x")}, Next: []byte{}})
	if got := ids(r, "todos"); len(got) != 0 {
		t.Fatalf("held %v after both left", got)
	}
}

// A leave that arrives while a change of its record is in flight (Live
// delivers it before Flush reads the push's answer) wins over the
// acknowledgement: the record does not come back as the change alone.
func TestLeaveBeforeTheAcknowledgement(t *testing.T) {
	f := newFakeServer(t)
	ctx := t.Context()
	seed(t, f, map[string]string{"t1": "a"})
	r := newScoped(t, f, "r", map[string]*scope.Pred{"mine": mustScope(t, `list == "a"`)})
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.Set("todos", "t1", "title", "mine"); err != nil {
		t.Fatal(err)
	}
	// A record only ever written here, outside the scope, and still queued.
	if err := r.Set("todos", "own", "list", "b"); err != nil {
		t.Fatal(err)
	}
	seed(t, f, map[string]string{"t1": "b"})
	r.Apply("todos", Page{Leaves: [][]byte{proto.LeaveDigest("todos", "t1"), proto.LeaveDigest("todos", "own")}, Next: r.Cursor("todos")})
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"t1", "own"} {
		if rec, ok := r.Get("todos", id); ok {
			t.Fatalf("%s came back after it left: %+v", id, rec)
		}
	}
	// Brought back into the scope, the record is sent whole and held again.
	seed(t, f, map[string]string{"t1": "a"})
	if err := r.Pull(ctx); err != nil {
		t.Fatal(err)
	}
	v, ok := r.Get("todos", "t1")
	if !ok || v.Values()["title"] == nil || v.Values()["list"] == nil {
		t.Fatalf("t1 back in scope: %+v, want it whole", v)
	}
}
