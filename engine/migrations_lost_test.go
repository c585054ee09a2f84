package engine

import (
	"context"
	"slices"
	"testing"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores/memory"
)

// A change written under an older schema version is answered in that
// version's terms: Lost names the fields the client wrote, and a change
// whose every field lost is superseded, whether the newer value is held
// under the field's old name (a record written before the migration) or
// its new one.
func TestMigratedChangeAnsweredInItsVersion(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		stored map[string]any // the newer write, at wall 999_500
		rules  bool           // the newer write was made under the migration
		change map[string]any // the v1 client's, at wall 999_100
		status Status
		lost   []string
	}{
		{"newer value under the old name", map[string]any{"title": "newer"}, false, map[string]any{"title": "mine"}, StatusSuperseded, []string{"title"}},
		{"newer value under the new name", map[string]any{"name": "newer"}, true, map[string]any{"title": "mine"}, StatusSuperseded, []string{"title"}},
		{"one field of two lost", map[string]any{"title": "newer"}, false, map[string]any{"title": "mine", "note": "kept"}, StatusApplied, []string{"title"}},
		{"a split field lost", map[string]any{"first": "Grace", "last": "Hopper"}, true, map[string]any{"who": "Ada Lovelace"}, StatusSuperseded, []string{"who"}},
		{"nothing newer", map[string]any{"note": "other"}, false, map[string]any{"title": "mine"}, StatusApplied, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := memory.New()
			t.Cleanup(func() { st.Close() })
			var rules []Rule
			if tc.rules {
				rules = migrationRules(t, "")
			}
			before := openPlain(t, st, rules)
			if _, err := before.Apply(ctx, []crdt.Change{{Collection: "notes", Record: rec(t, "x", 999_500, tc.stored)}}); err != nil {
				t.Fatal(err)
			}
			before.Close()

			e := openOn(t, st, migrationRules(t, ""))
			res, err := e.Apply(ctx, []crdt.Change{{Collection: "notes", Record: rec(t, "x", 999_100, tc.change)}},
				WithVersions(map[string]int{"notes": 1}))
			if err != nil {
				t.Fatal(err)
			}
			if res[0].Status != tc.status || !slices.Equal(res[0].Lost, tc.lost) {
				t.Errorf("got %v lost %v, want %v lost %v", res[0].Status, res[0].Lost, tc.status, tc.lost)
			}
			// Pushed again, nothing changes: the same answer's fields.
			again, err := e.Apply(ctx, []crdt.Change{{Collection: "notes", Record: rec(t, "x", 999_100, tc.change)}},
				WithVersions(map[string]int{"notes": 1}))
			if err != nil {
				t.Fatal(err)
			}
			if want := tc.lost; !slices.Equal(again[0].Lost, want) || again[0].Status == StatusApplied {
				t.Errorf("again: got %v lost %v, want duplicate or superseded, lost %v", again[0].Status, again[0].Lost, want)
			}
		})
	}
}
