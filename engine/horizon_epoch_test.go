package engine

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/memory"
	"github.com/convergo/convergo/transport/proto"
)

// epochBumps are the ways a collection's epoch changes under a published
// horizon: a rebuild or a reshard (BumpEpoch, Rebuilt), the store's own
// bump (HistoryLost), and `convergo store mark-restored` (BumpEpochs).
var epochBumps = []struct {
	name string
	bump func(context.Context, stores.Store) error
}{
	{"rebuilt", func(ctx context.Context, st stores.Store) error { return st.BumpEpoch(ctx, "notes", stores.Rebuilt) }},
	{"history lost", func(ctx context.Context, st stores.Store) error {
		return st.BumpEpoch(ctx, "notes", stores.HistoryLost)
	}},
	{"mark-restored", func(ctx context.Context, st stores.Store) error { return st.BumpEpochs(ctx) }},
}

// epochStores are the stores the tests of horizons across epochs run on.
var epochStores = []struct {
	name string
	open func(t *testing.T) stores.Store
}{
	{"memory", func(t *testing.T) stores.Store { return memory.New() }},
	{"bolt", func(t *testing.T) stores.Store { return openBolt(t, filepath.Join(t.TempDir(), "convergo.db")) }},
}

// eachEpochBump runs f on a new store of each kind for each bump.
func eachEpochBump(t *testing.T, f func(t *testing.T, st stores.Store, bump func(context.Context, stores.Store) error)) {
	for _, s := range epochStores {
		for _, b := range epochBumps {
			t.Run(s.name+"/"+b.name, func(t *testing.T) {
				st := s.open(t)
				t.Cleanup(func() { st.Close() })
				f(t, st, b.bump)
			})
		}
	}
}

// TestWriteHorizonAcrossEpochs: a write horizon is a wall time, not a
// position of one history, and what a purge collected under it stays
// collected after the collection's epoch changes. A record deleted
// before the horizon and collected must not come back through a change
// stamped before its delete (an edit made offline, or a client giving
// back its stamps of it before it drops it: docs/design.md, "Tombstone
// horizons"), though the first run of the new epoch sees a live lease
// whose pending floor is further back than the horizon already
// published.
func TestWriteHorizonAcrossEpochs(t *testing.T) {
	eachEpochBump(t, func(t *testing.T, st stores.Store, bump func(context.Context, stores.Store) error) {
		ctx := context.Background()
		e, clk := openCollecting(t, st)
		maxOff := time.Hour.Milliseconds()
		t0 := clk.ms
		writeNotes(t, e, "x", "kept")
		collectingSince(t, e)
		clk.ms = t0 + 50*time.Minute.Milliseconds()
		if err := e.Delete(ctx, "notes", "x"); err != nil {
			t.Fatal(err)
		}
		clk.ms = t0 + 2*maxOff
		before := collectOnce(t, e)
		if _, err := e.GetRecord(ctx, "notes", "x"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("x after the purge: %v; want it collected (ErrNotFound)", err)
		}
		edit := crdt.Stamp{Wall: t0 + 20*time.Minute.Milliseconds(), Replica: proto.ReplicaFor("alice", "dev")}
		push := func() error {
			v, _ := crdt.EncodeValue("b")
			res, err := e.Apply(ctx, []crdt.Change{{Collection: "notes", Record: crdt.SetField("x", "owner", v, edit)}})
			if err != nil {
				t.Fatal(err)
			}
			return res[0].Err
		}
		if err := push(); !errors.Is(err, ErrCollected) {
			t.Fatalf("an edit stamped before x's collected delete: %v; want ErrCollected", err)
		}

		if err := bump(ctx, st); err != nil {
			t.Fatal(err)
		}
		// A reader of the new epoch, from the start, with an edit
		// pending since just after x was written: a floor within
		// pendingFloorReach × MaxOffline, before the published W.
		floor := t0 + 10*time.Minute.Milliseconds()
		if err := e.NoteLease(ctx, "notes", Lease{Replica: proto.ReplicaFor("bob", "dev"), Cursor: Cursor{}, Pending: floor}); err != nil {
			t.Fatal(err)
		}
		clk.ms += time.Minute.Milliseconds()
		after := collectOnce(t, e)
		if _, m, err := e.view(ctx, "notes", true); err != nil || after.Epoch != m.Epoch || after.Epoch == before.Epoch {
			t.Fatalf("the run after the bump published epoch %d (before %d), collection at %+v, %v; want the new epoch", after.Epoch, before.Epoch, m, err)
		}
		if after.Wall < before.Wall {
			t.Errorf("write horizon %d after the epoch changed; want at least the %d published before, under which x was collected", after.Wall, before.Wall)
		}
		if err := push(); !errors.Is(err, ErrCollected) {
			t.Errorf("the edit stamped before x's collected delete, after the epoch changed: %v; want ErrCollected", err)
		}
		if r, err := e.GetRecord(ctx, "notes", "x"); !errors.Is(err, ErrNotFound) {
			t.Errorf("x, deleted and collected, after the edit: %+v, %v; want ErrNotFound", r, err)
		}
	})
}

