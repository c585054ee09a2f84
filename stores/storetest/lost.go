package storetest

import (
	"fmt"
	"slices"
	"testing"

	"github.com/convergo/convergo/crdt"
)

// testLost checks Result.Lost: the fields of a change the record does not
// hold as written after the merge, sorted; nothing for a duplicate; never
// the change's delete stamp.
func testLost(t *testing.T, f Factory) {
	s := open(t, f)
	fields := func(id string, del crdt.Stamp, fs ...any) crdt.Record {
		r := crdt.Record{ID: id, Deleted: del}
		for i := 0; i < len(fs); i += 3 {
			if r.Fields == nil {
				r.Fields = map[string]crdt.Field{}
			}
			fl := crdt.Field{Stamp: fs[i+1].(crdt.Stamp)}
			if fs[i+2] != nil {
				fl.Value = val(t, fs[i+2])
			}
			r.Fields[fs[i].(string)] = fl
		}
		return r
	}
	var none crdt.Stamp
	base := fields("r", none, "a", st(10, "w"), 1, "b", st(10, "w"), 1, "c", st(10, "w"), 1, "t", st(10, "w"), 5)
	apply(t, s, chg("lost", base))
	for _, tc := range []struct {
		name        string
		change      crdt.Record
		wantChanged bool
		wantLost    []string
	}{
		{"duplicate", fields("r", none, "a", st(10, "w"), 1), false, nil},
		{"older write", fields("r", none, "a", st(9, "w"), 2), false, []string{"a"}},
		{"older unset", fields("r", none, "a", st(9, "w"), nil), false, []string{"a"}},
		{"partly older, sorted", fields("r", none, "c", st(9, "w"), 2, "new", st(11, "w"), 2, "a", st(9, "w"), 2), true, []string{"a", "c"}},
		{"tie lost to the larger value", fields("r", none, "t", st(10, "w"), 4), false, []string{"t"}},
		{"tie won by the larger value", fields("r", none, "t", st(10, "w"), 6), true, nil},
		{"delete", fields("r", st(5, "w")), true, nil},
		{"older delete", fields("r", st(4, "w")), false, nil},
		{"delete and a write it hides", fields("r", st(20, "w"), "a", st(15, "w"), 3), true, []string{"a"}},
		{"write hidden by the stored delete", fields("r", none, "b", st(20, "w"), 3, "z", st(19, "w"), 3), false, []string{"b", "z"}},
		{"write after the delete", fields("r", none, "b", st(21, "w"), 3), true, nil},
		{"new record", fields("other", none, "a", st(1, "w"), 1), true, nil},
	} {
		res := apply(t, s, chg("lost", tc.change))[0]
		if res.Changed != tc.wantChanged || !slices.Equal(res.Lost, tc.wantLost) {
			t.Fatalf("%s: got Changed %v, Lost %q; want Changed %v, Lost %q", tc.name, res.Changed, res.Lost, tc.wantChanged, tc.wantLost)
		}
	}
	// In a batch each change is judged right after its own merge: the first
	// change is held when it is merged, though the second then supersedes it.
	res := apply(t, s,
		chg("lost", fields("batch", none, "f", st(1, "w"), 1)),
		chg("lost", fields("batch", none, "f", st(2, "w"), 2)),
		chg("lost", fields("batch", none, "f", st(1, "w"), 3)),
	)
	for i, want := range [][]string{nil, nil, {"f"}} {
		if !slices.Equal(res[i].Lost, want) {
			t.Fatalf("batch change %d: Lost %q, want %q", i, res[i].Lost, want)
		}
	}
	// Lost matches crdt.LostFields on many fields at once.
	big := crdt.Record{ID: "many", Fields: map[string]crdt.Field{}}
	older := crdt.Record{ID: "many", Fields: map[string]crdt.Field{}}
	var want []string
	for i := range 40 {
		name := fmt.Sprintf("f%02d", i)
		big.Fields[name] = crdt.Field{Stamp: st(int64(10+i%3), "w"), Value: val(t, i)}
		older.Fields[name] = crdt.Field{Stamp: st(11, "w"), Value: val(t, i)}
		if i%3 == 2 { // stamp 12 beats 11; at 11 the values are equal
			want = append(want, name)
		}
	}
	apply(t, s, chg("lost", big))
	if got := apply(t, s, chg("lost", older))[0].Lost; !slices.Equal(got, want) {
		t.Fatalf("40 fields: Lost %q, want %q", got, want)
	}
}
