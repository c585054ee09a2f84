package client

import (
	"context"
	"errors"
	"maps"
	"net/http"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/transport/proto"
)

// TestPullsAndSubsNameTheReaderAndItsFloor checks keys 5 and 6 of pulls
// and subs: the replica id always, the pending floor (the wall time of the
// oldest change for the collection in the outbox) only while one is
// pending.
func TestPullsAndSubsNameTheReaderAndItsFloor(t *testing.T) {
	f := newFakeServer(t)
	ctx := t.Context()
	var now atomic.Int64
	now.Store(time.Now().UnixMilli())
	r := newWatched(t, f, "a", func(cfg *Config) { cfg.Now = func() time.Time { return time.UnixMilli(now.Load()) } })
	if err := r.Pull(ctx); err != nil {
		t.Fatal(err)
	}
	first := now.Load()
	if err := r.Set("todos", "t1", "title", "x"); err != nil {
		t.Fatal(err)
	}
	now.Add(5000)
	if err := r.Set("todos", "t2", "title", "y"); err != nil {
		t.Fatal(err)
	}
	if err := r.Set("other", "o1", "title", "z"); err != nil {
		t.Fatal(err)
	}
	if err := r.Pull(ctx); err != nil {
		t.Fatal(err)
	}
	ctx2, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Live(ctx2) }()
	eventually(t, "a live sub", func() bool { return slices.ContainsFunc(f.seenLeases(), func(n leaseNote) bool { return n.live }) })
	cancel()
	<-done
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.Pull(ctx); err != nil {
		t.Fatal(err)
	}

	got := f.seenLeases()
	if len(got) != 4 {
		t.Fatalf("%d pulls and subs, want 4: %+v", len(got), got)
	}
	for i, want := range []struct {
		live    bool
		pending int64 // 0: none
	}{{false, 0}, {false, first}, {true, first}, {false, 0}} {
		n := got[i]
		if n.collection != "todos" || n.replica != "a" || n.live != want.live {
			t.Fatalf("%d: got %+v, want todos by a (live %v)", i, n, want.live)
		}
		switch {
		case want.pending == 0 && n.pending != nil:
			t.Fatalf("%d: pending floor %d with nothing pending", i, *n.pending)
		case want.pending != 0 && (n.pending == nil || *n.pending != uint64(want.pending)):
			t.Fatalf("%d: pending floor %v, want %d", i, n.pending, want.pending)
		}
	}
}

// away is a watched replica of todos, and the scene of its absence: it
// synced t1, t2 and t3, then went offline and edited t1 and t2 and created
// t4, while another writer deleted t2 and the server collected its
// tombstone, with a write horizon after the offline edits and the delete.
type away struct {
	*watched
	horizon int64
}

// goAway sets the scene, with the write horizon gap after the last write;
// when it is short, it waits until the horizon has passed, so that the
// replica's new stamps are after it. The replica's ReplicaConfig.FreshFor
// is an hour: Flush pushes without pulling first.
func goAway(t *testing.T, f *fakeServer, gap time.Duration) *away {
	return goAwayFresh(t, f, gap, time.Hour)
}