// TestFloorAcrossEpochs: a live lease's pending floor holds the write
// horizon back whatever the epoch of its positions. A replica online
// with an edit pending (its pushes keep failing, say) holds W at the
// edit; when the collection's epoch changes before its next pull, the
// run after the change must not pass the edit (its positions are of the
// old history, its reader is reset at its next pull, but the edit is
// still to be pushed).
func TestFloorAcrossEpochs(t *testing.T) {
	eachEpochBump(t, func(t *testing.T, st stores.Store, bump func(context.Context, stores.Store) error) {
		ctx := context.Background()
		e, clk := openCollecting(t, st)
		maxOff := time.Hour.Milliseconds()
		t0 := clk.ms
		writeNotes(t, e, "n")
		// Past the store's first horizon, which holds W: the runs
		// below would pass the edit but for its floor.
		collectingSince(t, e)
		_, cur, err := pullNotes(t, e, Cursor{}, 10, nil)
		if err != nil {
			t.Fatal(err)
		}
		alice := proto.ReplicaFor("alice", "dev")
		edit := t0 + time.Minute.Milliseconds()
		clk.ms = t0 + maxOff + 30*time.Minute.Milliseconds()
		if err := e.NoteLease(ctx, "notes", Lease{Replica: alice, Cursor: cur, Pending: edit}); err != nil {
			t.Fatal(err)
		}
		if h := collectOnce(t, e); h.Wall > edit {
			t.Fatalf("write horizon %d passed the pending edit at %d before the epoch changed", h.Wall, edit)
		} else if h.Wall != edit {
			t.Fatalf("write horizon %d before the epoch changed; want it at the pending edit %d, which alone holds it", h.Wall, edit)
		}
		if err := bump(ctx, st); err != nil {
			t.Fatal(err)
		}
		clk.ms += time.Minute.Milliseconds()
		h := collectOnce(t, e)
		if h.Wall > edit {
			t.Errorf("write horizon %d after the epoch changed passed the edit at %d pending on a live lease", h.Wall, edit)
		}
		v, _ := crdt.EncodeValue("b")
		res, err := e.Apply(ctx, []crdt.Change{{Collection: "notes", Record: crdt.SetField("n", "title", v, crdt.Stamp{Wall: edit, Replica: alice})}})
		if err != nil {
			t.Fatal(err)
		}
		if res[0].Err != nil {
			t.Errorf("the pending edit pushed after the epoch changed: %v; want it taken", res[0].Err)
		}
	})
}

// purgeHook is a store whose first Purge of a collection other than the
// lease log calls before first: what happens between a collection run's
// publication (and grace) and its purge. With missesBump, that purge
// takes the horizon for one of the epoch the collection is in after
// before, as a store does whose check of the epoch cannot be one step
// with its removals for some bump (stores.Purger: a Redis Cluster's
// store-wide counter, say).
type purgeHook struct {
	stores.Store
	purger     stores.Purger
	before     func()
	missesBump bool
}

