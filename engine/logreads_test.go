package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/crdt/scope"
	"github.com/convergo/convergo/stores"
)

// heldStore counts the Pulls of its store and reads each at once, but
// holds its answer until release is closed (or fails it with fail when
// set): a read that began before what is written meanwhile.
type heldStore struct {
	stores.Store
	pulls   atomic.Int64
	release chan struct{}
	fail    error
}

func (s *heldStore) Pull(ctx context.Context, coll string, after uint64, limit stores.PageLimit) (stores.Page, error) {
	s.pulls.Add(1)
	p, err := s.Store.Pull(ctx, coll, after, limit)
	select {
	case <-s.release:
	case <-ctx.Done():
		return stores.Page{}, ctx.Err()
	}
	if s.fail != nil {
		return stores.Page{}, s.fail
	}
	return p, err
}

// waitPulls waits until n pulls wait for store reads of e.
func waitPulls(t *testing.T, e *Engine, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		e.reads.mu.Lock()
		waiting := 0
		for _, q := range e.reads.reads {
			for _, f := range []*logFlight{q.cur, q.next} {
				if f != nil {
					waiting += f.waiting
				}
			}
		}
		e.reads.mu.Unlock()
		if waiting >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d pulls wait for store reads, want %d", waiting, n)
		}
	}
}

// scopedReaders returns n readers of collection c, reader i reading the
// records of owner u<i> from a cursor past what is written, then writes
// a record s<i> for each owner: the readers' next pulls find a record
// of their own and leaves of the others'. The store's reads after it are
// held (hs.release).
func scopedReaders(t *testing.T, e *Engine, hs *heldStore, n int) ([]Cursor, []*scope.Pred) {
	t.Helper()
	ctx := context.Background()
	cursors := make([]Cursor, n)
	scopes := make([]*scope.Pred, n)
	close(hs.release)
	for i := range n {
		var err error
		if scopes[i], err = scope.Parse(fmt.Sprintf(`owner == "u%d"`, i)); err != nil {
			t.Fatal(err)
		}
		p, err := e.PullScoped(ctx, "c", Cursor{}, PageLimit{}, scopes[i])
		if err != nil {
			t.Fatal(err)
		}
		cursors[i] = p.Next
	}
	for i := range n {
		if err := e.Update(ctx, "c", fmt.Sprint("s", i), Doc{"owner": fmt.Sprint("u", i)}); err != nil {
			t.Fatal(err)
		}
	}
	hs.release = make(chan struct{})
	return cursors, scopes
}

// Pulls of one collection under many scopes, at one cursor at once, make
// one store read (two: the pulls that began after the first read began
// share the next), and each gets the page of its own scope: its record,
// and a leave for each of the others'.
func TestPullsShareAStoreRead(t *testing.T) {
	const readers = 20
	hs := &heldStore{Store: newMemory(t), release: make(chan struct{})}
	e := engineOn(t, hs)
	ctx := context.Background()
	for i := range readers {
		if err := e.Update(ctx, "c", fmt.Sprint("r", i), Doc{"owner": fmt.Sprint("u", i)}); err != nil {
			t.Fatal(err)
		}
	}
	// Cursors past the start and not fresh: every entry is a record or a
	// leave.
	cursors, scopes := scopedReaders(t, e, hs, readers)
	before := hs.pulls.Load()
	pages := make([]Page, readers)
	errs := make([]error, readers)
	var wg sync.WaitGroup
	for i := range readers {
		wg.Go(func() { pages[i], errs[i] = e.PullScoped(ctx, "c", cursors[i], PageLimit{}, scopes[i]) })
	}
	waitPulls(t, e, readers)
	close(hs.release)
	wg.Wait()
	// The first read, and the next for the pulls that began after it.
	if n := hs.pulls.Load() - before; n > 2 {
		t.Errorf("%d store reads for %d pulls at one cursor at once, want at most 2", n, readers)
	}
	for i, p := range pages {
		if errs[i] != nil {
			t.Fatalf("reader %d: %v", i, errs[i])
		}
		if len(p.Entries) != 1 || p.Entries[0].Record.ID != fmt.Sprint("s", i) || len(p.Left) != readers-1 {
			t.Errorf("reader %d: got %d entries (%v) and %d leaves, want s%d and %d leaves", i, len(p.Entries), p.Entries, len(p.Left), i, readers-1)
		}
		for _, l := range p.Left {
			if l.ID == fmt.Sprint("s", i) {
				t.Errorf("reader %d: a leave of its own record", i)
			}
		}
	}
}