// goAwayFresh is goAway with the replica's FreshFor.
func goAwayFresh(t *testing.T, f *fakeServer, gap, fresh time.Duration) *away {
	t.Helper()
	ctx := t.Context()
	seed(t, f, map[string]string{"t1": "a", "t2": "a", "t3": "a"})
	a := &away{watched: newWatchedWith(t, f, "a", nil, ReplicaConfig{FreshFor: fresh})}
	if err := a.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := ids(a.Replica, "todos"); !slices.Equal(got, []string{"t1", "t2", "t3"}) {
		t.Fatalf("synced %v", got)
	}
	for _, w := range [][2]string{{"t1", "edited"}, {"t2", "lost"}, {"t4", "new"}} {
		if err := a.Set("todos", w[0], "title", w[1]); err != nil {
			t.Fatal(err)
		}
	}
	b := newReplica(t, f, "b", nil, "todos")
	// Pulled first, b's clock stamps the delete after the seed's fields
	// (in the same millisecond, the seed's replica id would win the tie).
	if err := b.Pull(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete("todos", "t2"); err != nil {
		t.Fatal(err)
	}
	if err := b.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	a.horizon = time.Now().UnixMilli() + 1 + gap.Milliseconds()
	if res := f.collect("todos", a.horizon); res.Records != 1 {
		t.Fatalf("collected %+v, want t2's record", res)
	}
	if gap < time.Second {
		time.Sleep(time.Until(time.UnixMilli(a.horizon + 1)))
	}
	f.smu.Lock()
	clear(f.pushed) // count the replica's pushes from here
	f.pushes.Store(0)
	f.smu.Unlock()
	return a
}

// serverTitles returns the title of every record the server holds in
// todos ("" for a record without one).
func serverTitles(t *testing.T, f *fakeServer) map[string]string {
	t.Helper()
	out := map[string]string{}
	cur := engine.Cursor{}
	for {
		p, err := f.eng.Pull(t.Context(), "todos", cur, engine.PageLimit{Records: 1000})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range p.Entries {
			if !e.Record.Exists() {
				continue
			}
			out[e.Record.ID] = ""
			if fl, ok := e.Record.Fields["title"]; ok {
				var s string
				if err := crdt.DecodeValue(fl.Value, &s); err != nil {
					t.Fatal(err)
				}
				out[e.Record.ID] = s
			}
		}
		if !p.More {
			return out
		}
		cur = p.Next
	}
}

// checkReconciled checks the end of the scene: t2 dropped locally (OnLeave,
// no delete queued) with its edit rejected collected, the edit of t1 and
// the creation of t4 on the server with fresh stamps, nothing pending.
func (a *away) checkReconciled(t *testing.T, f *fakeServer) {
	t.Helper()
	if got := ids(a.Replica, "todos"); !slices.Equal(got, []string{"t1", "t3", "t4"}) {
		t.Fatalf("replica holds %v, want t1 t3 t4", got)
	}
	if _, ok := a.Get("todos", "t2"); ok {
		t.Fatal("the replica still holds t2")
	}
	if got := a.leftIDs(); !slices.Equal(got, []string{"todos/t2"}) {
		t.Fatalf("OnLeave saw %v, want todos/t2", got)
	}
	if p := a.Pending(); len(p) != 0 {
		t.Fatalf("outbox %+v, want empty", p)
	}
	rej := a.Rejected()
	if len(rej) != 1 || rej[0].RecordID != "t2" || rej[0].Code != proto.CodeCollected || !errors.Is(rej[0].Err(), ErrCollected) {
		t.Fatalf("rejected %+v, want t2's edit with code collected", rej)
	}
	if got := a.refusedAll(); len(got) != 1 || got[0].RecordID != "t2" {
		t.Fatalf("OnRejected saw %+v, want t2's edit alone", got)
	}
	got := serverTitles(t, f)
	want := map[string]string{"t1": "edited", "t3": "", "t4": "new"}
	if len(got) != len(want) {
		t.Fatalf("server holds %v, want %v", got, want)
	}
	for id, title := range want {
		if g, ok := got[id]; !ok || g != title {
			t.Fatalf("server holds %v, want %v", got, want)
		}
	}
	for _, id := range []string{"t1", "t4"} {
		rec, _ := a.Get("todos", id)
		if s := rec.Fields["title"].Stamp; s.Wall < a.horizon {
			t.Fatalf("%s's title stamped %v, before the horizon %d", id, s, a.horizon)
		}
	}
}

// TestLeaseExpiredPullReconciles: a pull told lease_expired holds the
// outbox, pulls from the beginning, drops the record deleted and collected
// while it was away (its offline edit rejected collected, never pushed),
// and pushes the rest: the edit of a surviving record and a record created
// offline, refused collected once, land re-stamped.
func TestLeaseExpiredPullReconciles(t *testing.T) {
	f := newFakeServer(t)
	a := goAway(t, f, 0)
	if err := a.Pull(t.Context()); err != nil {
		t.Fatal(err)
	}
	a.checkReconciled(t, f)
	if n := f.pushedOf("todos", "t2"); n != 0 {
		t.Fatalf("t2's edit pushed %d times, want never", n)
	}
	for _, id := range []string{"t1", "t4"} {
		if n := f.pushedOf("todos", id); n != 2 {
			t.Fatalf("%s pushed %d times, want 2 (refused collected, then re-stamped)", id, n)
		}
	}
	// Nothing left to do: another sync pushes and drops nothing.
	if err := a.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	a.checkReconciled(t, f)
}

// TestCollectedFlushReconcilesFirst: Sync pushes before it pulls, and with
// the collection still fresh, Flush does not pull first: the server refuses
// the offline edits collected before the replica hears of the reset; the
// refused changes stay queued while the replica reconciles, with the same
// end.
func TestCollectedFlushReconcilesFirst(t *testing.T) {
	f := newFakeServer(t)
	a := goAway(t, f, 0)
	if err := a.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	a.checkReconciled(t, f)
	// Each pushed once and refused; t1's and t4 then re-stamped at the
	// end of the reconciliation and pushed again.
	for id, want := range map[string]int{"t1": 2, "t2": 1, "t4": 2} {
		if n := f.pushedOf("todos", id); n != want {
			t.Fatalf("%s pushed %d times, want %d", id, n, want)
		}
	}
}

// TestCollectedTwiceStaysRejected: a re-stamped change the server refuses
// collected again stays rejected, with that code: each change is re-stamped
// at most once.
func TestCollectedTwiceStaysRejected(t *testing.T) {
	f := newFakeServer(t)
	// The horizon is ahead of the replica's clock: new stamps are before
	// it too.
	a := goAway(t, f, time.Hour)
	if err := a.Pull(t.Context()); err != nil {
		t.Fatal(err)
	}
	rej := a.Rejected()
	var got []string
	for _, j := range rej {
		if j.Code != proto.CodeCollected {
			t.Fatalf("rejected %+v, want code collected", j)
		}
		got = append(got, j.RecordID)
	}
	slices.Sort(got)
	if !slices.Equal(got, []string{"t1", "t2", "t4"}) {
		t.Fatalf("rejected %v, want t1 t2 t4", got)
	}
	for id, want := range map[string]int{"t1": 2, "t2": 0, "t4": 2} {
		if n := f.pushedOf("todos", id); n != want {
			t.Fatalf("%s pushed %d times, want %d", id, n, want)
		}
	}
	if p := a.Pending(); len(p) != 0 {
		t.Fatalf("outbox %+v, want empty", p)
	}
	if got := ids(a.Replica, "todos"); !slices.Equal(got, []string{"t1", "t3"}) {
		t.Fatalf("replica holds %v, want t1 t3 (rolled back)", got)
	}
}

// TestLiveLeaseExpiredReconciles: a live subscription told lease_expired
// reconciles the same way, and pushes the outbox by itself.
func TestLiveLeaseExpiredReconciles(t *testing.T) {
	f := newFakeServer(t)
	a := goAway(t, f, 0)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- a.Live(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	eventually(t, "the reconciliation's push", func() bool {
		return len(a.Pending()) == 0 && len(a.Rejected()) == 1 && len(serverTitles(t, f)) == 3
	})
	a.checkReconciled(t, f)
	if n := f.pushedOf("todos", "t2"); n != 0 {
		t.Fatalf("t2's edit pushed %d times, want never", n)
	}
}

// TestReconciliationHoldsTheOutboxUntilItEnds: a reconciliation whose pull
// from the beginning fails holds the collection's outbox (Flush sends none
// of it) until a later pull or Flush ends it.
func TestReconciliationHoldsTheOutboxUntilItEnds(t *testing.T) {
	f := newFakeServer(t)
	a := goAway(t, f, 0)
	var pulls atomic.Int64
	f.failWith(func(path string) (int, string) {
		if path == proto.PathPull && pulls.Add(1) > 1 {
			return 503, proto.CodeUnavailable // every pull after the reset's
		}
		return 0, ""
	})
	ctx := t.Context()
	if err := a.Pull(ctx); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("pull: %v, want unavailable", err)
	}
	if err := a.Flush(ctx); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("flush: %v, want unavailable (the reconciliation's pull)", err)
	}
	if n := f.pushes.Load(); n != 0 {
		t.Fatalf("%d pushes while reconciling, want none", n)
	}
	if p := a.Pending(); len(p) != 3 {
		t.Fatalf("outbox %+v, want the 3 offline writes", p)
	}
	f.failWith(func(string) (int, string) { return 0, "" })
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	a.checkReconciled(t, f)
	if n := f.pushedOf("todos", "t2"); n != 0 {
		t.Fatalf("t2's edit pushed %d times, want never", n)
	}
}

