package engine

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores/memory"
)

// TestOldStampsTheServerHolds: a change with a stamp before the write
// horizon is refused collected because a tombstone that would have hidden
// it may be gone. A stamp the server holds a live value at or after
// changes nothing whatever was collected, so it does not refuse the change
// that carries it: a record given back after the store lost its later
// edits (a heal) keeps its fields written long ago next to those edits.
// A stamp only a tombstone covers, or none, is still refused.
func TestOldStampsTheServerHolds(t *testing.T) {
	ctx := context.Background()
	st := memory.New()
	t.Cleanup(func() { st.Close() })
	e, clk := openCollecting(t, st)
	writeNotes(t, e, "n", "u")
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
