package storetest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/convergo/convergo/stores"
)

// ClockedFactory is a Factory whose store reads the clock now where it
// bumps an epoch (stores.NextEpoch): each store's Now option.
type ClockedFactory func(t testing.TB, now func() time.Time) stores.Store

// SaveEpochs reads what a backup of s holds of its epochs, as the store
// keeps them: the store-wide counter and coll's own counters (missing
// where never bumped). putBack writes that copy over them, as a backup
// put back does; it is the one part of RunBumps that touches a store's
// raw items.
type SaveEpochs func(t testing.TB, s stores.Store, coll string) (putBack func())

// RunBumps runs the checks of the values epoch bumps set, on a clock the
// checks move: BumpAfterRestore, bumps of counters put back from a backup;
// BumpsAreNextEpoch, concurrent bumps; and BumpBurst, more concurrent
// bumps than a bump reads its counter again. Every store runs it beside
// Run.
func RunBumps(t *testing.T, newStore ClockedFactory, save SaveEpochs) {
	t.Helper()
	t.Run("BumpAfterRestore", func(t *testing.T) { testBumpAfterRestore(t, newStore, save) })
	t.Run("BumpsAreNextEpoch", func(t *testing.T) { testBumpsAreNextEpoch(t, newStore) })
	t.Run("BumpBurst", func(t *testing.T) { testBumpBurst(t, newStore) })
}

// Clock is a clock a test sets, for a store's Now option: it starts at
// a fixed second and moves only when the test moves it.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a Clock at a fixed second.
func NewClock() *Clock { return &Clock{t: time.Unix(1_800_000_000, 0)} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock on by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// openClocked returns a store from f on a new clock that is closed when
// the test ends.
func openClocked(t testing.TB, f ClockedFactory) (stores.Store, *Clock) {
	t.Helper()
	c := NewClock()
	return open(t, func(t testing.TB) stores.Store { return f(t, c.Now) }), c
}

// testBumpAfterRestore puts the epoch counters back to what they were
// before two bumps (a restored copy of the store) and bumps again, as
// `convergo store mark-restored` does: the new epochs must be past those
// of the lost history, or a reader holding a cursor of it would be taken
// for a reader of the new one. The clock moves on 10 s between the bumps.
func testBumpAfterRestore(t *testing.T, f ClockedFactory, save SaveEpochs) {
	ctx := context.Background()
	s, clock := openClocked(t, f)
	for _, tc := range []struct {
		name string
		coll string
		// saveFirst bumps once before saving, so the counters saved are
		// not missing.
		saveFirst bool
	}{
		{"from missing counters", "fresh", false},
		{"from counters of earlier bumps", "bumped", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bump := func() stores.Meta {
				t.Helper()
				if err := s.BumpEpochs(ctx); err != nil {
					t.Fatalf("BumpEpochs: %v", err)
				}
				if err := s.BumpEpoch(ctx, tc.coll, stores.HistoryLost); err != nil {
					t.Fatalf("BumpEpoch: %v", err)
				}
				return meta(t, s, tc.coll)
			}
			if tc.saveFirst {
				bump()
				clock.Advance(10 * time.Second)
			}
			saved, putBack := meta(t, s, tc.coll), save(t, s, tc.coll)
			lost := bump()
			putBack()
			if got := meta(t, s, tc.coll); got != saved {
				t.Fatalf("the counters put back: Meta %+v, want %+v as saved", got, saved)
			}
			clock.Advance(10 * time.Second)
			now := bump()
			if now.Epoch <= lost.Epoch || now.Lost <= lost.Epoch || stores.StoreEpochOf(now) <= stores.StoreEpochOf(lost) {
				t.Fatalf("bumps after a restore: Meta %+v, after the lost history's %+v; want an epoch and Lost past the lost history's epoch, and a larger store-wide counter", now, lost)
			}
		})
	}
}

// testBumpsAreNextEpoch checks the values bumps set: stores.NextEpoch of
// the counter and the clock, for every bump of concurrent callers, and
// (stores.EpochsBumperFrom) BumpEpochsFrom only for one of several
// callers that read the same counter. The store has its identity after
// bumps made its epochs.
func testBumpsAreNextEpoch(t *testing.T, f ClockedFactory) {
	ctx := context.Background()
	s, clock := openClocked(t, f)
	at := uint64(clock.Now().Unix())
	before := meta(t, s, "c")
	const callers = 4
	var wg sync.WaitGroup
	errs := make(chan error, 2*callers)
	for range callers {
		wg.Go(func() { errs <- s.BumpEpoch(ctx, "c", stores.Rebuilt) })
		wg.Go(func() { errs <- s.BumpEpochs(ctx) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent bump: %v", err)
		}
	}
	// From 0 with the clock at T, every bump after the first counts on:
	// T+callers-1. The shard count stays as it was.
	m := meta(t, s, "c")
	want := stores.MetaOf(at+callers-1, at+callers-1, 0)
	want.Shards = before.Shards
	if m != want {
		t.Fatalf("after %d concurrent BumpEpoch and BumpEpochs each at %d: Meta %+v, want %+v", callers, at, m, want)
	}

	if bf, ok := s.(stores.EpochsBumperFrom); ok {
		from := stores.StoreEpochOf(m)
		var bumped sync.Map
		for i := range callers {
			wg.Go(func() {
				ok, err := bf.BumpEpochsFrom(ctx, from)
				if err != nil {
					t.Errorf("BumpEpochsFrom(%d): %v", from, err)
				}
				bumped.Store(i, ok)
			})
		}
		wg.Wait()
		n := 0
		bumped.Range(func(_, ok any) bool {
			if ok.(bool) {
				n++
			}
			return true
		})
		if n != 1 {
			t.Fatalf("%d concurrent BumpEpochsFrom(%d): %d bumped, want 1", callers, from, n)
		}
		if got := meta(t, s, "c"); stores.StoreEpochOf(got) != from+1 {
			t.Fatalf("after BumpEpochsFrom(%d): Meta %+v; want the store-wide counter at %d", from, got, from+1)
		}
	}
	if id := identity(t, s); id == "" {
		t.Fatal("Identity after bumps made the epochs: empty")
	}
}

// testBumpBurst: more concurrent bumps of one counter than a bump reads
// it again (stores.BumpTries), as many instances make when they all see
// the same head go back. A compare and set fails only because another
// bump succeeded, so every bump must succeed; a failed one would be
// logged as an error and tried again later, one more reset of every
// reader.
func testBumpBurst(t *testing.T, f ClockedFactory) {
	ctx := context.Background()
	s, clock := openClocked(t, f)
	at := uint64(clock.Now().Unix())
	const callers = 2 * stores.BumpTries
	var wg sync.WaitGroup
	errs := make(chan error, 2*callers)
	start := make(chan struct{})
	for range callers {
		wg.Go(func() { <-start; errs <- s.BumpEpoch(ctx, "c", stores.HistoryLost) })
		wg.Go(func() { <-start; errs <- s.BumpEpochs(ctx) })
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("one of %d concurrent bumps of each counter: %v", callers, err)
		}
	}
	m := meta(t, s, "c")
	if want := stores.MetaOf(at+callers-1, at+callers-1, at+callers-1); m.Epoch != want.Epoch || m.Lost != want.Lost {
		t.Fatalf("after %d concurrent BumpEpoch and BumpEpochs each: Meta %+v, want epoch %#x lost %#x", callers, m, want.Epoch, want.Lost)
	}
}