// TestStaleCollectionIsPulledBeforeItsOutbox: a collection not pulled
// within FreshFor is pulled before its changes are pushed, so Sync, which
// pushes first, hears of the reset first and never pushes the edit of the
// record deleted and collected.
func TestStaleCollectionIsPulledBeforeItsOutbox(t *testing.T) {
	f := newFakeServer(t)
	a := goAwayFresh(t, f, 0, time.Millisecond)
	time.Sleep(2 * time.Millisecond)
	if err := a.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	a.checkReconciled(t, f)
	if n := f.pushedOf("todos", "t2"); n != 0 {
		t.Fatalf("t2's edit pushed %d times, want never", n)
	}
}

// TestClosedReplicaHoldsNoFloor: a client's pending floor is the oldest
// change of any of its replicas' outboxes, and a replica closed while its
// client lives on no longer holds it back.
func TestClosedReplicaHoldsNoFloor(t *testing.T) {
	f := newFakeServer(t)
	var now atomic.Int64
	now.Store(time.Now().UnixMilli())
	c := f.client(t, "a", func(cfg *Config) { cfg.Now = func() time.Time { return time.UnixMilli(now.Load()) } })
	old, err := NewReplica(c, ReplicaConfig{Collections: []string{"todos"}})
	if err != nil {
		t.Fatal(err)
	}
	kept, err := NewReplica(c, ReplicaConfig{Collections: []string{"todos"}})
	if err != nil {
		t.Fatal(err)
	}
	first := now.Load()
	if err := old.Set("todos", "t1", "title", "x"); err != nil {
		t.Fatal(err)
	}
	now.Add(5000)
	if err := kept.Set("todos", "t2", "title", "y"); err != nil {
		t.Fatal(err)
	}
	floor := func() int64 {
		t.Helper()
		p := c.pendingFloor("todos")
		if p == nil {
			t.Fatal("no pending floor with changes pending")
		}
		return int64(*p)
	}
	if got := floor(); got != first {
		t.Fatalf("pending floor %d, want the older replica's %d", got, first)
	}
	old.Close()
	old.Close() // twice is harmless
	if got, want := floor(), first+5000; got != want {
		t.Fatalf("pending floor %d after the older replica closed, want the kept one's %d", got, want)
	}
	kept.Close()
	if p := c.pendingFloor("todos"); p != nil {
		t.Fatalf("pending floor %d with every replica closed", *p)
	}
}

