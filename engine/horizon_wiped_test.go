package engine

import (
	"context"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores/memory"
)

// TestWriteHorizonHeldInAStoreMadeAnew: a store wiped (a memory store
// restarted, a Redis without persistence restarted, a bolt file lost)
// comes back with a new identity and nothing else: no records, no leases,
// no published horizon, epochs at 0. Every reader is reset history_lost
// and gives back what it holds, x among it, written more than MaxOffline
// ago by alice, who stayed online until the wipe. The first run in the
// new store, before alice is back, must not raise W past x's stamps: x
// would be refused collected, and every replica holding it would drop
// it, so lost everywhere, as after a restore (TestWriteHorizonFrozenAfterLoss).
func TestWriteHorizonHeldInAStoreMadeAnew(t *testing.T) {
	ctx := context.Background()
	maxOff := time.Hour.Milliseconds()
	clk := &fakeClock{ms: 1_700_000_000_000}
	open := func() *Engine {
		st := memory.New()
		t.Cleanup(func() { st.Close() })
		e, err := Open(Config{Store: st, Replica: "srv", Now: clk.now, PollInterval: -1,
			Rules:        []Rule{{Pattern: "notes", MaxOffline: time.Hour}},
			CollectGrace: -1, CollectEvery: -1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.Close() })
		return e
	}

	// alice stays online, her lease live, past MaxOffline.
	x := clk.ms
	giveBack := aliceWritesX(t, open(), clk, x)

	// The store is wiped. bob writes first, and a run publishes a
	// horizon before alice is back.
	clk.ms += time.Minute.Milliseconds()
	e := open()
	writeNotes(t, e, "b")
	if h := collectOnce(t, e); h.Wall > x {
		t.Errorf("the first run in the store made anew published W %d, past x's stamp %d (now − MaxOffline is %d)", h.Wall, x, clk.ms-maxOff)
	}
	res, err := e.Apply(ctx, []crdt.Change{giveBack})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Err != nil {
		t.Fatalf("x given back after the wipe: %v; want it taken", res[0].Err)
	}

	// MaxOffline after the store's first horizon, W rises again.
	clk.ms += maxOff
	if h := collectOnce(t, e); h.Wall != clk.ms-maxOff {
		t.Errorf("the run MaxOffline after the first: W %d, want now − MaxOffline, %d", h.Wall, clk.ms-maxOff)
	}
}

// collectingSince makes e's store one that has published a horizon of
// notes (written) at the clock's time, with W at 0: a run MaxOffline
// later raises W (begunRecently). The scenes that purge after their clock
// went past MaxOffline start with it.
func collectingSince(t *testing.T, e *Engine) {
	t.Helper()
	if h := collectOnce(t, e); h.Wall != 0 {
		t.Fatalf("the first horizon of notes in the store has W %d; want 0, held", h.Wall)
	}
}
