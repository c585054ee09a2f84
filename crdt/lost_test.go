package crdt

import (
	"slices"
	"testing"

	"pgregory.net/rapid"
)

func TestLostFields(t *testing.T) {
	s := func(wall int64, replica string) Stamp { return Stamp{Wall: wall, Replica: replica} }
	v := func(x any) []byte {
		b, err := EncodeValue(x)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, tc := range []struct {
		name        string
		base, delta Record
		want        []string
	}{
		{"new record", Record{}, SetField("r", "a", v(1), s(1, "x")), nil},
		{"newer write wins", SetField("r", "a", v(1), s(1, "x")), SetField("r", "a", v(2), s(2, "x")), nil},
		{"older write loses", SetField("r", "a", v(1), s(2, "x")), SetField("r", "a", v(2), s(1, "x")), []string{"a"}},
		{"duplicate is held", SetField("r", "a", v(1), s(1, "x")), SetField("r", "a", v(1), s(1, "x")), nil},
		{"equal stamp, larger value wins", SetField("r", "a", v(1), s(1, "x")), SetField("r", "a", v(2), s(1, "x")), nil},
		{"equal stamp, smaller value loses", SetField("r", "a", v(2), s(1, "x")), SetField("r", "a", v(1), s(1, "x")), []string{"a"}},
		{"equal stamp, unset beats value", SetField("r", "a", v(1), s(1, "x")), UnsetField("r", "a", s(1, "x")), nil},
		{"equal stamp, value loses to unset", UnsetField("r", "a", s(1, "x")), SetField("r", "a", v(1), s(1, "x")), []string{"a"}},
		{"older unset loses", SetField("r", "a", v(1), s(2, "x")), UnsetField("r", "a", s(1, "x")), []string{"a"}},
		{"hidden by a later delete", DeleteRecord("r", s(5, "x")), SetField("r", "a", v(1), s(3, "x")), []string{"a"}},
		{"hidden by a delete at the same stamp", DeleteRecord("r", s(3, "x")), SetField("r", "a", v(1), s(3, "x")), []string{"a"}},
		{"written after the delete", DeleteRecord("r", s(3, "x")), SetField("r", "a", v(1), s(4, "x")), nil},
		{"hidden by the change's own delete", Record{}, Record{ID: "r", Deleted: s(5, "x"), Fields: map[string]Field{"a": {Stamp: s(4, "x"), Value: v(1)}}}, []string{"a"}},
		{"a delete is never lost", DeleteRecord("r", s(9, "x")), DeleteRecord("r", s(3, "x")), nil},
		{"partly applied, sorted", Record{ID: "r", Fields: map[string]Field{
			"c": {Stamp: s(9, "x"), Value: v(1)},
			"a": {Stamp: s(9, "x"), Value: v(1)},
		}}, Record{ID: "r", Fields: map[string]Field{
			"c": {Stamp: s(2, "x"), Value: v(2)},
			"b": {Stamp: s(2, "x"), Value: v(2)},
			"a": {Stamp: s(2, "x"), Value: v(2)},
		}}, []string{"a", "c"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, _ := Merge(tc.base, tc.delta)
			if got := LostFields(tc.delta, m); !slices.Equal(got, tc.want) {
				t.Fatalf("LostFields: got %q, want %q", got, tc.want)
			}
		})
	}
}

// TestLostFieldsProperty checks LostFields against Merge: every field of a
// change is either held exactly by the merged record or listed, never both;
// and against a reference that decides from the inputs alone: a field is lost
// when the base holds a field that beats it or a delete (of the base or of
// the change itself) at or after its stamp.
func TestLostFieldsProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		base := genRecord().Draw(t, "base").Normalize()
		delta := genRecord().Draw(t, "delta")
		m, _ := Merge(base, delta)
		lost := LostFields(delta, m)
		if !slices.IsSorted(lost) {
			t.Fatalf("not sorted: %q", lost)
		}
		del := base.Deleted
		if delta.Deleted.Compare(del) > 0 {
			del = delta.Deleted
		}
		for _, name := range delta.FieldNames() {
			f := delta.Fields[name]
			g, held := m.Fields[name]
			held = held && g.equal(f)
			listed := slices.Contains(lost, name)
			if held == listed {
				t.Fatalf("field %q: held %v, listed %v", name, held, listed)
			}
			cur, ok := base.Fields[name]
			want := f.Stamp.Compare(del) <= 0 || (ok && cur.beats(f))
			if listed != want {
				t.Fatalf("field %q: listed %v, reference says %v", name, listed, want)
			}
		}
		for _, name := range lost {
			if _, ok := delta.Fields[name]; !ok {
				t.Fatalf("listed %q, which the change does not hold", name)
			}
		}
	})
}
