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
	e, st, clk, _ := openMigrating(t, `{"op": "rename", "from": "title", "to": "name"},
		{"op": "split", "from": "who", "to": ["first", "last"], "sep": " "}`)
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
	collectingSince(t, e)
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

// TestCollectedUnsetOfADefaultedField: a field a migration gives a
// default reads as unset when it was unset, and as its default when the
// record lacks it. Collected, its unset would turn into the default for
// every reader from then on (and for the scopes and rules that judge the
// record), where the replicas that hold the unset read it unset: the
// unset of such a field is kept (stores.Horizon.Defaulted).
func TestCollectedUnsetOfADefaultedField(t *testing.T) {
	ctx := context.Background()
	e, _, clk, rules := openMigrating(t, `{"op": "default", "field": "priority", "value": 0}`)
	d := rules[0].Migrations
	s, err := e.Now("notes")
	if err != nil {
		t.Fatal(err)
	}
	written := crdt.Record{ID: "n", Fields: map[string]crdt.Field{"body": {Stamp: s, Value: value(t, "b")}, "priority": {Stamp: s}}}
	if _, err := e.Apply(ctx, []crdt.Change{{Collection: "notes", Record: written}}); err != nil {
		t.Fatal(err)
	}
	collectingSince(t, e)
	clk.ms += 2 * time.Hour.Milliseconds()
	if h := collectOnce(t, e); h.Wall <= s.Wall {
		t.Fatalf("write horizon %d, want it past the unset at %d", h.Wall, s.Wall)
	}
	after, err := e.GetRecord(ctx, "notes", "n")
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := d.Values(after.Record, d.Current())["priority"]; ok {
		t.Errorf("priority, unset, reads %x (its default) once its unset was collected", v)
	}
}

// openMigrating opens a collecting engine (as openCollecting) on a new
// memory store whose notes rule has a MaxOffline of an hour and one
// migration step to version 2 made of ops (JSON, the step's "ops" items).
// It returns the engine, the store, the clock and the rules parsed.
func openMigrating(t *testing.T, ops string) (*Engine, *memory.Store, *fakeClock, []Rule) {
	t.Helper()
	st := memory.New()
	t.Cleanup(func() { st.Close() })
	clk := &fakeClock{ms: 1_700_000_000_000}
	rules, err := ParseRules([]byte(`{"notes": {"maxOffline": "1h", "migrations": {"version": 2, "steps": [{"to": 2, "ops": [` + ops + `]}]}}}`))
	if err != nil {
		t.Fatal(err)
	}
	e, err := Open(Config{Store: st, Replica: "srv", Now: clk.now, PollInterval: -1, Rules: rules, CollectGrace: -1, CollectEvery: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e, st, clk, rules
}
