package transport

import (
	"errors"
	"testing"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/engine"
)

// notesReused renames a to b, then c to a: version 3 uses again a field
// name version 1 had, for another field.
const notesReused = `{"notes": {"migrations": {"version": 3, "steps": [
	{"to": 2, "ops": [{"op": "rename", "from": "a", "to": "b"}]},
	{"to": 3, "ops": [{"op": "rename", "from": "c", "to": "a"}]}]}}}`

// The server resolves every stored record from version 1 (engine's
// resolved), so a definition that used a retired name again would read a
// current write of a as version 1's a and move it into b: the writer's a
// gone, its b overwritten. Such rules are refused.
func TestMigrationReusedNameRefused(t *testing.T) {
	if _, err := engine.ParseRules([]byte(notesReused)); !errors.Is(err, crdt.ErrInvalid) {
		t.Fatalf("rules that use a retired name again: %v, want invalid", err)
	}
}
