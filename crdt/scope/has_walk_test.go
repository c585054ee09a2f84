package scope

import (
	"testing"

	"github.com/convergo/convergo/crdt"
)

// A scope of many "has" over one field walks the field's array once per
// record, not once per "has": a client's scope of MaxNodes of them over
// an array of MaxValueBytes would otherwise cost the server MaxNodes
// passes over it for every record of every page (docs/protocol.md,
// section 11: Match reads each field value at most once per record). So
// does one "has" of one value repeated in many branches that differ
// otherwise: with one value to look for, the walk is no cheaper than with
// many.
func TestHasWalksAnArrayOnce(t *testing.T) {
	arr := make([]any, 0, 1000)
	for range 1000 {
		arr = append(arr, 1)
	}
	v, err := crdt.EncodeValue(arr)
	if err != nil {
		t.Fatal(err)
	}
	other, err := crdt.EncodeValue([]any{"x", 7})
	if err != nil {
		t.Fatal(err)
	}
	zero, err := crdt.EncodeValue(0)
	if err != nil {
		t.Fatal(err)
	}
	st := crdt.Stamp{Wall: 1, Replica: "a"}
	r := crdt.Record{ID: "r", Fields: map[string]crdt.Field{"tags": {Stamp: st, Value: v}, "more": {Stamp: st, Value: other}, "a": {Stamp: st, Value: zero}}}
	kids := []any{"or"}
	for i := range MaxNodes - 3 {
		kids = append(kids, []any{"has", "tags", 1000 + i})
	}
	kids = append(kids, []any{"has", "more", 7}, []any{"has", "more", 8})
	repeated := []any{"or"}
	for i := range (MaxNodes - 1) / 3 {
		repeated = append(repeated, []any{"and", []any{"in", "a", []any{0, i + 1}}, []any{"has", "tags", 999}})
	}
	walks := 0
	onWalk = func() { walks++ }
	defer func() { onWalk = nil }()
	for _, tc := range []struct {
		scope []any
		want  bool
		walks int
	}{
		{kids, true, 2},
		{append(kids[:len(kids)-2:len(kids)-2], []any{"has", "tags", 1}), true, 1},
		{kids[:len(kids)-2], false, 1},
		{[]any{"and", []any{"has", "more", "x"}, []any{"has", "more", 7}, []any{"has", "tags", 2}}, false, 2},
		{repeated, false, 1},
	} {
		p, err := FromValue(tc.scope)
		if err != nil {
			t.Fatal(err)
		}
		walks = 0
		if got := p.Match(r); got != tc.want || walks > tc.walks {
			t.Errorf("%.60s: match %v with %d walks of an array, want %v with at most %d", p.String(), got, walks, tc.want, tc.walks)
		}
	}
}