// TestFirstPullOfPushedRecordsReconciles: a replica that pushed records
// before it ever pulled the collection holds no lease, so the server's
// collection does not wait for it; a record it pushed, deleted by another
// replica and collected meanwhile, is simply absent from its first pull
// (from the beginning: no reset is owed). That pull reconciles, as after
// lease_expired: the record leaves the replica and its pending edit is
// rejected collected, never pushed; the other record and the replica's
// edit of it stay, and the next Flush pushes the edit. By Pull, and by a
// live session's subscription.
func TestFirstPullOfPushedRecordsReconciles(t *testing.T) {
	for name, pull := range map[string]func(ctx context.Context, t *testing.T, a *watched) error{
		"pull": func(ctx context.Context, _ *testing.T, a *watched) error { return a.Pull(ctx) },
		"live": func(ctx context.Context, t *testing.T, a *watched) error {
			ctx, cancel := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- a.Live(ctx) }()
			eventually(t, "the reconciliation", func() bool { return len(a.leftIDs()) > 0 && len(a.Rejected()) > 0 })
			cancel()
			<-done
			return nil
		},
	} {
		t.Run(name, func(t *testing.T) {
			f := newFakeServer(t)
			ctx := t.Context()
			a := newWatchedWith(t, f, "a", nil, ReplicaConfig{})
			for _, id := range []string{"x", "y"} {
				if err := a.Set("todos", id, "title", "first"); err != nil {
					t.Fatal(err)
				}
			}
			if err := a.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if len(a.Cursor("todos")) != 0 {
				t.Fatal("the flush pulled: the scene needs a replica that never pulled")
			}
			b := newReplica(t, f, "b", nil, "todos")
			if err := b.Pull(ctx); err != nil {
				t.Fatal(err)
			}
			if err := b.Delete("todos", "x"); err != nil {
				t.Fatal(err)
			}
			if err := b.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			// Offline edits of both records, stamped before the horizon.
			for _, id := range []string{"x", "y"} {
				if err := a.Set("todos", id, "title", "edited"); err != nil {
					t.Fatal(err)
				}
			}
			tick()
			horizon := time.Now().UnixMilli()
			if res := f.collect("todos", horizon); res.Records != 1 {
				t.Fatalf("collected %+v, want x's record", res)
			}
			time.Sleep(time.Until(time.UnixMilli(horizon + 1)))
			f.smu.Lock()
			clear(f.pushed)
			clear(f.pushedRecords)
			f.smu.Unlock()
			if err := pull(ctx, t, a); err != nil {
				t.Fatal(err)
			}
			if got := ids(a.Replica, "todos"); !slices.Equal(got, []string{"y"}) {
				t.Fatalf("replica holds %v, want y alone (x was deleted and collected)", got)
			}
			if got := a.leftIDs(); !slices.Equal(got, []string{"todos/x"}) {
				t.Fatalf("OnLeave saw %v, want todos/x", got)
			}
			rej := a.Rejected()
			if len(rej) != 1 || rej[0].RecordID != "x" || rej[0].Code != proto.CodeCollected {
				t.Fatalf("rejected %+v, want x's edit with code collected", rej)
			}
			if err := a.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			// Before it dropped x, the reconciliation gave back the stamp
			// the server had acknowledged (refused collected: it is
			// before the write horizon); the pending edit never went.
			if got := f.pushedValues(t, "todos", "x"); !slices.Equal(got, []string{"first"}) {
				t.Fatalf("x pushed with titles %q, want its acknowledged first alone, once", got)
			}
			if p := a.Pending(); len(p) != 0 {
				t.Fatalf("outbox %+v, want empty", p)
			}
			if got, want := serverTitles(t, f), map[string]string{"y": "edited"}; !maps.Equal(got, want) {
				t.Fatalf("server holds %v, want %v", got, want)
			}
		})
	}
}