func (p *purgeHook) Purge(ctx context.Context, coll string, h stores.Horizon, s stores.PurgeScan) (stores.PurgeResult, error) {
	if f := p.before; f != nil && coll != proto.LeaseCollection {
		p.before = nil
		f()
		if p.missesBump {
			m, err := p.Store.Meta(ctx, coll)
			if err != nil {
				return stores.PurgeResult{}, err
			}
			h.Epoch = m.Epoch
		}
	}
	return p.purger.Purge(ctx, coll, h, s)
}

// TestPurgedUnderAnotherEpoch: the collection's epoch changes while a
// run purges (after its check that the epoch is still its horizon's:
// TestNoPurgeAfterEpochChanged), and a reader of the new epoch reads a record's tombstone that
// the purge, under the horizon of the old epoch, then removes with its
// entry: a store whose own check of the epoch missed the bump
// (purgeHook.missesBump; a store that sees it refuses:
// TestNoPurgeWhenEpochChangesAtPurge). The record the reader's cursor names at its position is neither
// there nor after it, and the only horizon published is of another epoch,
// whose positions cannot say the purge did not remove it
// (Engine.purgeable): the reader is not taken for proof that the store
// went back (which would start a new epoch of every collection), and
// reads on.
func TestPurgedUnderAnotherEpoch(t *testing.T) {
	eachEpochBump(t, func(t *testing.T, st stores.Store, bump func(context.Context, stores.Store) error) {
		ctx := context.Background()
		hook := &purgeHook{Store: st, purger: st.(stores.Purger), missesBump: true}
		e, clk := openCollecting(t, hook)
		writeNotes(t, e, "a")
		collectingSince(t, e)
		var cur Cursor
		hook.before = tombstoneHead(t, e, func() error { return bump(ctx, st) }, &cur)
		clk.ms += (2 * time.Hour).Milliseconds()
		h := collectOnce(t, e)
		if hook.before != nil {
			t.Fatal("the run did not purge")
		}
		_, m, err := e.view(ctx, "notes", true)
		if err != nil {
			t.Fatal(err)
		}
		if h.Epoch == m.Epoch || cur.Epoch() != m.Epoch {
			t.Fatalf("horizon of epoch %d, reader of %d, collection of %d; want the reader in the collection's, the horizon in another", h.Epoch, cur.Epoch(), m.Epoch)
		}
		if _, err := e.GetRecord(ctx, "notes", "x"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("x after the purge: %v; want it removed (ErrNotFound)", err)
		}
		readsOn(t, e, cur, func() { writeNotes(t, e, "b") }, "the reader whose record the purge under the old epoch's horizon removed")
	})
}