// The pages of pulls that shared a store read are each their caller's:
// changing a record of one changes no other.
func TestSharedPageIsEachPullsOwn(t *testing.T) {
	hs := &heldStore{Store: newMemory(t), release: make(chan struct{})}
	e := engineOn(t, hs)
	write(t, e, "c", 0, 2)
	hs.pulls.Store(0)
	ctx := context.Background()
	// A read in flight first: the two pulls begin after it, and share
	// the next.
	var wg sync.WaitGroup
	wg.Go(func() {
		if _, err := e.Pull(ctx, "c", Cursor{}, PageLimit{}); err != nil {
			t.Error(err)
		}
	})
	waitPulls(t, e, 1)
	pages := make([]Page, 2)
	for i := range pages {
		wg.Go(func() {
			var err error
			if pages[i], err = e.Pull(ctx, "c", Cursor{}, PageLimit{}); err != nil {
				t.Error(err)
			}
		})
	}
	waitPulls(t, e, 3)
	close(hs.release)
	wg.Wait()
	if n := hs.pulls.Load(); n != 2 {
		t.Fatalf("%d store reads, want 2", n)
	}
	for _, en := range pages[0].Entries {
		clear(en.Record.Fields)
	}
	for _, en := range pages[1].Entries {
		if len(en.Record.Fields) != 1 {
			t.Fatalf("record %s of the other pull: %d fields after the first pull's were cleared, want 1", en.Record.ID, len(en.Record.Fields))
		}
	}
}

// A pull that begins while an identical store read is in flight does not
// share it: that read may have begun before a write the pull must see
// (the write a live subscriber was woken for, or the client's own
// acknowledged push). It waits for the next read, which it sees.
func TestPullSharesOnlyAReadBegunAfterIt(t *testing.T) {
	hs := &heldStore{Store: newMemory(t), release: make(chan struct{})}
	e := engineOn(t, hs)
	ctx := context.Background()
	first := make(chan Page, 1)
	go func() {
		p, err := e.Pull(ctx, "c", Cursor{}, PageLimit{})
		if err != nil {
			t.Error(err)
		}
		first <- p
	}()
	waitPulls(t, e, 1)
	// The write lands while the first read is held: the first pull may
	// miss it, a pull begun after it may not.
	if _, err := hs.Store.Apply(ctx, []crdt.Change{{Collection: "c", Record: crdt.SetField("late", "n", value(t, 1), crdt.Stamp{Wall: time.Now().UnixMilli(), Replica: "c"})}}); err != nil {
		t.Fatal(err)
	}
	second := make(chan Page, 1)
	go func() {
		p, err := e.Pull(ctx, "c", Cursor{}, PageLimit{})
		if err != nil {
			t.Error(err)
		}
		second <- p
	}()
	waitPulls(t, e, 2)
	close(hs.release)
	<-first
	if p := <-second; len(p.Entries) != 1 || p.Entries[0].Record.ID != "late" {
		t.Fatalf("a pull begun after the write: got %v, want the write", p.Entries)
	}
	if n := hs.pulls.Load(); n != 2 {
		t.Errorf("%d store reads, want 2 (the one in flight, then the next)", n)
	}
}