// TestResetPullDropsNothing: a reset other than lease_expired drops
// nothing the replica holds, also when the pull from the beginning that
// follows it leaves the cursor empty (the store lost every record, and
// none could be given back): the next reading from the beginning is not
// a reconciliation either, until a pull stores a cursor again.
func TestResetPullDropsNothing(t *testing.T) {
	f := newFakeServer(t)
	ctx := t.Context()
	seed(t, f, map[string]string{"t1": "a", "t2": "a"})
	a := newWatchedWith(t, f, "a", nil, ReplicaConfig{})
	if err := a.Pull(ctx); err != nil {
		t.Fatal(err)
	}
	// The store loses both records: deleted, collected, and a new epoch
	// with history lost (a restore from an empty backup, say).
	b := newReplica(t, f, "b", nil, "todos")
	if err := b.Pull(ctx); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"t1", "t2"} {
		if err := b.Delete("todos", id); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	tick()
	if res := f.collect("todos", time.Now().UnixMilli()); res.Records != 2 {
		t.Fatalf("collected %+v, want both records", res)
	}
	f.smu.Lock()
	clear(f.expiredLeases) // the reset a reads is history_lost
	f.smu.Unlock()
	if err := f.mem.BumpEpoch(ctx, "todos", stores.HistoryLost); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := a.Pull(ctx); err != nil {
			t.Fatal(err)
		}
		if got := ids(a.Replica, "todos"); !slices.Equal(got, []string{"t1", "t2"}) {
			t.Fatalf("pull %d after the reset: replica holds %v, want t1 t2 (a reset drops nothing)", i+1, got)
		}
		if len(a.Cursor("todos")) != 0 {
			t.Fatal("the cursor moved: the scene needs an empty log")
		}
	}
	if got := a.leftIDs(); len(got) != 0 {
		t.Fatalf("OnLeave saw %v, want nothing", got)
	}
}

