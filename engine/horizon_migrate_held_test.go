package engine

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
)

// TestOldStampsHeldUnderAnOldName: a record given back whole after the
// store lost its later edits (a heal) is taken with them when the server
// holds its old stamps (TestOldStampsTheServerHolds). A record written
// before a migration holds its old fields under their old names, so a
// give-back translated up names them otherwise than the store does: the
// old stamps it carries are held all the same (the record resolved holds
// them, from live values), and the edits the store lost are taken back,
// in the current version and in the one the record was written in.
func TestOldStampsHeldUnderAnOldName(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		ops     string
		version int
		give    func(old crdt.Stamp) map[string]crdt.Field
		want    Status
	}{
		{"renamed, given back at version 2", `{"op": "rename", "from": "title", "to": "name"}`, 2, func(old crdt.Stamp) map[string]crdt.Field {
			return map[string]crdt.Field{"name": {Stamp: old, Value: value(t, "T")}, "body": {Stamp: old, Value: value(t, "b")}}
		}, StatusApplied},
		{"renamed, given back at version 1", `{"op": "rename", "from": "title", "to": "name"}`, 1, func(old crdt.Stamp) map[string]crdt.Field {
			return map[string]crdt.Field{"title": {Stamp: old, Value: value(t, "T")}, "body": {Stamp: old, Value: value(t, "b")}}
		}, StatusApplied},
		{"split, given back at version 2", `{"op": "split", "from": "title", "to": ["first", "last"], "sep": " "}`, 2, func(old crdt.Stamp) map[string]crdt.Field {
			return map[string]crdt.Field{"first": {Stamp: old, Value: value(t, "Ada")}, "last": {Stamp: old, Value: value(t, "Lovelace")}, "body": {Stamp: old, Value: value(t, "b")}}
		}, StatusApplied},
		// Another value at the old stamp would change what readers see
		// (a present target keeps its value at a tie): not held.
		{"renamed, another value at its stamp", `{"op": "rename", "from": "title", "to": "name"}`, 2, func(old crdt.Stamp) map[string]crdt.Field {
			return map[string]crdt.Field{"name": {Stamp: old, Value: value(t, "U")}}
		}, StatusRefused},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, st, clk, _ := openMigrating(t, tc.ops)
			old := crdt.Stamp{Wall: clk.ms, Replica: "old"}
			title := "T"
			if _, split := tc.give(old)["first"]; split {
				title = "Ada Lovelace"
			}
			// Written before the migration, as version 1 shaped it.
			if _, err := st.Apply(ctx, []crdt.Change{{Collection: "notes", Record: crdt.Record{ID: "n", Fields: map[string]crdt.Field{
				"title": {Stamp: old, Value: value(t, title)},
				"body":  {Stamp: old, Value: value(t, "b")},
			}}}}); err != nil {
				t.Fatal(err)
			}
			writeNotes(t, e, "other")
			collectingSince(t, e)
			clk.ms += 2 * time.Hour.Milliseconds()
			if h := collectOnce(t, e); h.Wall <= old.Wall {
				t.Fatalf("write horizon %d, want it past the writes at %d", h.Wall, old.Wall)
			}
			now, err := e.Now("notes")
			if err != nil {
				t.Fatal(err)
			}
			// As a reader held it, and an edit of another replica's the
			// store lost since.
			given := crdt.Record{ID: "n", Fields: tc.give(old)}
			given.Fields["later"] = crdt.Field{Stamp: now, Value: value(t, "kept")}
			res, err := e.Apply(ctx, []crdt.Change{{Collection: "notes", Record: given}}, WithHeld(), WithVersions(map[string]int{"notes": tc.version}))
			if err != nil {
				t.Fatal(err)
			}
			if res[0].Status != tc.want {
				t.Fatalf("the record given back: %v (%v), want %v", res[0].Status, res[0].Err, tc.want)
			}
			if tc.want != StatusApplied {
				if !errors.Is(res[0].Err, ErrCollected) {
					t.Errorf("refused %v, want ErrCollected", res[0].Err)
				}
				return
			}
			got, err := e.GetRecord(ctx, "notes", "n")
			if err != nil {
				t.Fatal(err)
			}
			if f := got.Record.Fields["later"]; f.Stamp != now || f.Value == nil {
				t.Errorf("later is %+v, want the edit given back", f)
			}
		})
	}
}
