package engine

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/transport/proto"
)

// TestOldStampsTheServerHolds: a change with a stamp before the write
// horizon is refused collected because a tombstone that would have hidden
// it may be gone. A stamp the server holds a live value at or after
// changes nothing whatever was collected, so it does not refuse the change
// that carries it: a record given back after the store lost its later
// edits (a heal) keeps its fields written long ago next to those edits.
// A stamp only a tombstone covers, or none, is still refused, and so is an
// old delete newer than the one the record holds.
func TestOldStampsTheServerHolds(t *testing.T) {
	ctx := context.Background()
	e, clk := openCollectingMemory(t)
	writeNotes(t, e, "n", "u")
	collectingSince(t, e)
	unset, err := e.Now("notes")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Apply(ctx, []crdt.Change{{Collection: "notes", Record: crdt.UnsetField("u", "owner", unset)}}); err != nil {
		t.Fatal(err)
	}
	held, err := e.GetRecord(ctx, "notes", "n")
	if err != nil {
		t.Fatal(err)
	}
	old := held.Record.Fields["owner"].Stamp
	clk.ms += 2 * time.Hour.Milliseconds()
	if h := collectOnce(t, e); h.Wall <= unset.Wall {
		t.Fatalf("write horizon %d, want it past the writes at %d", h.Wall, unset.Wall)
	}
	now, err := e.Now("notes")
	if err != nil {
		t.Fatal(err)
	}
	given := held.Record.Clone() // as the server sent it, and an edit it lost since
	given.Fields["title"] = crdt.Field{Stamp: now, Value: value(t, "later")}
	older := crdt.SetField("n", "owner", value(t, "zz"), crdt.Stamp{Wall: old.Wall - 1, Replica: old.Replica})
	for _, tc := range []struct {
		name   string
		change crdt.Record
		want   Status
	}{
		{"a record given back with an edit", given, StatusApplied},
		{"an older write of a field held", older, StatusSuperseded},
		{"an old delete of a record held without one", crdt.DeleteRecord("n", crdt.Stamp{Wall: old.Wall - 1, Replica: old.Replica}), StatusRefused},
		{"a field only a tombstone covers", crdt.SetField("u", "owner", value(t, "b"), crdt.Stamp{Wall: unset.Wall - 1, Replica: unset.Replica}), StatusRefused},
		{"a record the server does not hold", crdt.SetField("gone", "owner", value(t, "b"), old), StatusRefused},
		{"a field held, and one not", func() crdt.Record {
			r := held.Record.Clone()
			r.Fields["extra"] = crdt.Field{Stamp: old, Value: value(t, "x")}
			return r
		}(), StatusRefused},
	} {
		res, err := e.Apply(ctx, []crdt.Change{{Collection: "notes", Record: tc.change}})
		if err != nil {
			t.Fatal(err)
		}
		if res[0].Status != tc.want {
			t.Errorf("%s: %v (%v), want %v", tc.name, res[0].Status, res[0].Err, tc.want)
		}
		if tc.want == StatusRefused && !errors.Is(res[0].Err, ErrCollected) {
			t.Errorf("%s: %v, want ErrCollected", tc.name, res[0].Err)
		}
	}
	got, err := e.GetRecord(ctx, "notes", "n")
	if err != nil {
		t.Fatal(err)
	}
	if f := got.Record.Fields["title"]; f.Stamp != now || f.Value == nil {
		t.Errorf("the edit given back is %v, want it held at %v", f, now)
	}
}

// TestOldStampsJudgedOnTheRecordAsStored: a stamp before the write
// horizon is let through only when the store, as it holds the record,
// takes nothing of it, so that no purge can ever make it count. A record
// resolved to the current version may show a value whose stamp a
// tombstone lends it: a merge of a street and a city unset since stamps
// the address with the unset. Once the unset is collected the address
// falls back to the street's stamp, and an older write of the address
// the store took in the meantime would win over what every replica
// holds.
func TestOldStampsJudgedOnTheRecordAsStored(t *testing.T) {
	ctx := context.Background()
	e, st, clk, _ := openMigrating(t, `{"op": "merge", "from": ["street", "city"], "to": "address", "sep": ", "}`)
	// A reader has read the record before: it holds the read horizon
	// there, so the city's unset stays while the write horizon passes it.
	writeNotes(t, e, "m")
	collectingSince(t, e)
	_, cur, err := pullNotes(t, e, Cursor{}, 10, nil)
	if err != nil {
		t.Fatal(err)
	}
	reader := proto.ReplicaFor("alice", "dev")
	if err := e.NoteLease(ctx, "notes", Lease{Replica: reader, Cursor: cur, Pending: -1}); err != nil {
		t.Fatal(err)
	}
	street := crdt.Stamp{Wall: clk.ms, Replica: "old"}
	city := crdt.Stamp{Wall: clk.ms + 10, Replica: "old"}
	// Written before the migration, as version 1 shaped it.
	if _, err := st.Apply(ctx, []crdt.Change{{Collection: "notes", Record: crdt.Record{ID: "n", Fields: map[string]crdt.Field{
		"street": {Stamp: street, Value: value(t, "Main")},
		"city":   {Stamp: city},
	}}}}); err != nil {
		t.Fatal(err)
	}
	for range 4 { // renewed while the hours go by
		clk.ms += 30 * time.Minute.Milliseconds()
		if err := e.NoteLease(ctx, "notes", Lease{Replica: reader, Cursor: cur, Pending: -1}); err != nil {
			t.Fatal(err)
		}
	}
	if h := collectOnce(t, e); h.Wall <= city.Wall {
		t.Fatalf("write horizon %d, want it past the unset at %d", h.Wall, city.Wall)
	}
	before, err := e.GetRecord(ctx, "notes", "n")
	if err != nil {
		t.Fatal(err)
	}
	older := crdt.SetField("n", "address", value(t, "Elm"), crdt.Stamp{Wall: street.Wall + 5, Replica: "late"})
	res, err := e.Apply(ctx, []crdt.Change{{Collection: "notes", Record: older}})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Status == StatusApplied {
		t.Errorf("an address older than the one resolved, which the store does not hold: applied; want it refused collected")
	}
	// The reader catches up; the unset is collected.
	if _, cur, err = pullNotes(t, e, cur, 10, nil); err != nil {
		t.Fatal(err)
	}
	clk.ms += 10 * time.Minute.Milliseconds() // past MaxOffline/20: the lease is written again
	if err := e.NoteLease(ctx, "notes", Lease{Replica: reader, Cursor: cur, Pending: -1}); err != nil {
		t.Fatal(err)
	}
	collectOnce(t, e)
	after, err := e.GetRecord(ctx, "notes", "n")
	if err != nil {
		t.Fatal(err)
	}
	if b, a := before.Record.Values()["address"], after.Record.Values()["address"]; string(a) != string(b) {
		t.Errorf("the address after the unset was collected is %x, before it %x: an old write came back", a, b)
	}
}