// TestFirstPullGiveBackFailureDropsNothing: the push that gives back a
// record before a reconciliation from the beginning drops it fails (the
// network): nothing is dropped and nothing rejected; the next pull gives
// back again, the server refuses it collected, and only then does the
// record leave the replica.
func TestFirstPullGiveBackFailureDropsNothing(t *testing.T) {
	f := newFakeServer(t)
	ctx := t.Context()
	a := newWatchedWith(t, f, "a", func(cfg *Config) { cfg.Backoff.MaxAttempts = 1 }, ReplicaConfig{})
	for _, id := range []string{"x", "y"} {
		if err := a.Set("todos", id, "title", "first"); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	b := newReplica(t, f, "b", nil, "todos")
	if err := b.Pull(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete("todos", "x"); err != nil {
		t.Fatal(err)
	}
	if err := b.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Set("todos", "x", "title", "edited"); err != nil {
		t.Fatal(err)
	}
	tick()
	horizon := time.Now().UnixMilli()
	if res := f.collect("todos", horizon); res.Records != 1 {
		t.Fatalf("collected %+v, want x's record", res)
	}
	time.Sleep(time.Until(time.UnixMilli(horizon + 1)))
	f.failWith(func(path string) (int, string) {
		if path == proto.PathPush {
			return http.StatusServiceUnavailable, proto.CodeUnavailable
		}
		return 0, ""
	})
	if err := a.Pull(ctx); err == nil {
		t.Fatal("the pull succeeded with every push failing")
	}
	if got := ids(a.Replica, "todos"); !slices.Equal(got, []string{"x", "y"}) {
		t.Fatalf("after the failed give-back the replica holds %v, want x y (nothing dropped)", got)
	}
	if rej := a.Rejected(); len(rej) != 0 || len(a.leftIDs()) != 0 {
		t.Fatalf("rejected %+v, left %v after the failed give-back, want nothing", rej, a.leftIDs())
	}
	f.failWith(func(string) (int, string) { return 0, "" })
	if err := a.Pull(ctx); err != nil {
		t.Fatal(err)
	}
	if got := ids(a.Replica, "todos"); !slices.Equal(got, []string{"y"}) {
		t.Fatalf("replica holds %v, want y alone (x was deleted and collected)", got)
	}
	rej := a.Rejected()
	if len(rej) != 1 || rej[0].RecordID != "x" || rej[0].Code != proto.CodeCollected {
		t.Fatalf("rejected %+v, want x's edit with code collected", rej)
	}
	if got := f.pushedValues(t, "todos", "x"); slices.Contains(got, "edited") {
		t.Fatalf("x pushed with titles %q: the pending edit went", got)
	}
}

// TestReconciledChangesOutliveAFlushThatDoesNotSendThem: the changes a
// reconciliation kept may be re-stamped once however many pushes end
// before theirs: the push after the reconciliation fails, and the next
// Flush ends before pushing (the collection, stale again, fails its pull
// first); the Flush after it pushes them, refused collected, and they
// land re-stamped, as they would have at once, without reconciling again:
// the mark is each change's (pending.reconciled) and stays until the
// change leaves the outbox (the browser client's notes once went with
// the first push that ended).
func TestReconciledChangesOutliveAFlushThatDoesNotSendThem(t *testing.T) {
	f := newFakeServer(t)
	a := goAwayFresh(t, f, 0, time.Millisecond)
	ctx := t.Context()
	// The push after the reconciliation fails (there is nothing of the
	// replica's own to give back of t2: the seed wrote it).
	f.failWith(func(path string) (int, string) {
		if path == proto.PathPush {
			return 503, proto.CodeUnavailable
		}
		return 0, ""
	})
	if err := a.Pull(ctx); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("pull: %v, want unavailable (the push after reconciling)", err)
	}
	if p := a.Pending(); len(p) != 2 {
		t.Fatalf("outbox %+v, want the edit of t1 and the creation of t4", p)
	}
	// From here, no reconciliation again: no pull from the beginning.
	var fromStart atomic.Int64
	rw := func(req proto.PullRequest, ans proto.PullResponse) proto.PullResponse {
		if len(req.Cursor) == 0 {
			fromStart.Add(1)
		}
		return ans
	}
	f.rewritePull.Store(&rw)
	f.failWith(func(path string) (int, string) {
		if path == proto.PathPull {
			return 503, proto.CodeUnavailable
		}
		return 0, ""
	})
	time.Sleep(2 * time.Millisecond) // stale: Flush pulls first
	pushes := f.pushes.Load()
	if err := a.Flush(ctx); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("flush: %v, want unavailable (the pull first)", err)
	}
	if n := f.pushes.Load(); n != pushes {
		t.Fatalf("%d pushes by a Flush whose pull first failed, want none", n-pushes)
	}
	f.failWith(func(string) (int, string) { return 0, "" })
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	a.checkReconciled(t, f)
	for _, id := range []string{"t1", "t4"} {
		if n := f.pushedOf("todos", id); n != 2 {
			t.Fatalf("%s pushed %d times, want 2 (refused collected, then re-stamped)", id, n)
		}
	}
	if n := fromStart.Load(); n != 0 {
		t.Fatalf("%d pulls from the beginning after the reconciliation, want none (its changes were known re-stampable)", n)
	}
}
