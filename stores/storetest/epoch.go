package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/convergo/convergo/stores"
)

// Reopen closes s and opens the same data again, as a new process would:
// the same file, key prefix or table. Stores whose data does not outlive
// the process (memory) have none.
type Reopen func(t testing.TB, s stores.Store) stores.Store

// RunReopen runs the checks that need the same data opened twice: a
// durable store keeps its identity, its epochs and its log across a
// reopening. Durable stores run it beside Run.
func RunReopen(t *testing.T, newStore Factory, reopen Reopen) {
	t.Helper()
	t.Run("IdentitySurvivesReopen", func(t *testing.T) { testIdentityReopen(t, newStore, reopen) })
	t.Run("EpochsSurviveReopen", func(t *testing.T) { testEpochsReopen(t, newStore, reopen) })
	t.Run("PurgeSurvivesReopen", func(t *testing.T) { testPurgeReopen(t, newStore, reopen) })
}

func identity(t testing.TB, s stores.Store) string {
	t.Helper()
	id, err := s.Identity(context.Background())
	if err != nil {
		t.Fatalf("Identity: %v", err)
	}
	return id
}

func meta(t testing.TB, s stores.Store, coll string) stores.Meta {
	t.Helper()
	m, err := s.Meta(context.Background(), coll)
	if err != nil {
		t.Fatalf("Meta(%s): %v", coll, err)
	}
	if m.Lost > m.Epoch {
		t.Fatalf("Meta(%s) = %+v: Lost above Epoch", coll, m)
	}
	return m
}

// testIdentity checks that a store has a non-empty identity that stays the
// same from call to call, and that a new store has another.
func testIdentity(t *testing.T, f Factory) {
	s := open(t, f)
	id := identity(t, s)
	if id == "" {
		t.Fatal("Identity is empty")
	}
	fill(t, s, "c", 3)
	for i := range 3 {
		if got := identity(t, s); got != id {
			t.Fatalf("call %d: Identity = %q, want %q as before", i+2, got, id)
		}
	}
	other := open(t, f)
	if got := identity(t, other); got == id {
		t.Fatalf("a new store has the identity %q of another", got)
	}
}