// TestRebuiltBehindHorizon: a reader whose lease expired, and whose
// cursor is before the read horizon of its epoch, holds a record that
// was deleted and collected since. When the log is then rebuilt (a new
// epoch, nothing lost), the reset it is owed is still lease_expired: a
// reader reset rebuilt reads the log again from the start and drops
// nothing it holds, so it would keep the record for ever, where
// lease_expired makes it reconcile and drop it (docs/protocol.md,
// section 8). A reader that was not before the horizon is reset rebuilt.
// Once a run of the new epoch has published, the horizon cannot say
// where the old epoch's stood, and every cursor of that epoch is reset
// lease_expired.
func TestRebuiltBehindHorizon(t *testing.T) {
	for _, s := range epochStores {
		t.Run(s.name, func(t *testing.T) {
			ctx := context.Background()
			st := s.open(t)
			t.Cleanup(func() { st.Close() })
			e, clk := openCollecting(t, st)
			writeNotes(t, e, "x", "y")
			collectingSince(t, e)
			_, behind, err := pullNotes(t, e, Cursor{}, 10, nil) // holds x
			if err != nil {
				t.Fatal(err)
			}
			if err := e.NoteLease(ctx, "notes", Lease{Replica: proto.ReplicaFor("alice", "dev"), Cursor: behind, Pending: -1}); err != nil {
				t.Fatal(err)
			}
			if err := e.Delete(ctx, "notes", "x"); err != nil {
				t.Fatal(err)
			}
			_, past, err := pullNotes(t, e, behind, 10, nil) // read x's delete
			if err != nil {
				t.Fatal(err)
			}
			clk.ms += (2 * time.Hour).Milliseconds() // alice's lease expired
			collectOnce(t, e)
			if _, err := e.GetRecord(ctx, "notes", "x"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("x after the purge: %v; want it collected (ErrNotFound)", err)
			}
			reason := func(c Cursor) ResetReason {
				t.Helper()
				_, err := e.Pull(ctx, "notes", c, PageLimit{})
				var re *ResetError
				if !errors.As(err, &re) {
					t.Fatalf("pull from %v: %v; want a reset", c, err)
				}
				return re.Reason
			}
			if r := reason(behind); r != ResetLeaseExpired {
				t.Fatalf("the reader before the horizon, in its epoch: reset %v; want %v", r, ResetLeaseExpired)
			}
			if err := st.BumpEpoch(ctx, "notes", stores.Rebuilt); err != nil {
				t.Fatal(err)
			}
			if r := reason(behind); r != ResetLeaseExpired {
				t.Errorf("the reader before the horizon, after a rebuild: reset %v; want %v", r, ResetLeaseExpired)
			}
			if r := reason(past); r != ResetRebuilt {
				t.Errorf("the reader at the horizon, after a rebuild: reset %v; want %v", r, ResetRebuilt)
			}
			clk.ms += time.Minute.Milliseconds()
			if h := collectOnce(t, e); h.Epoch == behind.Epoch() {
				t.Fatalf("the run after the rebuild published epoch %d, the reader's", h.Epoch)
			}
			if r := reason(behind); r != ResetLeaseExpired {
				t.Errorf("the reader before the horizon, after a run of the new epoch: reset %v; want %v", r, ResetLeaseExpired)
			}
		})
	}
}

// graceHook is a store that calls during once, after a horizon of notes
// is published and before a run reads it again at the end of its grace.
type graceHook struct {
	stores.Store
	mu        sync.Mutex
	published bool
	during    func()
}

func (g *graceHook) Apply(ctx context.Context, changes []crdt.Change) ([]stores.Result, error) {
	res, err := g.Store.Apply(ctx, changes)
	for _, c := range changes {
		if c.Collection == proto.HorizonCollection && c.Record.ID == "notes" {
			g.mu.Lock()
			g.published = true
			g.mu.Unlock()
		}
	}
	return res, err
}

func (g *graceHook) Get(ctx context.Context, coll, id string) (stores.Entry, error) {
	g.mu.Lock()
	var f func()
	if coll == proto.HorizonCollection && id == "notes" && g.published && g.during != nil {
		f, g.during = g.during, nil
	}
	g.mu.Unlock()
	if f != nil {
		f()
	}
	return g.Store.Get(ctx, coll, id)
}

func (g *graceHook) Purge(ctx context.Context, coll string, h stores.Horizon, s stores.PurgeScan) (stores.PurgeResult, error) {
	return g.Store.(stores.Purger).Purge(ctx, coll, h, s)
}

