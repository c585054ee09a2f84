package engine

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/bolt"
	"github.com/convergo/convergo/stores/bolt/bolttest"
	"github.com/convergo/convergo/transport/proto"
)

// onCollectingBolt opens the bolt store at path on clk (its epoch bumps
// read it too) and a collecting engine on it, runs fn, and closes both:
// one run of the server.
func onCollectingBolt(t *testing.T, path string, clk *fakeClock, fn func(e *Engine, st *bolt.Store)) {
	t.Helper()
	st, err := bolt.Open(context.Background(), path, bolt.Options{Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	e, err := Open(Config{Store: st, Replica: "srv", Now: clk.now, PollInterval: -1,
		Rules:        []Rule{{Pattern: "notes", MaxOffline: time.Hour}},
		CollectGrace: -1, CollectEvery: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	fn(e, st)
}

// TestWriteHorizonFrozenAfterLoss: a store restored from a backup older
// than MaxOffline lost x, written after the backup and more than
// MaxOffline ago, which a replica online until the restore still holds.
// The restored store's leases are the backup's, all expired, so a run
// after the restore would raise W to now − MaxOffline, past x's stamps,
// and x's give-back would be refused collected: every replica holding it
// would drop it. After a loss W stays where it was published for
// MaxOffline, the time every replica whose lease was live in the lost
// history has to come back and give back what it holds; then it rises
// again. A rebuild is no loss: W rises at once.
func TestWriteHorizonFrozenAfterLoss(t *testing.T) {
	maxOff := time.Hour.Milliseconds()
	for _, b := range epochBumps {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			path, backup := filepath.Join(dir, "convergo.db"), filepath.Join(dir, "backup.db")
			clk := &fakeClock{ms: 1_700_000_000_000}
			var published Horizon
			onCollectingBolt(t, path, clk, func(e *Engine, _ *bolt.Store) {
				writeNotes(t, e, "a")
				published = collectOnce(t, e)
			})
			bolttest.CopyWithNote(t, path, backup)

			clk.ms += time.Minute.Milliseconds()
			var giveBack crdt.Change
			onCollectingBolt(t, path, clk, func(e *Engine, _ *bolt.Store) {
				// alice stays online, her lease live, until the restore.
				giveBack = aliceWritesX(t, e, clk, clk.ms)
			})

			clk.ms += time.Minute.Milliseconds()
			bolttest.CopyWithNote(t, backup, path)
			onCollectingBolt(t, path, clk, func(e *Engine, st *bolt.Store) {
				if err := b.bump(ctx, st); err != nil {
					t.Fatal(err)
				}
				_, m, err := e.view(ctx, "notes", true)
				if err != nil {
					t.Fatal(err)
				}
				lost := m.Lost > published.Epoch
				held := e.CollectTotals().Held
				reps, err := e.Collect(ctx)
				if err != nil || len(reps) != 1 {
					t.Fatalf("Collect = %v, %v; want one report", reps, err)
				}
				h := reps[0].Horizon
				if reps[0].Held != lost || e.CollectTotals().Held-held != map[bool]uint64{true: 1}[lost] {
					t.Errorf("the run after the bump: report held %v, totals held %d more; want %v (history lost: %v)", reps[0].Held, e.CollectTotals().Held-held, lost, lost)
				}
				if !lost {
					if want := clk.ms - maxOff; h.Wall != want {
						t.Fatalf("write horizon %d after a rebuild; want now − MaxOffline, %d: a rebuild loses nothing", h.Wall, want)
					}
					return
				}
				if h.Wall != published.Wall {
					t.Errorf("write horizon %d after the loss; want the %d published before it", h.Wall, published.Wall)
				}
				res, err := e.Apply(ctx, []crdt.Change{giveBack})
				if err != nil {
					t.Fatal(err)
				}
				if res[0].Err != nil {
					t.Fatalf("x given back after the loss: %v; want it taken", res[0].Err)
				}
				if _, err := e.GetRecord(ctx, "notes", "x"); err != nil {
					t.Fatalf("x after its give-back: %v", err)
				}

				// MaxOffline after the loss (stores.LostBefore), W
				// rises again.
				clk.ms = stores.LostBefore(m).UnixMilli() + maxOff
				if reps, err := e.Collect(ctx); err != nil || len(reps) != 1 || reps[0].Held || reps[0].Horizon.Wall != clk.ms-maxOff {
					t.Errorf("the run MaxOffline after the loss: %+v, %v; want one report, not held, its write horizon now − MaxOffline, %d", reps, err, clk.ms-maxOff)
				}
			})
		})
	}
}

// aliceWritesX has alice's laptop write x's owner at wall on e, pull the
// notes, and keep her lease live there through three collection runs
// half an hour apart. It returns the change, which she gives back after
// the store loses it.
func aliceWritesX(t *testing.T, e *Engine, clk *fakeClock, wall int64) crdt.Change {
	t.Helper()
	ctx := context.Background()
	alice := proto.ReplicaFor("alice", "laptop")
	v, _ := crdt.EncodeValue("mine")
	c := crdt.Change{Collection: "notes", Record: crdt.SetField("x", "owner", v, crdt.Stamp{Wall: wall, Replica: alice})}
	if res, err := e.Apply(ctx, []crdt.Change{c}); err != nil || res[0].Err != nil {
		t.Fatalf("x written: %+v, %v", res, err)
	}
	_, cur, err := pullNotes(t, e, Cursor{}, 10, nil)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		clk.ms += 30 * time.Minute.Milliseconds()
		if err := e.NoteLease(ctx, "notes", Lease{Replica: alice, Cursor: cur, Pending: -1}); err != nil {
			t.Fatal(err)
		}
		collectOnce(t, e)
	}
	return c
}