// testEpochs checks what bumping does: BumpEpochs starts a new epoch, history
// lost, of every collection (written or not); BumpEpoch only of its own,
// HistoryLost moving Lost past every earlier epoch and Rebuilt leaving
// earlier epochs of the same history at or above Lost. Every bump raises
// its counter to stores.NextEpoch, at least the clock's Unix seconds, so a
// copy put back from before it cannot start its epoch again. Data is
// untouched and watchers hear a Resync.
func testEpochs(t *testing.T, f Factory) {
	ctx := context.Background()
	start := uint64(time.Now().Unix())
	byTheClock := func(what string, counter uint64) {
		t.Helper()
		if counter < start {
			t.Fatalf("%s: the counter is %d, want at least the Unix time in seconds before the bump, %d (stores.NextEpoch)", what, counter, start)
		}
	}
	s := open(t, f)
	fill(t, s, "a", 3)
	fill(t, s, "b", 2)
	before := map[string]stores.Meta{}
	for _, c := range []string{"a", "b", "never"} {
		before[c] = meta(t, s, c)
		if again := meta(t, s, c); again != before[c] {
			t.Fatalf("Meta(%s) changed without a bump: %+v then %+v", c, before[c], again)
		}
	}
	lostSince := func(what, c string, old, now stores.Meta) {
		t.Helper()
		if now.Epoch <= old.Epoch || old.Epoch >= now.Lost {
			t.Fatalf("%s: Meta(%s) went from %+v to %+v; want a larger epoch with the old one below Lost (history lost)", what, c, old, now)
		}
	}

	w := watch(t, s)
	settle()
	mark := w.mark()
	if err := s.BumpEpoch(ctx, "a", stores.Rebuilt); err != nil {
		t.Fatalf("BumpEpoch(a, rebuilt): %v", err)
	}
	a := meta(t, s, "a")
	if a.Epoch <= before["a"].Epoch || before["a"].Epoch < a.Lost {
		t.Fatalf("BumpEpoch(a, rebuilt): Meta went from %+v to %+v; want a larger epoch with the old one at or above Lost", before["a"], a)
	}
	byTheClock("BumpEpoch(a, rebuilt)", stores.LocalEpochOf(a))
	for _, c := range []string{"b", "never"} {
		if got := meta(t, s, c); got != before[c] {
			t.Fatalf("BumpEpoch(a) changed Meta(%s) from %+v to %+v", c, before[c], got)
		}
	}
	w.awaitResync(t, mark, "BumpEpoch")

	if err := s.BumpEpoch(ctx, "a", stores.HistoryLost); err != nil {
		t.Fatalf("BumpEpoch(a, history lost): %v", err)
	}
	a2 := meta(t, s, "a")
	lostSince("BumpEpoch(a, history lost)", "a", a, a2)
	lostSince("BumpEpoch(a, history lost)", "a", before["a"], a2)

	mark = w.mark()
	if err := s.BumpEpochs(ctx); err != nil {
		t.Fatalf("BumpEpochs: %v", err)
	}
	w.awaitResync(t, mark, "BumpEpochs")
	lostSince("BumpEpochs", "a", a2, meta(t, s, "a"))
	byTheClock("BumpEpochs", stores.StoreEpochOf(meta(t, s, "a")))
	for _, c := range []string{"b", "never"} {
		lostSince("BumpEpochs", c, before[c], meta(t, s, c))
	}
	if bf, ok := s.(stores.EpochsBumperFrom); ok {
		// Only from the store-wide counter as it is: two callers that
		// read the same one bump once.
		m := meta(t, s, "b")
		from := stores.StoreEpochOf(m)
		if bumped, err := bf.BumpEpochsFrom(ctx, from+1); err != nil || bumped {
			t.Fatalf("BumpEpochsFrom(%d) with the counter at %d: %v, %v; want false, nil", from+1, from, bumped, err)
		}
		if got := meta(t, s, "b"); got != m {
			t.Fatalf("BumpEpochsFrom of another counter changed Meta(b) from %+v to %+v", m, got)
		}
		mark = w.mark()
		if bumped, err := bf.BumpEpochsFrom(ctx, from); err != nil || !bumped {
			t.Fatalf("BumpEpochsFrom(%d) with the counter at %d: %v, %v; want true, nil", from, from, bumped, err)
		}
		w.awaitResync(t, mark, "BumpEpochsFrom")
		b2 := meta(t, s, "b")
		lostSince("BumpEpochsFrom", "b", m, b2)
		lostSince("BumpEpochsFrom", "never", before["never"], meta(t, s, "never"))
		if bumped, err := bf.BumpEpochsFrom(ctx, from); err != nil || bumped {
			t.Fatalf("BumpEpochsFrom(%d) again: %v, %v; want false, nil (the counter moved on)", from, bumped, err)
		}
		if got := meta(t, s, "b"); got != b2 {
			t.Fatalf("a second BumpEpochsFrom(%d) changed Meta(b) from %+v to %+v", from, b2, got)
		}
	}
	if h := head(t, s, "a"); h != 3 {
		t.Fatalf("after the bumps Head(a) = %d, want 3: a bump must not touch data", h)
	}
	if n := len(pullAll(t, s, "b", 0, 10)); n != 2 {
		t.Fatalf("after the bumps b holds %d records, want 2", n)
	}
	if err := s.BumpEpoch(ctx, "a", 0); err == nil {
		t.Fatal("BumpEpoch with cause 0: no error")
	}
	if _, err := s.Meta(ctx, ""); err == nil {
		t.Fatal("Meta of an invalid collection name: no error")
	}
}

// awaitResync waits for a Resync after mark.
func (w *watcher) awaitResync(t testing.TB, mark int, what string) {
	t.Helper()
	timeout := time.After(notifyWait)
	for {
		w.mu.Lock()
		for _, n := range w.got[mark:] {
			if n.Resync {
				w.mu.Unlock()
				return
			}
		}
		w.mu.Unlock()
		select {
		case <-w.signal:
		case <-timeout:
			t.Fatalf("%s: no Resync within %s", what, notifyWait)
		}
	}
}

func testIdentityReopen(t *testing.T, f Factory, reopen Reopen) {
	s := f(t)
	id := identity(t, s)
	fill(t, s, "c", 2)
	s = reopen(t, s)
	t.Cleanup(func() { _ = s.Close() })
	if got := identity(t, s); got != id {
		t.Fatalf("after reopening, Identity = %q, want %q", got, id)
	}
	if h := head(t, s, "c"); h != 2 {
		t.Fatalf("after reopening, Head(c) = %d, want 2", h)
	}
}

func testEpochsReopen(t *testing.T, f Factory, reopen Reopen) {
	ctx := context.Background()
	s := f(t)
	fill(t, s, "c", 2)
	if err := s.BumpEpoch(ctx, "c", stores.HistoryLost); err != nil {
		t.Fatal(err)
	}
	if err := s.BumpEpochs(ctx); err != nil {
		t.Fatal(err)
	}
	c, never := meta(t, s, "c"), meta(t, s, "never")
	s = reopen(t, s)
	t.Cleanup(func() { _ = s.Close() })
	if got := meta(t, s, "c"); got != c {
		t.Fatalf("after reopening, Meta(c) = %+v, want %+v", got, c)
	}
	if got := meta(t, s, "never"); got != never {
		t.Fatalf("after reopening, Meta(never) = %+v, want %+v", got, never)
	}
}