// TestNoPurgeAfterEpochChanged: the collection's epoch changes during a
// run's grace. The run does not purge under the horizon it published,
// whose positions are of the history that ended: a reader of the new
// epoch read there, and the next run's read horizon, of the new epoch,
// may be below what such a purge removed, so that a record it removed
// under the reader's position would be taken for proof that the store
// went back (which starts a new epoch of every collection).
func TestNoPurgeAfterEpochChanged(t *testing.T) {
	eachEpochBump(t, func(t *testing.T, st stores.Store, bump func(context.Context, stores.Store) error) {
		ctx := context.Background()
		hook := &graceHook{Store: st}
		e, clk := openCollecting(t, hook)
		// Past the store's first horizon, which holds W: the run below
		// would purge x but for the epoch's change.
		writeNotes(t, e, "a")
		collectingSince(t, e)
		hook.published = false
		var cur Cursor
		hook.during = tombstoneHead(t, e, func() error { return bump(ctx, st) }, &cur)
		clk.ms += (2 * time.Hour).Milliseconds()
		reps, err := e.Collect(ctx)
		if err != nil || len(reps) != 1 {
			t.Fatalf("Collect = %v, %v; want one report", reps, err)
		}
		if reps[0].Held {
			t.Fatalf("the run's write horizon was held (%+v): it would purge nothing, epoch or no epoch", reps[0])
		}
		if hook.during != nil {
			t.Fatal("the epoch did not change during the run's grace")
		}
		if _, err := e.GetRecord(ctx, "notes", "x"); err != nil {
			t.Errorf("x after a run whose epoch ended during its grace: %v; want it kept", err)
		}
		// A reader of the new epoch, at the start, holds its read
		// horizon there.
		if err := e.NoteLease(ctx, "notes", Lease{Replica: proto.ReplicaFor("bob", "dev"), Cursor: Cursor{}, Pending: -1}); err != nil {
			t.Fatal(err)
		}
		clk.ms += time.Minute.Milliseconds()
		collectOnce(t, e)
		readsOn(t, e, cur, func() {}, "the reader of the new epoch")
	})
}

// stepHook is a store whose purges of notes scan one log entry a call,
// and that calls after(n) when the nth call has returned.
type stepHook struct {
	stores.Store
	calls int
	after func(n int)
}

func (p *stepHook) Purge(ctx context.Context, coll string, h stores.Horizon, s stores.PurgeScan) (stores.PurgeResult, error) {
	if coll != "notes" {
		return p.Store.(stores.Purger).Purge(ctx, coll, h, s)
	}
	s.Limit = 1
	res, err := p.Store.(stores.Purger).Purge(ctx, coll, h, s)
	p.calls++
	p.after(p.calls)
	return res, err
}

// TestNoPurgeStepAfterEpochChanged: the collection's epoch changes
// between two steps of a run's purge (a purge of a large collection takes
// many). The steps after it do not purge under the horizon of the epoch
// that ended, for the same reason as TestNoPurgeAfterEpochChanged: the
// tombstones they would remove are entries of the new log.
func TestNoPurgeStepAfterEpochChanged(t *testing.T) {
	eachEpochBump(t, func(t *testing.T, st stores.Store, bump func(context.Context, stores.Store) error) {
		ctx := context.Background()
		hook := &stepHook{Store: st, after: func(int) {}}
		e, clk := openCollecting(t, hook)
		writeNotes(t, e, "a", "x", "y")
		// Past the store's first horizon, which holds W: the steps
		// below would purge x and y but for the epoch's change.
		collectingSince(t, e)
		hook.calls = 0
		for _, id := range []string{"x", "y"} {
			if err := e.Delete(ctx, "notes", id); err != nil {
				t.Fatal(err)
			}
		}
		bumped := false
		hook.after = func(n int) {
			if n == 1 { // the first step scanned a's entry
				if err := bump(ctx, st); err != nil {
					t.Fatal(err)
				}
				bumped = true
			}
		}
		clk.ms += (2 * time.Hour).Milliseconds()
		reps, err := e.Collect(ctx)
		if err != nil || len(reps) != 1 {
			t.Fatalf("Collect = %v, %v; want one report", reps, err)
		}
		if !bumped {
			t.Fatal("the purge ended before the epoch changed")
		}
		if reps[0].Held {
			t.Fatalf("the run's write horizon was held (%+v): it would purge nothing, epoch or no epoch", reps[0])
		}
		if hook.calls != 1 {
			t.Errorf("%d steps of the purge whose epoch changed after the first; want none after it", hook.calls)
		}
		for _, id := range []string{"x", "y"} {
			if _, err := e.GetRecord(ctx, "notes", id); err != nil {
				t.Errorf("%s, whose tombstone a step after the epoch changed reached: %v; want it kept", id, err)
			}
		}
	})
}

