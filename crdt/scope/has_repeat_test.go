package scope

import (
	"testing"

	"github.com/convergo/convergo/crdt"
)

// One "has" repeated in many branches of a scope ("has" of one value, in
// each of MaxNodes/3 "and"s that differ otherwise) walks the field's array
// once per record too: with one value to look for, the walk is no cheaper
// than with many, and a client's scope would otherwise make the server
// walk an array of MaxValueBytes some 85 times for every record it reads.
func TestHasRepeatedWalksAnArrayOnce(t *testing.T) {
	arr := make([]any, 0, 1000)
	for range 1000 {
		arr = append(arr, 1)
	}
	v, err := crdt.EncodeValue(arr)
	if err != nil {
		t.Fatal(err)
	}
	a, err := crdt.EncodeValue(0)
	if err != nil {
		t.Fatal(err)
	}
	st := crdt.Stamp{Wall: 1, Replica: "a"}
	r := crdt.Record{ID: "r", Fields: map[string]crdt.Field{"tags": {Stamp: st, Value: v}, "a": {Stamp: st, Value: a}}}
	kids := []any{"or"}
	for i := range (MaxNodes - 1) / 3 {
		kids = append(kids, []any{"and", []any{"in", "a", []any{0, i + 1}}, []any{"has", "tags", 999}})
	}
	p, err := FromValue(kids)
	if err != nil {
		t.Fatal(err)
	}
	walks := 0
	onWalk = func() { walks++ }
	defer func() { onWalk = nil }()
	if p.Match(r) || walks > 1 {
		t.Errorf("match %v with %d walks of one array, want false with at most 1", p.Match(r), walks)
	}
}
