package engine

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/memory"
	"github.com/convergo/convergo/transport/proto"
)

// openInstancePair opens two instances collecting "notes" (MaxOffline an
// hour, no grace) on one memory store, on one fake clock: fast runs ahead
// of slow by ahead, within MaxClockSkew, so that neither is off.
func openInstancePair(t *testing.T, st stores.Store, ahead time.Duration) (slow, fast *Engine, clk *fakeClock) {
	t.Helper()
	clk = &fakeClock{ms: 1_700_000_000_000}
	open := func(replica string, now func() time.Time) *Engine {
		e, err := Open(Config{Store: st, Replica: replica, Now: now, PollInterval: -1,
			Rules:        []Rule{{Pattern: "notes", MaxOffline: time.Hour}},
			CollectGrace: -1, CollectEvery: -1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.Close() })
		if ahead > e.MaxClockSkew() {
			t.Fatalf("instances %v apart: beyond MaxClockSkew %v", ahead, e.MaxClockSkew())
		}
		return e
	}
	slow = open("srv-slow", clk.now)
	fast = open("srv-fast", func() time.Time { return clk.now().Add(ahead) })
	return slow, fast, clk
}

// A lease written on an instance whose clock runs behind another's
// (within MaxClockSkew, neither off) comes after the lease that one wrote
// before. Stamped from its own clock alone, a lease the reader presented
// to the slower instance less than the skew after it presented one to the
// faster lost to the older lease, silently (NoteLease returned nil and
// cached it as written, so neither instance wrote it again for up to
// MaxOffline/20): the collection job computed the horizons from what the
// reader no longer holds to.
func TestLeaseComesAfterTheOneAnotherInstanceWrote(t *testing.T) {
	ctx := context.Background()
	const ahead = 2 * time.Minute
	maxOff := time.Hour.Milliseconds()
	reader := proto.ReplicaFor("alice", "dev")
	// readAllThrough has the reader read the notes through e and present
	// its lease there; it returns the reader's cursor.
	readAllThrough := func(t *testing.T, e *Engine, reader string) Cursor {
		t.Helper()
		_, end, err := pullNotes(t, e, Cursor{}, 10, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.NoteLease(ctx, "notes", Lease{Replica: reader, Cursor: end, Pending: -1}); err != nil {
			t.Fatal(err)
		}
		return end
	}

	t.Run("a reader that starts over keeps its read horizon", func(t *testing.T) {
		slow, fast, clk := openInstancePair(t, newMemory(t), ahead)
		writeNotes(t, slow, "a", "b", "c")
		readAllThrough(t, fast, reader)
		// Thirty seconds later the reader starts over (its local data
		// cleared, say) and reads one page through the slower instance.
		clk.ms += 30 * time.Second.Milliseconds()
		p, err := slow.Pull(ctx, "notes", Cursor{}, PageLimit{Records: 1})
		if err != nil {
			t.Fatal(err)
		}
		if err := slow.NoteLease(ctx, "notes", Lease{Replica: reader, Cursor: Cursor{}, Pending: -1}); err != nil {
			t.Fatal(err)
		}
		if h := collectOnce(t, slow); h.Read[0] != 0 {
			t.Errorf("read horizon %v; want [0], held by the lease of the reader that started over", h.Read)
		}
		next, err := ParseCursor(p.Next.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := pullNotes(t, slow, next, 10, nil); err != nil {
			t.Fatalf("the reader's next pull, its lease live: %v; want no reset", err)
		}
	})

	t.Run("a pending floor the reader announces holds the write horizon", func(t *testing.T) {
		slow, fast, clk := openInstancePair(t, newMemory(t), ahead)
		writeNotes(t, slow, "n")
		// The store's first horizon, more than MaxOffline ago: the write
		// horizon is no longer held at it (begunRecently).
		collectOnce(t, slow)
		clk.ms += 2 * maxOff
		end := readAllThrough(t, fast, reader)
		// Thirty seconds later it announces, through the slower instance,
		// an edit pending from before MaxOffline (within the reach).
		clk.ms += 30 * time.Second.Milliseconds()
		edit := clk.ms - maxOff - 30*time.Minute.Milliseconds()
		if err := slow.NoteLease(ctx, "notes", Lease{Replica: reader, Cursor: end, Pending: edit}); err != nil {
			t.Fatal(err)
		}
		if h := collectOnce(t, slow); h.Wall > edit {
			t.Errorf("write horizon %d, past the pending edit at %d the reader's live lease announced", h.Wall, edit)
		}
		res, err := slow.Apply(ctx, []crdt.Change{{Collection: "notes",
			Record: crdt.SetField("n", "title", value(t, "offline"), crdt.Stamp{Wall: edit, Replica: reader})}})
		if err != nil {
			t.Fatal(err)
		}
		if errors.Is(res[0].Err, ErrCollected) {
			t.Fatalf("the pending edit pushed: %v; want it taken (its floor was announced)", res[0].Err)
		}
	})
}

// A lease write reads no record unless it lost: leases are written at
// every first sight of a reader on an instance, and at every cursor that
// goes back.
func TestLeaseWriteReadsOnlyWhenItLost(t *testing.T) {
	ctx := context.Background()
	st := &countingStore{Store: newMemory(t)}
	slow, fast, clk := openInstancePair(t, st, 2*time.Minute)
	writeNotes(t, slow, "a", "b")
	_, end, err := pullNotes(t, fast, Cursor{}, 10, nil)
	if err != nil {
		t.Fatal(err)
	}
	reader := proto.ReplicaFor("alice", "dev")
	note := func(e *Engine, cur Cursor) int {
		t.Helper()
		before := st.gets
		if err := e.NoteLease(ctx, "notes", Lease{Replica: reader, Cursor: cur, Pending: -1}); err != nil {
			t.Fatal(err)
		}
		return st.gets - before
	}
	if n := note(slow, end); n != 0 {
		t.Errorf("a lease written first: %d reads, want 0", n)
	}
	if n := note(fast, end); n != 0 {
		t.Errorf("a lease written over one stamped before: %d reads, want 0", n)
	}
	clk.ms += 30 * time.Second.Milliseconds()
	first, err := slow.Pull(ctx, "notes", Cursor{}, PageLimit{Records: 1})
	if err != nil {
		t.Fatal(err)
	}
	next, err := ParseCursor(first.Next.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if n := note(slow, next); n != 1 {
		t.Errorf("a lease gone back, over one a faster clock stamped: %d reads, want 1 (the record, after the write lost)", n)
	}
}

func newMemory(t *testing.T) *memory.Store {
	st := memory.New()
	t.Cleanup(func() { st.Close() })
	return st
}

// A horizon the slower instance publishes less than the skew after the
// faster one's loses to it in the store, and that is safe: the published
// horizons do not go below what the faster run purged under, and the
// slower run purges nothing under a horizon the store does not hold
// (docs/design.md, "The job").
func TestHorizonLostToAFasterInstanceOnlyDelays(t *testing.T) {
	ctx := context.Background()
	slow, fast, clk := openInstancePair(t, newMemory(t), 2*time.Minute)
	writeNotes(t, slow, "a", "b")
	writeNotes(t, fast, "c")
	clk.ms += 2 * time.Hour.Milliseconds() // past the first horizon's hold
	collectOnce(t, fast)
	clk.ms += 2 * time.Hour.Milliseconds()
	hf := collectOnce(t, fast)
	writeNotes(t, slow, "d")
	clk.ms += 30 * time.Second.Milliseconds()
	reps, err := slow.Collect(ctx)
	if err != nil || len(reps) != 1 {
		t.Fatalf("Collect on the slower instance = %v, %v; want one report", reps, err)
	}
	hs := reps[0]
	got, ok, err := slow.HorizonOf(ctx, "notes", true)
	if err != nil || !ok {
		t.Fatalf("published after both runs: %v %v", ok, err)
	}
	if got.Read[0] < hf.Read[0] || got.Wall < hf.Wall {
		t.Fatalf("published after both runs %v/%d, below the %v/%d the faster run purged under", got.Read, got.Wall, hf.Read, hf.Wall)
	}
	if hs.Horizon.ID != got.ID && (!hs.Skipped || hs.Records+hs.Deletes+hs.Fields > 0) {
		t.Fatalf("the slower run, its publication not the store's: %+v; want it skipped, nothing purged", hs)
	}
}
