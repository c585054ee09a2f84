package engine

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores/memory"
	"github.com/convergo/convergo/transport/proto"
)

// TestStaleFloorDoesNotStopCollection: a reader that keeps its lease alive
// while announcing a pending floor of 1 does not hold the write horizon
// back for ever. Past pendingFloorReach × MaxOffline behind the job's now
// its floor is not honoured: the write horizon moves on with time and a
// tombstone deleted long ago is collected.
func TestStaleFloorDoesNotStopCollection(t *testing.T) {
	ctx := context.Background()
	e, clk := openCollectingMemory(t)
	maxOff := time.Hour.Milliseconds()
	writeNotes(t, e, "gone")
	del, err := e.Now("notes")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Apply(ctx, []crdt.Change{{Collection: "notes", Record: crdt.DeleteRecord("gone", del)}}); err != nil {
		t.Fatal(err)
	}
	_, cur, err := pullNotes(t, e, Cursor{}, 10, nil)
	if err != nil {
		t.Fatal(err)
	}
	greedy := proto.ReplicaFor("mallory", "dev")
	var h Horizon
	// A week of renewals every half hour, with a collection run after each.
	for range 7 * 48 {
		clk.ms += 30 * time.Minute.Milliseconds()
		if err := e.NoteLease(ctx, "notes", Lease{Replica: greedy, Cursor: cur, Pending: 1}); err != nil {
			t.Fatal(err)
		}
		h = collectOnce(t, e)
	}
	if bound := clk.ms - pendingFloorReach*maxOff; h.Wall < bound {
		t.Fatalf("write horizon %d after a week of a floor of 1; want at least %d (now − %d × MaxOffline)", h.Wall, bound, pendingFloorReach)
	}
	if _, err := e.GetRecord(ctx, "notes", "gone"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the record deleted a week ago: %v; want it collected (ErrNotFound)", err)
	}
}

// TestFloorOfReturningReplicaHolds: a replica away for less than
// MaxOffline that comes back with an edit stamped just after it left
// holds the write horizon at that edit while it stays pending, for
// MaxOffline more after it came back; its push is taken. Only an edit
// left pending longer than that is refused collected.
func TestFloorOfReturningReplicaHolds(t *testing.T) {
	ctx := context.Background()
	e, clk := openCollectingMemory(t)
	maxOff := time.Hour.Milliseconds()
	writeNotes(t, e, "n")
	_, cur, err := pullNotes(t, e, Cursor{}, 10, nil)
	if err != nil {
		t.Fatal(err)
	}
	back := proto.ReplicaFor("alice", "dev")
	if err := e.NoteLease(ctx, "notes", Lease{Replica: back, Cursor: cur, Pending: -1}); err != nil {
		t.Fatal(err)
	}
	left := clk.ms
	edit := left + time.Minute.Milliseconds() // stamped just after it left
	clk.ms = left + maxOff - time.Minute.Milliseconds()
	if err := e.NoteLease(ctx, "notes", Lease{Replica: back, Cursor: cur, Pending: edit}); err != nil {
		t.Fatal(err)
	}
	// Its pushes keep failing (say) for most of MaxOffline more, while
	// its lease is renewed.
	for clk.ms < left+pendingFloorReach*maxOff {
		if h := collectOnce(t, e); h.Wall > edit {
			t.Fatalf("at %d: write horizon %d passed the pending edit at %d", clk.ms-left, h.Wall, edit)
		}
		clk.ms += 10 * time.Minute.Milliseconds()
		if err := e.NoteLease(ctx, "notes", Lease{Replica: back, Cursor: cur, Pending: edit}); err != nil {
			t.Fatal(err)
		}
	}
	v, _ := crdt.EncodeValue("b")
	set := func(field string) error {
		res, err := e.Apply(ctx, []crdt.Change{{Collection: "notes", Record: crdt.SetField("n", field, v, crdt.Stamp{Wall: edit, Replica: back})}})
		if err != nil {
			return err
		}
		return res[0].Err
	}
	if err := set("owner"); err != nil {
		t.Fatalf("the edit pushed within MaxOffline of its return: %v; want it taken", err)
	}
	// Left pending beyond the reach, an edit (of a field the server does
	// not hold at that stamp: it took the first) is refused collected.
	clk.ms += pendingFloorReach * maxOff
	if err := e.NoteLease(ctx, "notes", Lease{Replica: back, Cursor: cur, Pending: edit}); err != nil {
		t.Fatal(err)
	}
	if h := collectOnce(t, e); h.Wall <= edit {
		t.Fatalf("write horizon %d, still at or before the edit at %d left pending %d ms", h.Wall, edit, clk.ms-edit)
	}
	if err := set("title"); !errors.Is(err, ErrCollected) {
		t.Fatalf("the edit after the write horizon passed it: %v; want ErrCollected", err)
	}
}

// openCollectingMemory is openCollecting on a new memory store, closed
// when the test ends.
func openCollectingMemory(t *testing.T) (*Engine, *fakeClock) {
	t.Helper()
	st := memory.New()
	t.Cleanup(func() { st.Close() })
	return openCollecting(t, st)
}
