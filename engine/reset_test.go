package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/bolt"
	"github.com/convergo/convergo/stores/bolt/bolttest"
	"github.com/convergo/convergo/stores/memory"
)

// engineOn opens an engine on st, closed (with st) when the test ends.
func engineOn(t *testing.T, st stores.Store) *Engine {
	t.Helper()
	e, err := Open(Config{Store: st, Replica: "srv", PollInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// write applies n new records to coll, ids from first on.
func write(t *testing.T, e *Engine, coll string, first, n int) {
	t.Helper()
	cs := make([]crdt.Change, n)
	for i := range cs {
		id := fmt.Sprintf("r%d", first+i)
		cs[i] = crdt.Change{Collection: coll, Record: crdt.SetField(id, "n", value(t, first+i), crdt.Stamp{Wall: time.Now().UnixMilli(), Replica: "c"})}
	}
	res, err := e.Apply(context.Background(), cs)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if r.Status != StatusApplied {
			t.Fatalf("change %d: %v %v", i, r.Status, r.Err)
		}
	}
}

// pullTo pulls every page from c and returns the cursor after the last,
// as bytes a client keeps.
func pullTo(t *testing.T, e *Engine, coll string, c []byte) []byte {
	t.Helper()
	cur, err := ParseCursor(c)
	if err != nil {
		t.Fatal(err)
	}
	for {
		p, err := e.Pull(context.Background(), coll, cur, PageLimit{Records: 7})
		if err != nil {
			t.Fatalf("pull %s from %v: %v", coll, cur, err)
		}
		cur = p.Next
		if !p.More {
			return cur.Bytes()
		}
	}
}

// wantReset pulls from c and wants a reset with reason.
func wantReset(t *testing.T, e *Engine, coll string, c []byte, reason ResetReason) {
	t.Helper()
	cur, err := ParseCursor(c)
	if err != nil {
		t.Fatal(err)
	}
	p, err := e.Pull(context.Background(), coll, cur, PageLimit{})
	if !errors.Is(err, ErrReset) {
		t.Fatalf("pull %s from a cursor of another history: got %d entries and error %v, want ErrReset", coll, len(p.Entries), err)
	}
	var re *ResetError
	if !errors.As(err, &re) {
		t.Fatalf("error %v is no *ResetError", err)
	}
	if re.Reason != reason || re.Collection != coll {
		t.Fatalf("reset %+v, want reason %v for %s", re, reason, coll)
	}
	// The empty cursor never resets, and its pages carry cursors that
	// pull on without one.
	if got := pullTo(t, e, coll, nil); len(got) == 0 {
		t.Fatal("a pull from the start of a non-empty log gave the start cursor")
	}
}

// noReset pulls from c and wants no reset.
func noReset(t *testing.T, e *Engine, coll string, c []byte) {
	t.Helper()
	pullTo(t, e, coll, c)
}

// TestResetMemoryRestart: a restarted memory store is a new store.
func TestResetMemoryRestart(t *testing.T) {
	e := engineOn(t, memory.New())
	write(t, e, "todos", 0, 5)
	c := pullTo(t, e, "todos", nil)
	noReset(t, e, "todos", c)

	e2 := engineOn(t, memory.New())
	write(t, e2, "todos", 0, 20) // the head passes the old cursor
	wantReset(t, e2, "todos", c, ResetHistoryLost)
}

func openBolt(t *testing.T, path string) *bolt.Store {
	t.Helper()
	st, err := bolt.Open(context.Background(), path, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// onBolt opens the bolt store at path and an engine on it, runs fn, and
// closes both: one run of the server.
func onBolt(t *testing.T, path string, fn func(e *Engine)) {
	t.Helper()
	st := openBolt(t, path)
	defer st.Close()
	e := engineOn(t, st)
	defer e.Close()
	fn(e)
}

// TestResetBoltFileReplaced: the file is moved away and the server starts
// on a new one.
func TestResetBoltFileReplaced(t *testing.T) {
	path := filepath.Join(t.TempDir(), "convergo.db")
	var c []byte
	onBolt(t, path, func(e *Engine) {
		write(t, e, "todos", 0, 5)
		c = pullTo(t, e, "todos", nil)
	})
	if err := os.Rename(path, path+".away"); err != nil {
		t.Fatal(err)
	}

	onBolt(t, path, func(e *Engine) {
		write(t, e, "todos", 0, 20)
		wantReset(t, e, "todos", c, ResetHistoryLost)
	})
}

// TestResetWitnessPastTheHead: an older copy of the store is put back
// without the procedure. The first reader to come back with a cursor this
// server made past the head is proof that the store went back: every
// collection starts a new epoch, history lost, so that the readers of
// other collections, and the readers of this one whose cursors the head
// passes again before they come back, are reset too and give back what
// they hold.
func TestResetWitnessPastTheHead(t *testing.T) {
	var ahead, notes []byte
	var mid Cursor
	e := olderCopyScene(t, func(e *Engine) {
		ahead = pullTo(t, e, "todos", nil) // at 8
		var err error
		if mid, err = e.CursorAt(context.Background(), "todos", 5); err != nil {
			t.Fatal(err)
		}
		notes = pullTo(t, e, "notes", nil) // at 6
	})
	wantReset(t, e, "todos", ahead, ResetHistoryLost) // the witness
	write(t, e, "todos", 100, 10)                     // head 13: seqs 4..8 handed out again
	write(t, e, "notes", 100, 10)                     // head 12: seqs 3..6 too
	wantReset(t, e, "todos", mid.Bytes(), ResetHistoryLost)
	wantReset(t, e, "notes", notes, ResetHistoryLost)
	noReset(t, e, "todos", pullTo(t, e, "todos", nil)) // new cursors carry the new epoch
}

// olderCopyScene writes todos r0..r2 and notes r0..r1 on a bolt store,
// copies its file, writes todos r3..r7 and notes r2..r5, calls read (for
// the cursors a test keeps), puts the copy back without the procedure
// (heads 3 and 2) and returns an engine on it.
func olderCopyScene(t *testing.T, read func(e *Engine)) *Engine {
	t.Helper()
	dir := t.TempDir()
	path, backup := filepath.Join(dir, "convergo.db"), filepath.Join(dir, "backup.db")
	onBolt(t, path, func(e *Engine) {
		write(t, e, "todos", 0, 3)
		write(t, e, "notes", 0, 2)
	})
	bolttest.CopyWithNote(t, path, backup)
	onBolt(t, path, func(e *Engine) {
		write(t, e, "todos", 3, 5)
		write(t, e, "notes", 2, 4)
		read(e)
	})
	bolttest.CopyWithNote(t, backup, path)
	st := openBolt(t, path)
	t.Cleanup(func() { st.Close() })
	return engineOn(t, st)
}

// TestResetSlotGivenOutAgain: an older copy of the store is put back
// without the procedure and written past every cursor before any reader
// comes back, so no cursor is past a head. The entry at a reader's
// position is now of another record than the one it read there: the
// sequence number was given out again. That reader is reset, and as for a
// cursor past the head, every collection starts a new epoch.
func TestResetSlotGivenOutAgain(t *testing.T) {
	var todos, notes []byte
	e := olderCopyScene(t, func(e *Engine) {
		todos = pullTo(t, e, "todos", nil) // at 8
		notes = pullTo(t, e, "notes", nil) // at 6
	})
	write(t, e, "todos", 100, 10) // head 13: seqs 4..8 handed out again
	write(t, e, "notes", 100, 10) // head 12: seqs 3..6 too
	wantReset(t, e, "todos", todos, ResetHistoryLost)
	wantReset(t, e, "notes", notes, ResetHistoryLost)
	noReset(t, e, "todos", pullTo(t, e, "todos", nil))
}

// TestSlotMarkKept: the slot marks a pull notes follow the reader through
// pages, shards and a record that moves on, and never reset a reader of
// the one history.
func TestSlotMarkKept(t *testing.T) {
	for _, k := range []int{1, 3} {
		t.Run(fmt.Sprint("K=", k), func(t *testing.T) {
			ctx := context.Background()
			var st stores.Store = memory.New()
			if k > 1 {
				st = newSharded(k)
			}
			e := engineOn(t, st)
			write(t, e, "todos", 0, 20)
			var cur Cursor
			for i := 0; ; i++ {
				p, err := e.Pull(ctx, "todos", cur, PageLimit{Records: 3})
				if err != nil {
					t.Fatal(err)
				}
				if !p.Next.IsStart() && packSlots(p.Next.slotMarks()) == "" {
					t.Fatalf("page %d: %v has no slot marks", i, p.Next)
				}
				// The record at the position changes and moves on: no
				// evidence either way.
				if i%2 == 0 && len(p.Entries) > 0 {
					last := p.Entries[len(p.Entries)-1].Record.ID
					if err := e.Put(ctx, "todos", last, Doc{"n": fmt.Sprint("again ", i)}); err != nil {
						t.Fatal(err)
					}
				}
				cur = p.Next
				if !p.More {
					break
				}
			}
			write(t, e, "todos", 100, 2)
			noReset(t, e, "todos", cur.Bytes())
		})
	}
}

// deafStore is a rewindable store whose Resync notifications the engine
// does not hear: another instance started an epoch, and its message was
// lost.
type deafStore struct{ *rewindable }

func (d deafStore) Watch(fn func(stores.Notification)) func() {
	return d.rewindable.Watch(func(n stores.Notification) {
		if !n.Resync {
			fn(n)
		}
	})
}

// TestResetPastTheHeadOfANewEpoch: a cursor past the head of a collection
// whose epoch has changed without this instance hearing of it (its cache
// says the cursor's epoch) gets the reset of that epoch change, not
// history_lost, and starts no new epoch of the store's collections.
func TestResetPastTheHeadOfANewEpoch(t *testing.T) {
	ctx := context.Background()
	r := deafStore{&rewindable{Store: memory.New()}}
	e := engineOn(t, r)
	write(t, e, "todos", 0, 8)
	write(t, e, "notes", 0, 2)
	c := pullTo(t, e, "todos", nil)
	notes := pullTo(t, e, "notes", nil)
	if err := r.BumpEpoch(ctx, "todos", stores.Rebuilt); err != nil {
		t.Fatal(err)
	}
	r.rewind(3) // the rebuilt log, shorter (as a renumbered one may be)
	wantReset(t, e, "todos", c, ResetRebuilt)
	noReset(t, e, "notes", notes)
}

// metaFlaky is a rewindable store whose Meta fails while fail is set (a
// DynamoDB collection fenced by a reshard, a backend that times out).
type metaFlaky struct {
	*rewindable
	fail atomic.Bool
	id   atomic.Pointer[string] // when set, the identity (a store made anew)
}

func (m *metaFlaky) Meta(ctx context.Context, coll string) (stores.Meta, error) {
	if m.fail.Load() {
		return stores.Meta{}, fmt.Errorf("meta %s: %w", coll, stores.ErrUnavailable)
	}
	return m.rewindable.Meta(ctx, coll)
}

func (m *metaFlaky) Identity(ctx context.Context) (string, error) {
	if id := m.id.Load(); id != nil {
		return *id, nil
	}
	return m.rewindable.Identity(ctx)
}

// TestWentBackUnreadEpoch: a cursor past the head whose collection's epoch
// cannot be read then is no proof of anything yet (the epoch may have
// changed: a rebuild, whose reset is another): the pull fails, to be
// tried again, and resets nobody.
func TestWentBackUnreadEpoch(t *testing.T) {
	ctx := context.Background()
	st := &metaFlaky{rewindable: &rewindable{Store: memory.New()}}
	e := engineOn(t, st)
	write(t, e, "todos", 0, 8)
	c := pullTo(t, e, "todos", nil)
	cur, err := ParseCursor(c)
	if err != nil {
		t.Fatal(err)
	}
	st.rewind(3)
	st.fail.Store(true)
	_, err = e.Pull(ctx, "todos", cur, PageLimit{})
	if err == nil || errors.Is(err, ErrReset) || !errors.Is(err, stores.ErrUnavailable) {
		t.Fatalf("pull past the head while the epoch cannot be read: %v, want the store's error, not a reset", err)
	}
	st.fail.Store(false)
	wantReset(t, e, "todos", c, ResetHistoryLost)
}

// TestWentBackOtherStore: a cursor past the head of a store that is not
// the cursor's any more (wiped and made anew, and this instance has not
// heard yet) is reset as of another store, and starts no new epoch of the
// new store's collections: its readers have nothing to give back.
func TestWentBackOtherStore(t *testing.T) {
	ctx := context.Background()
	st := &metaFlaky{rewindable: &rewindable{Store: memory.New()}}
	e := engineOn(t, st)
	write(t, e, "todos", 0, 8)
	c := pullTo(t, e, "todos", nil)
	before, err := st.Meta(ctx, "notes")
	if err != nil {
		t.Fatal(err)
	}
	id := "made anew"
	st.id.Store(&id)
	st.rewind(3)
	wantReset(t, e, "todos", c, ResetHistoryLost)
	after, err := st.Meta(ctx, "notes")
	if err != nil {
		t.Fatal(err)
	}
	if after.Epoch != before.Epoch {
		t.Fatalf("the new store's epoch went from %d to %d: a cursor of the old store started a new epoch of the new one", before.Epoch, after.Epoch)
	}
}

// TestResetMovedOnNotMet: an older copy of the store is put back without
// the procedure and written past every cursor, and the entry at a
// reader's position has moved on since (its record written again), so
// nothing is at that position. In one history the record the reader read
// there is met later, before the head; here it is nowhere after it, and
// the reader is reset, history lost, as for another record at the
// position. A record that moved on, in one history, resets nobody
// (TestSlotMarkKept).
func TestResetMovedOnNotMet(t *testing.T) {
	for _, pages := range []int{1000, 2} {
		t.Run(fmt.Sprint("pages of ", pages), func(t *testing.T) {
			var c []byte
			e := olderCopyScene(t, func(e *Engine) { c = pullTo(t, e, "todos", nil) }) // at 8: r7
			write(t, e, "todos", 100, 10)                                              // head 13: seqs 4..8 handed out again
			if err := e.Put(context.Background(), "todos", "r104", Doc{"n": "again"}); err != nil {
				t.Fatal(err) // r104 leaves seq 8 for 14: nothing is at c's position
			}
			cur, err := ParseCursor(c)
			if err != nil {
				t.Fatal(err)
			}
			for range 100 {
				p, err := e.Pull(context.Background(), "todos", cur, PageLimit{Records: pages})
				var re *ResetError
				if errors.As(err, &re) {
					if re.Reason != ResetHistoryLost {
						t.Fatalf("reset %v, want history_lost", re)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if !p.More {
					t.Fatalf("the reader at r7's old position read to the head without a reset")
				}
				if cur, err = ParseCursor(p.Next.Bytes()); err != nil { // the mark to meet travels in the cursor
					t.Fatal(err)
				}
			}
			t.Fatal("no end")
		})
	}
}

// TestResetUnverifiedPastTheHead: a cursor the server cannot tell it made
// (Unverified: a client may have written its positions) past the head
// resets its reader only. It is no proof that the store went back, so a
// client cannot reset every reader of the store by writing one.
func TestResetUnverifiedPastTheHead(t *testing.T) {
	ctx := context.Background()
	e := engineOn(t, memory.New())
	write(t, e, "todos", 0, 3)
	c := pullTo(t, e, "todos", nil)
	forged, err := e.CursorAt(ctx, "todos", 1000)
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.Pull(ctx, "todos", forged.Unverified(), PageLimit{})
	var re *ResetError
	if !errors.As(err, &re) || re.Reason != ResetHistoryLost {
		t.Fatalf("pull from an unverified cursor past the head: %v, want a history_lost reset", err)
	}
	noReset(t, e, "todos", c)
}

// TestResetUnverifiedNotLaundered: a client writes a cursor of a sharded
// collection (Unverified) with a position past a shard's head, or a slot
// mark that names another record than the one at a shard's position, or
// a record still to be met that no pull meets, and reads a page that ends
// before that shard (or before its head). The page's next cursor is one
// the server made (the transport tags it, and a live subscription keeps it
// as it is): it must not carry what the client wrote, or its next pull
// would be taken for proof that the store went back, and one client could
// start a new epoch of every collection of the store at will.
func TestResetUnverifiedNotLaundered(t *testing.T) {
	ctx := context.Background()
	for _, forge := range []string{"position", "mark", "pending"} {
		t.Run(forge, func(t *testing.T) {
			st := newSharded(2)
			e := engineOn(t, st)
			write(t, e, "c", 0, 20)
			write(t, e, "other", 0, 3)
			other := pullTo(t, e, "other", nil)
			legit, err := ParseCursor(pullTo(t, e, "c", nil))
			if err != nil {
				t.Fatal(err)
			}
			var forged Cursor
			switch forge {
			case "position":
				// Shard 1 at 0, read first (the rotation starts at the
				// positions' sum modulo K), and shard 0 past its head.
				heads, err := st.ShardHeads(ctx, "c")
				if err != nil {
					t.Fatal(err)
				}
				if heads[0] == 0 || heads[1] == 0 {
					t.Fatalf("shard heads %v: both shards need entries", heads)
				}
				past := heads[0] + 5
				if past%2 == 0 {
					past++
				}
				if forged, err = e.CursorAtShards(ctx, "c", []uint64{past, 0}); err != nil {
					t.Fatal(err)
				}
			case "mark":
				// The shard read second names another record.
				write(t, e, "c", 100, 20)
				pos := legit.Positions()
				marks, pending := legit.slotMarks()
				if len(marks) != 2 || marks[0] == 0 || marks[1] == 0 {
					t.Fatalf("%v: want a slot mark for both shards", legit)
				}
				second := int(pos[0]+pos[1]+1) % 2
				marks[second] ^= 1
				forged = legit
				forged.slots = packSlots(marks, pending)
			case "pending":
				// A record still to be met on each shard, which no pull
				// meets: it must not go on into the cursors the server
				// makes, where reaching the head without it is proof.
				write(t, e, "c", 100, 20)
				marks, pending := legit.slotMarks()
				if len(pending) != 2 {
					t.Fatalf("%v: want slot marks for both shards", legit)
				}
				for i := range pending {
					pending[i] = slotMark(e.slotKeyFor(legit.store), "c", "never written")
				}
				forged = legit
				forged.slots = packSlots(marks, pending)
			}
			cur := forged.Unverified()
			limit := PageLimit{Records: 1}
			for caughtUp := 0; caughtUp < 2; {
				p, err := e.Pull(ctx, "c", cur, limit)
				if errors.Is(err, ErrReset) {
					break // this reader is reset: its own business
				}
				if err != nil {
					t.Fatal(err)
				}
				if !p.More {
					caughtUp++ // and pulls once more, as a reader that comes back
				}
				cur, limit = p.Next, PageLimit{} // the cursor the server made
			}
			noReset(t, e, "other", other)
			noReset(t, e, "c", legit.Bytes())
		})
	}
}

// TestResetRebuilt: an epoch started with the log rebuilt resets with
// ResetRebuilt; a later loss outranks it.
func TestResetRebuilt(t *testing.T) {
	ctx := context.Background()
	st := memory.New()
	e := engineOn(t, st)
	write(t, e, "todos", 0, 5)
	c := pullTo(t, e, "todos", nil)
	if err := st.BumpEpoch(ctx, "todos", stores.Rebuilt); err != nil {
		t.Fatal(err)
	}
	wantReset(t, e, "todos", c, ResetRebuilt)
	c2 := pullTo(t, e, "todos", nil)
	noReset(t, e, "todos", c2)
	if err := st.BumpEpoch(ctx, "todos", stores.HistoryLost); err != nil {
		t.Fatal(err)
	}
	wantReset(t, e, "todos", c, ResetHistoryLost)
	wantReset(t, e, "todos", c2, ResetHistoryLost)
	// Other collections are untouched.
	write(t, e, "notes", 0, 2)
	c3 := pullTo(t, e, "notes", nil)
	if err := st.BumpEpoch(ctx, "todos", stores.Rebuilt); err != nil {
		t.Fatal(err)
	}
	noReset(t, e, "notes", c3)
}

// rewindable is a memory store whose head and log can be set back, as a
// head set back by hand in Redis would.
type rewindable struct {
	*memory.Store
	mu  sync.Mutex
	cut uint64 // when non-zero, the head reads as cut and nothing after it exists
}

func (r *rewindable) rewind(to uint64) {
	r.mu.Lock()
	r.cut = to
	r.mu.Unlock()
}

func (r *rewindable) Head(ctx context.Context, coll string) (uint64, error) {
	h, err := r.Store.Head(ctx, coll)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cut != 0 && h > r.cut {
		h = r.cut
	}
	return h, err
}

func (r *rewindable) Pull(ctx context.Context, coll string, after uint64, limit stores.PageLimit) (stores.Page, error) {
	p, err := r.Store.Pull(ctx, coll, after, limit)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cut == 0 {
		return p, err
	}
	out := stores.Page{Next: after}
	for _, en := range p.Entries {
		if en.Seq > r.cut {
			break
		}
		out.Entries = append(out.Entries, en)
		out.Next = en.Seq
	}
	return out, err
}

// TestHeadWentBack: the engine sees a collection's head go backwards:
// subscribers are told the lower head, the store starts a new epoch of the
// collection, and cursors from before are reset even once the head has
// passed them again.
func TestHeadWentBack(t *testing.T) {
	ctx := context.Background()
	st := &rewindable{Store: memory.New()}
	e := engineOn(t, st)
	write(t, e, "todos", 0, 8)
	c := pullTo(t, e, "todos", nil)
	sub, err := e.Subscribe("todos")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if h, err := e.Head(ctx, "todos"); err != nil || h != 8 {
		t.Fatalf("Head = %d, %v; want 8", h, err)
	}
	before, _ := st.Meta(ctx, "todos")

	st.rewind(3)
	if h, err := e.Head(ctx, "todos"); err != nil || h != 3 {
		t.Fatalf("Head after the rewind = %d, %v; want 3", h, err)
	}
	select {
	case h := <-sub.C():
		if h != 3 {
			t.Fatalf("the subscriber got head %d, want 3", h)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the subscriber was not told the head went back")
	}
	after, _ := st.Meta(ctx, "todos")
	if after.Lost <= before.Epoch {
		t.Fatalf("Meta went from %+v to %+v: no new epoch of lost history", before, after)
	}
	st.rewind(0) // the head is 8 again: the cursor's position alone looks fine
	wantReset(t, e, "todos", c, ResetHistoryLost)
}

// TestHeadReadsOverlapping: two concurrent head reads that return out of
// order are no rewind.
func TestHeadReadsOverlapping(t *testing.T) {
	ctx := context.Background()
	st := memory.New()
	e := engineOn(t, st)
	write(t, e, "todos", 0, 2)
	start := e.hist.ticket.Load() // a read that began before the next one ended
	write(t, e, "todos", 2, 2)
	if _, err := e.Head(ctx, "todos"); err != nil { // reads 4
		t.Fatal(err)
	}
	e.observeHead(ctx, "todos", 2, start) // the older read returns late
	m, _ := st.Meta(ctx, "todos")
	if m.Epoch != 0 {
		t.Fatalf("an overlapping older head read started a new epoch: %+v", m)
	}
}

// A store that starts a new history with its head where it was (restored
// from an older state and written past it again, or marked restored) wakes
// every subscriber, so that it pulls and is reset.
func TestNewEpochWakesSubscribers(t *testing.T) {
	e, next := newEpochWakes(t, nil)
	if _, err := e.Pull(context.Background(), "c", next, PageLimit{}); !errors.Is(err, ErrReset) {
		t.Fatalf("pull after the new epoch: %v, want a reset", err)
	}
}

// newEpochWakes runs the new-epoch scenario: collection "c" is written and
// subscribed to, and read from the beginning; between runs then (nil: nothing);
// the store starts a new history, which must wake the subscriber. It
// returns the engine and the cursor the read ended at.
func newEpochWakes(t *testing.T, between func(e *Engine)) (*Engine, Cursor) {
	t.Helper()
	ctx := context.Background()
	st := memory.New()
	t.Cleanup(func() { st.Close() })
	e, err := Open(Config{Store: st, Replica: "srv", PollInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	ch := crdt.Change{Collection: "c", Record: crdt.SetField("r", "f", []byte{0x01}, crdt.Stamp{Wall: 1, Replica: "w"})}
	if _, err := e.Apply(ctx, []crdt.Change{ch}); err != nil {
		t.Fatal(err)
	}
	sub, err := e.Subscribe("c")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sub.Close)
	page, err := e.Pull(ctx, "c", Cursor{}, PageLimit{})
	if err != nil {
		t.Fatal(err)
	}
	if between != nil {
		between(e)
	}
	// Heads are known to the subscriber before the epoch changes.
	e.publish("c", 1)
	<-sub.C()
	if err := st.BumpEpochs(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sub.C():
	case <-time.After(5 * time.Second):
		t.Fatal("the new epoch did not wake the subscriber")
	}
	return e, page.Next
}

// The heads the engine remembers to see a rewind are bounded (maxHistory)
// and forgotten all at once past the bound; head reads of collections
// nobody wrote, which any reader can make by naming new collections its
// rights match, must not push out the heads of written ones: a rewind of
// another tenant's collection after them is still seen.
func TestHeadWentBackAfterUnwrittenReads(t *testing.T) {
	ctx := context.Background()
	st := &rewindable{Store: memory.New()}
	e := engineOn(t, st)
	write(t, e, "todos", 0, 8)
	c := pullTo(t, e, "todos", nil)
	if h, err := e.Head(ctx, "todos"); err != nil || h != 8 {
		t.Fatalf("Head = %d, %v; want 8", h, err)
	}
	for i := range maxHistory {
		if _, err := e.Head(ctx, fmt.Sprintf("u%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	st.rewind(3)
	if h, err := e.Head(ctx, "todos"); err != nil || h != 3 {
		t.Fatalf("Head after the rewind = %d, %v; want 3", h, err)
	}
	st.rewind(0)
	wantReset(t, e, "todos", c, ResetHistoryLost)
}

// The histories pages were served in (servedHistories) are bounded too:
// pulls of collections nobody wrote, which serve no history (the empty
// cursor), must not push out those of written ones, so that a store that
// starts a new history after them still wakes the written collections'
// subscribers.
func TestNewEpochWakesSubscribersAfterUnwrittenPulls(t *testing.T) {
	newEpochWakes(t, func(e *Engine) {
		for i := range maxHistory {
			if _, err := e.Pull(context.Background(), fmt.Sprintf("u%d", i), Cursor{}, PageLimit{}); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// damagedAt is a memory store whose log entry at seq bad is damaged, as a
// store reads one (stores.ErrCorrupt): a page ends before it, and fails
// when it is the first.
type damagedAt struct {
	*memory.Store
	bad uint64
}

func (d *damagedAt) Pull(ctx context.Context, coll string, after uint64, limit stores.PageLimit) (stores.Page, error) {
	p, err := d.Store.Pull(ctx, coll, after, limit)
	if err != nil {
		return p, err
	}
	for i, en := range p.Entries {
		if en.Seq != d.bad {
			continue
		}
		if i == 0 {
			return stores.Page{}, fmt.Errorf("pull %s: %w: the entry at %d", coll, stores.ErrCorrupt, d.bad)
		}
		p.Entries, p.Next, p.More = p.Entries[:i], p.Entries[i-1].Seq, true
		break
	}
	return p, nil
}

// TestSlotCheckPastDamage: an entry damaged after a reader read it, at
// the reader's position, does not stop the reader: the check of its slot
// mark reads it, but the reader needs nothing of it.
func TestSlotCheckPastDamage(t *testing.T) {
	ctx := context.Background()
	st := &damagedAt{Store: memory.New()}
	e := engineOn(t, st)
	write(t, e, "todos", 0, 5)
	p, err := e.Pull(ctx, "todos", Cursor{}, PageLimit{Records: 3})
	if err != nil {
		t.Fatal(err)
	}
	st.bad = p.Next.Seq() // damaged once read
	if p, err = e.Pull(ctx, "todos", p.Next, PageLimit{}); err != nil || len(p.Entries) != 2 {
		t.Fatalf("pull after a damaged entry already read: %d entries, %v; want the 2 after it", len(p.Entries), err)
	}
}

// beatenStore is a rewindable store on which another instance starts a
// new epoch of every collection just before this one's conditional bump;
// beaten holds the Meta of todos right after that bump.
type beatenStore struct {
	*rewindable
	beaten *stores.Meta
}

// otherBumps is the other instance's bump.
func (b beatenStore) otherBumps(ctx context.Context) error {
	if err := b.rewindable.BumpEpochs(ctx); err != nil {
		return err
	}
	m, err := b.rewindable.Meta(ctx, "todos")
	*b.beaten = m
	return err
}

func (b beatenStore) BumpEpochs(ctx context.Context) error {
	if err := b.otherBumps(ctx); err != nil {
		return err
	}
	return b.rewindable.BumpEpochs(ctx)
}

func (b beatenStore) BumpEpochsFrom(ctx context.Context, from uint64) (bool, error) {
	if err := b.otherBumps(ctx); err != nil {
		return false, err
	}
	return b.rewindable.BumpEpochsFrom(ctx, from)
}

// TestWentBackOnceAcrossInstances: two instances given proof at once that
// the store went back start one new epoch between them, not one each, so
// that every reader is reset once.
func TestWentBackOnceAcrossInstances(t *testing.T) {
	ctx := context.Background()
	st := beatenStore{&rewindable{Store: memory.New()}, new(stores.Meta)}
	e := engineOn(t, st)
	write(t, e, "todos", 0, 8)
	c := pullTo(t, e, "todos", nil)
	before, err := st.Meta(ctx, "todos")
	if err != nil {
		t.Fatal(err)
	}
	st.rewind(3)
	wantReset(t, e, "todos", c, ResetHistoryLost)
	after, err := st.Meta(ctx, "todos")
	if err != nil {
		t.Fatal(err)
	}
	if b := stores.StoreEpochOf(*st.beaten); b == stores.StoreEpochOf(before) {
		t.Fatalf("the other instance's bump left the store-wide epoch at %d", b)
	}
	if got, want := stores.StoreEpochOf(after), stores.StoreEpochOf(*st.beaten); got != want {
		t.Fatalf("the store-wide epoch is %d, want %d (the other instance's bump alone)", got, want)
	}
	if n := e.StoreWentBack(); n != 0 {
		t.Fatalf("StoreWentBack = %d, want 0: the other instance started the epoch", n)
	}
}