// TestOldStampOfAnInvalidRecord: a change with a stamp before the write
// horizon and an id no store takes is refused alone; the call goes on.
func TestOldStampOfAnInvalidRecord(t *testing.T) {
	ctx := context.Background()
	e, clk := openCollectingMemory(t)
	writeNotes(t, e, "n")
	// Past the store's first horizon, which holds W: old is before the
	// write horizon of the run below.
	collectingSince(t, e)
	old := crdt.Stamp{Wall: clk.ms, Replica: "c1"}
	clk.ms += 2 * time.Hour.Milliseconds()
	collectOnce(t, e)
	now, err := e.Now("notes")
	if err != nil {
		t.Fatal(err)
	}
	res, err := e.Apply(ctx, []crdt.Change{
		{Collection: "notes", Record: crdt.SetField("bad\x01id", "owner", value(t, "b"), old)},
		{Collection: "notes", Record: crdt.SetField("n", "title", value(t, "t"), now)},
	})
	if err != nil {
		t.Fatalf("Apply: %v; want the invalid change refused alone", err)
	}
	if res[0].Status != StatusRefused || res[1].Status != StatusApplied {
		t.Errorf("results %+v; want refused, applied", res)
	}
	if !errors.Is(res[0].Err, ErrCollected) {
		t.Errorf("the invalid change stamped before the write horizon: %v; want ErrCollected", res[0].Err)
	}
}

// TestOldUnsetAtTheStampOfAValueHeld: at equal stamps an unset wins over
// a value (crdt.Field), so an unset before the write horizon at the stamp
// of the value held is not outweighed by it: it is refused collected and
// the value stays.
func TestOldUnsetAtTheStampOfAValueHeld(t *testing.T) {
	ctx := context.Background()
	e, clk := openCollectingMemory(t)
	writeNotes(t, e, "n")
	collectingSince(t, e)
	held, err := e.GetRecord(ctx, "notes", "n")
	if err != nil {
		t.Fatal(err)
	}
	s := held.Record.Fields["owner"].Stamp
	clk.ms += 2 * time.Hour.Milliseconds()
	collectOnce(t, e)
	res, err := e.Apply(ctx, []crdt.Change{{Collection: "notes", Record: crdt.UnsetField("n", "owner", s)}})
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(res[0].Err, ErrCollected) {
		t.Errorf("an unset at the stamp of the value held: %v (%v); want ErrCollected", res[0].Status, res[0].Err)
	}
	got, err := e.GetRecord(ctx, "notes", "n")
	if err != nil {
		t.Fatal(err)
	}
	if got.Record.Values()["owner"] == nil {
		t.Errorf("the value held was unset at its own stamp, before the write horizon")
	}
}

// TestOldStampsHeldApplyInCallOrder: a change let through because the
// server holds its old stamps (heldLive) is judged after the rest of the
// call, but applies in its place in the call: before a later change of
// the same record in it.
func TestOldStampsHeldApplyInCallOrder(t *testing.T) {
	ctx := context.Background()
	e, clk := openCollectingMemory(t)
	writeNotes(t, e, "n")
	collectingSince(t, e)
	held, err := e.GetRecord(ctx, "notes", "n")
	if err != nil {
		t.Fatal(err)
	}
	clk.ms += 2 * time.Hour.Milliseconds()
	if h, old := collectOnce(t, e), held.Record.Fields["owner"].Stamp; h.Wall <= old.Wall {
		t.Fatalf("write horizon %d, want it past the write at %d", h.Wall, old.Wall)
	}
	first, err := e.Now("notes")
	if err != nil {
		t.Fatal(err)
	}
	second, err := e.Now("notes")
	if err != nil {
		t.Fatal(err)
	}
	given := held.Record.Clone() // as the server sent it, and an edit
	given.Fields["title"] = crdt.Field{Stamp: first, Value: value(t, "first")}
	res, err := e.Apply(ctx, []crdt.Change{
		{Collection: "notes", Record: given},
		{Collection: "notes", Record: crdt.SetField("n", "title", value(t, "second"), second)},
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if r.Status != StatusApplied {
			t.Errorf("change %d: %v (%v), want applied in call order", i, r.Status, r.Err)
		}
	}
	got, err := e.GetRecord(ctx, "notes", "n")
	if err != nil {
		t.Fatal(err)
	}
	if f := got.Record.Fields["title"]; f.Stamp != second {
		t.Errorf("title at %v, want the later change's %v", f.Stamp, second)
	}
}
