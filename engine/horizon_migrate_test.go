package engine

import (
	"context"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores/memory"
)

// TestCollectedUnsetOfAMigratedField: a record written before a migration
// keeps its old fields in the store, and reading it resolves them into
// the new ones unless a field there is newer. An unset of the new field
// is such a newer field: collected as any old unset, it would let the old
// field's value come back. So a record holding a field a migration reads
// keeps its unsets (stores.Horizon.Sources), and the fields unset stay
// unset, whatever is collected.
func TestCollectedUnsetOfAMigratedField(t *testing.T) {
	ctx := context.Background()
	st := memory.New()
	t.Cleanup(func() { st.Close() })
	clk := &fakeClock{ms: 1_700_000_000_000}
	rules, err := ParseRules([]byte(`{"notes": {"maxOffline": "1h", "migrations": {"version": 2, "steps": [{"to": 2, "ops": [
		{"op": "rename", "from": "title", "to": "name"},
		{"op": "split", "from": "who", "to": ["first", "last"], "sep": " "}]}]}}}`))
	if err != nil {
		t.Fatal(err)
	}
	e, err := Open(Config{Store: st, Replica: "srv", Now: clk.now, PollInterval: -1, Rules: rules, CollectGrace: -1, CollectEvery: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	old := crdt.Stamp{Wall: clk.ms, Replica: "old"}
	// Written before the migration, as version 1 shaped it.
	if _, err := st.Apply(ctx, []crdt.Change{{Collection: "notes", Record: crdt.Record{ID: "n", Fields: map[string]crdt.Field{
		"title": {Stamp: old, Value: value(t, "T")},
		"who":   {Stamp: old, Value: value(t, "Ada Lovelace")},
		"body":  {Stamp: old, Value: value(t, "b")},
	}}}}); err != nil {
		t.Fatal(err)
	}
	clk.ms += time.Second.Milliseconds()
	s, err := e.Now("notes")
	if err != nil {
		t.Fatal(err)
	}
	unset := crdt.Record{ID: "n", Fields: map[string]crdt.Field{"name": {Stamp: s}, "first": {Stamp: s}}}
	if _, err := e.Apply(ctx, []crdt.Change{{Collection: "notes", Record: unset}}); err != nil {
		t.Fatal(err)
	}
	before, err := e.GetRecord(ctx, "notes", "n")
	if err != nil {
		t.Fatal(err)
	}
	clk.ms += 2 * time.Hour.Milliseconds()
	if h := collectOnce(t, e); h.Wall <= s.Wall {
		t.Fatalf("write horizon %d, want it past the unsets at %d", h.Wall, s.Wall)
	}
	after, err := e.GetRecord(ctx, "notes", "n")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"name", "first"} {
		if v, ok := after.Record.Values()[f]; ok {
			t.Errorf("%s, unset, is %x again once its unset was collected (before: %v)", f, v, before.Record.Values()[f])
		}
	}
	if got := after.Record.Values()["last"]; string(got) != string(value(t, "Lovelace")) {
		t.Errorf("last is %x, want it kept", got)
	}
}