// A pull whose context ends returns at once; the read it shared goes on
// for the others. An error of the read is every sharer's.
func TestSharedReadOutlivesOnePull(t *testing.T) {
	hs := &heldStore{Store: newMemory(t), release: make(chan struct{})}
	e := engineOn(t, hs)
	write(t, e, "c", 0, 3)
	hs.pulls.Store(0)
	ctx := context.Background()
	cctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var kept error
	var page Page
	gone := make(chan error, 1)
	go func() {
		_, err := e.Pull(cctx, "c", Cursor{}, PageLimit{})
		gone <- err
	}()
	waitPulls(t, e, 1)
	wg.Go(func() { page, kept = e.Pull(ctx, "c", Cursor{}, PageLimit{}) })
	waitPulls(t, e, 2)
	cancel()
	var err error
	select {
	case err = <-gone: // at once, the read still held
	case <-time.After(10 * time.Second):
		t.Fatal("the cancelled pull waits for the read")
	}
	close(hs.release)
	wg.Wait()
	if !errors.Is(err, context.Canceled) {
		t.Errorf("the cancelled pull: got %v, want context.Canceled", err)
	}
	if kept != nil || len(page.Entries) != 3 {
		t.Errorf("the other pull: got %d entries and %v, want 3 and no error", len(page.Entries), kept)
	}

	failed := errors.New("store down")
	hs.fail, hs.release = failed, make(chan struct{})
	errs := make([]error, 2)
	for i := range errs {
		wg.Go(func() { _, errs[i] = e.Pull(ctx, "c", page.Next, PageLimit{}) })
	}
	waitPulls(t, e, 2)
	close(hs.release)
	wg.Wait()
	for i, err := range errs {
		if !errors.Is(err, failed) {
			t.Errorf("pull %d: got %v, want the store's error", i, err)
		}
	}
}

// Pulls that carry a turn (WithReadTurn) take it before a store read of
// their own and before they judge a read they shared, and still share
// the store's read: with one turn among many pulls of one collection
// under many scopes, the first begins a read and the others join the
// next while it holds the turn, then judge their page one at a time,
// each its own scope's.
func TestPullsTakeTurnsAndShare(t *testing.T) {
	const readers = 10
	hs := &heldStore{Store: newMemory(t), release: make(chan struct{})}
	e := engineOn(t, hs)
	ctx := context.Background()
	cursors, scopes := scopedReaders(t, e, hs, readers)
	before := hs.pulls.Load()
	turn := make(chan struct{}, 1) // one turn
	var begun, joined, inside, most atomic.Int64
	pages := make([]Page, readers)
	errs := make([]error, readers)
	var wg sync.WaitGroup
	for i := range readers {
		if i == 1 {
			waitPulls(t, e, 1) // the first holds the turn and reads
		}
		wg.Go(func() {
			held := false
			take := func(ctx context.Context, shared bool) error {
				if held {
					return nil
				}
				if shared {
					joined.Add(1)
				} else {
					begun.Add(1)
				}
				select {
				case turn <- struct{}{}:
				case <-ctx.Done():
					return ctx.Err()
				}
				held = true
				n := inside.Add(1)
				for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
				}
				return nil
			}
			pages[i], errs[i] = e.PullScoped(WithReadTurn(ctx, take), "c", cursors[i], PageLimit{}, scopes[i])
			if held {
				inside.Add(-1)
				<-turn
			}
		})
	}
	waitPulls(t, e, readers) // the others wait for the next read, not for the turn
	close(hs.release)
	wg.Wait()
	if n := hs.pulls.Load() - before; n > 2 {
		t.Errorf("%d store reads for %d pulls at one cursor at once with one turn, want at most 2", n, readers)
	}
	if most.Load() > 1 {
		t.Errorf("%d pulls judged a page at once with one turn", most.Load())
	}
	if joined.Load() == 0 || begun.Load() == 0 {
		t.Errorf("turns taken to begin a read %d, after a shared read %d: want both", begun.Load(), joined.Load())
	}
	for i, p := range pages {
		if errs[i] != nil {
			t.Fatalf("reader %d: %v", i, errs[i])
		}
		if len(p.Entries) != 1 || p.Entries[0].Record.ID != fmt.Sprint("s", i) || len(p.Left) != readers-1 {
			t.Errorf("reader %d: got %d entries and %d leaves, want s%d and %d leaves", i, len(p.Entries), len(p.Left), i, readers-1)
		}
	}
}