// tombstoneHead writes notes a and x and deletes x, so that x's tombstone
// is the head, and returns a hook that bumps the collection's epoch and
// pulls the notes from the start into *cur, a reader of the new epoch.
func tombstoneHead(t *testing.T, e *Engine, bump func() error, cur *Cursor) func() {
	t.Helper()
	writeNotes(t, e, "a", "x")
	if err := e.Delete(context.Background(), "notes", "x"); err != nil {
		t.Fatal(err)
	}
	return func() {
		if err := bump(); err != nil {
			t.Fatal(err)
		}
		var err error
		if _, *cur, err = pullNotes(t, e, Cursor{}, 10, nil); err != nil {
			t.Fatal(err)
		}
	}
}

// readsOn holds the reader at cur to a pull with no reset, after the
// writes of write, and the engine to no proof that the store went back.
func readsOn(t *testing.T, e *Engine, cur Cursor, write func(), who string) {
	t.Helper()
	went := e.StoreWentBack()
	write()
	if _, _, err := pullNotes(t, e, cur, 10, nil); err != nil {
		t.Errorf("%s: %v; want no reset", who, err)
	}
	if n := e.StoreWentBack(); n != went {
		t.Errorf("the store was taken to have gone back %d times; want none", n-went)
	}
}

// TestNoPurgeWhenEpochChangesAtPurge: the collection's epoch changes
// after a run's last check that it is still its horizon's and before the
// store purges (the engine cannot read the epoch and purge in one step:
// the store checks the epoch the horizon is of, stores.Horizon.Epoch,
// atomically with its removals). The store refuses, and x's tombstone,
// which a reader of the new epoch has not read, is kept: removed, its
// entry would be a position of the new log below the old horizon. The run
// ends without an error, as when it sees the change itself, and the next
// publishes a horizon of the new epoch.
func TestNoPurgeWhenEpochChangesAtPurge(t *testing.T) {
	eachEpochBump(t, func(t *testing.T, st stores.Store, bump func(context.Context, stores.Store) error) {
		ctx := context.Background()
		hook := &purgeHook{Store: st, purger: st.(stores.Purger)}
		e, clk := openCollecting(t, hook)
		writeNotes(t, e, "a")
		collectingSince(t, e)
		writeNotes(t, e, "x")
		if err := e.Delete(ctx, "notes", "x"); err != nil {
			t.Fatal(err)
		}
		hook.before = func() {
			if err := bump(ctx, st); err != nil {
				t.Fatal(err)
			}
		}
		clk.ms += (2 * time.Hour).Milliseconds()
		reps, err := e.Collect(ctx)
		if err != nil || len(reps) != 1 {
			t.Fatalf("Collect = %v, %v; want one report and no error", reps, err)
		}
		if hook.before != nil {
			t.Fatal("the run did not purge")
		}
		if reps[0].Held {
			t.Fatalf("the run's write horizon was held (%+v): it would purge nothing, epoch or no epoch", reps[0])
		}
		if reps[0].Records != 0 {
			t.Errorf("the run purged %d records under the horizon of the epoch that ended; want none", reps[0].Records)
		}
		if _, err := e.GetRecord(ctx, "notes", "x"); err != nil {
			t.Errorf("x after a run whose epoch changed as it purged: %v; want its tombstone kept", err)
		}
		if got := e.CollectTotals().Failed; got != 0 {
			t.Errorf("%d failed runs; want none", got)
		}
		_, m, err := e.view(ctx, "notes", true)
		if err != nil {
			t.Fatal(err)
		}
		clk.ms += time.Minute.Milliseconds()
		if h := collectOnce(t, e); h.Epoch != m.Epoch {
			t.Errorf("the run after the change published epoch %d; want the collection's, %d", h.Epoch, m.Epoch)
		}
	})
}
