package engine

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
)

// TestUntranslatableGiveBackOfACollectedRecord: a client of an older
// schema version gives back its stamps of a record the full pull after
// lease_expired did not deliver one change per stamp (docs/protocol.md,
// "Tombstone collection", step 2), and drops the record when every one
// comes back collected. A part of a merge alone cannot be translated up:
// refused untranslatable, the give-back would keep the record (a stamp
// refused with another code) on that client for ever, deleted everywhere
// else. A change with a stamp before the write horizon that the stored
// record does not hold is refused collected, translatable or not; a
// fresh one stays untranslatable, and so does an old one the record holds.
func TestUntranslatableGiveBackOfACollectedRecord(t *testing.T) {
	ctx := context.Background()
	e, st, clk, _ := openMigrating(t, `{"op": "merge", "from": ["street", "city"], "to": "address", "sep": ", "}`)
	s1 := crdt.Stamp{Wall: clk.ms, Replica: "v1"}
	s2 := crdt.Stamp{Wall: clk.ms + 10, Replica: "v1"}
	// Written before the migration, street and city at different times.
	for _, id := range []string{"gone", "kept"} {
		if _, err := st.Apply(ctx, []crdt.Change{
			{Collection: "notes", Record: crdt.SetField(id, "street", value(t, "Main St"), s1)},
			{Collection: "notes", Record: crdt.SetField(id, "city", value(t, "Springfield"), s2)},
		}); err != nil {
			t.Fatal(err)
		}
	}
	clk.ms += 1000
	del, err := e.Now("notes")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Apply(ctx, []crdt.Change{{Collection: "notes", Record: crdt.DeleteRecord("gone", del)}}); err != nil {
		t.Fatal(err)
	}
	collectingSince(t, e)
	clk.ms += 2 * time.Hour.Milliseconds()
	if h := collectOnce(t, e); h.Wall <= del.Wall {
		t.Fatalf("write horizon %d, want it past the delete at %d", h.Wall, del.Wall)
	}
	if got, err := e.GetRecord(ctx, "notes", "gone"); err == nil && !got.Record.Deleted.IsZero() {
		t.Fatalf("the deleted record is still stored: %+v", got.Record)
	}
	now, err := e.Now("notes")
	if err != nil {
		t.Fatal(err)
	}
	v1 := WithVersions(map[string]int{"notes": 1})
	for _, tc := range []struct {
		name   string
		change crdt.Record
		want   error
	}{
		{"a part of a collected record", crdt.SetField("gone", "street", value(t, "Main St"), s1), ErrCollected},
		{"the other part", crdt.SetField("gone", "city", value(t, "Springfield"), s2), ErrCollected},
		{"a part of a record held, at its stamp", crdt.SetField("kept", "street", value(t, "Main St"), s1), ErrUntranslatable},
		{"a fresh part alone", crdt.SetField("kept", "street", value(t, "Elm St"), now), ErrUntranslatable},
	} {
		res, err := e.Apply(ctx, []crdt.Change{{Collection: "notes", Record: tc.change}}, v1)
		if err != nil {
			t.Fatal(err)
		}
		if res[0].Status != StatusRefused || !errors.Is(res[0].Err, tc.want) {
			t.Errorf("%s: %v (%v), want refused %v", tc.name, res[0].Status, res[0].Err, tc.want)
		}
	}
}
