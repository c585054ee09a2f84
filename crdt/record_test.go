package crdt

import (
	"bytes"
	"fmt"
	"testing"

	"pgregory.net/rapid"
)

// Small pools make equal stamps, equal replica ids and conflicting fields
// common.
var (
	genReplica = rapid.SampledFrom([]string{"a", "b", "c"})
	genName    = rapid.SampledFrom([]string{"title", "done", "tags", "x"})
)

func genStamp() *rapid.Generator[Stamp] {
	return rapid.Custom(func(t *rapid.T) Stamp {
		return Stamp{
			Wall:    rapid.Int64Range(1, 4).Draw(t, "wall"),
			Logical: rapid.Uint32Range(0, 2).Draw(t, "logical"),
			Replica: genReplica.Draw(t, "replica"),
		}
	})
}

func genValue() *rapid.Generator[[]byte] {
	return rapid.Custom(func(t *rapid.T) []byte {
		var v any
		switch rapid.IntRange(0, 5).Draw(t, "kind") {
		case 0:
			v = nil
		case 1:
			v = rapid.Bool().Draw(t, "bool")
		case 2:
			v = rapid.Int64Range(-3, 3).Draw(t, "int")
		case 3:
			v = rapid.SampledFrom([]string{"", "milk", "eggs"}).Draw(t, "string")
		case 4:
			v = rapid.SampledFrom([]float64{0.5, -1.25, 1e300}).Draw(t, "float")
		case 5:
			v = []any{"nested", map[string]any{"k": int64(1)}}
		}
		b, err := EncodeValue(v)
		if err != nil {
			t.Fatalf("encode %v: %v", v, err)
		}
		return b
	})
}

func genField() *rapid.Generator[Field] {
	return rapid.Custom(func(t *rapid.T) Field {
		f := Field{Stamp: genStamp().Draw(t, "stamp")}
		if rapid.IntRange(0, 4).Draw(t, "unset") > 0 {
			f.Value = genValue().Draw(t, "value")
		}
		return f
	})
}

// genRecord generates a record state or delta (possibly not normalized, as
// decoded input may be): deletes, unsets, equal stamps and ties included.
func genRecord() *rapid.Generator[Record] {
	return rapid.Custom(func(t *rapid.T) Record {
		r := Record{ID: "r1"}
		if rapid.IntRange(0, 2).Draw(t, "deleted") == 0 {
			r.Deleted = genStamp().Draw(t, "delete")
		}
		n := rapid.IntRange(0, 4).Draw(t, "fields")
		for range n {
			if r.Fields == nil {
				r.Fields = map[string]Field{}
			}
			r.Fields[genName.Draw(t, "name")] = genField().Draw(t, "field")
		}
		return r
	})
}

func mustEncode(t interface{ Fatalf(string, ...any) }, r Record) []byte {
	b, err := EncodeRecord(r)
	if err != nil {
		t.Fatalf("encode %+v: %v", r, err)
	}
	return b
}

func requireSame(t *rapid.T, what string, got, want Record) {
	t.Helper()
	if !got.Equal(want) {
		t.Fatalf("%s: got %+v, want %+v", what, got, want)
	}
	if g, w := mustEncode(t, got), mustEncode(t, want); !bytes.Equal(g, w) {
		t.Fatalf("%s: equal records encode differently: %x vs %x", what, g, w)
	}
}

// merged merges records of id "r1" (every generated record's id) into an
// empty state.
func merged(rs ...Record) Record {
	out := Record{ID: "r1"}
	for _, r := range rs {
		out.Merge(r)
	}
	return out
}

func TestMergeLaws(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		a, b, c := genRecord().Draw(t, "a"), genRecord().Draw(t, "b"), genRecord().Draw(t, "c")
		requireSame(t, "commutative", merged(a, b), merged(b, a))
		requireSame(t, "associative", merged(merged(a, b), c), merged(a, merged(b, c)))
		ab := merged(a, b)
		again := ab.Clone()
		if again.Merge(b) {
			t.Fatalf("idempotent: merging b twice reported a change")
		}
		requireSame(t, "idempotent", again, ab)
		requireSame(t, "self-merge", merged(a, a), a.Normalize())
	})
}

// TestDeltaMergeEqualsStateMerge splits replica histories into single-field
// deltas and checks that merging all deltas, shuffled and duplicated,
// equals merging the full states.
func TestDeltaMergeEqualsStateMerge(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		states := rapid.SliceOfN(genRecord(), 1, 4).Draw(t, "states")
		var deltas []Record
		for _, s := range states {
			if !s.Deleted.IsZero() {
				deltas = append(deltas, DeleteRecord(s.ID, s.Deleted))
			}
			for name, f := range s.Fields {
				deltas = append(deltas, Record{ID: s.ID, Fields: map[string]Field{name: f}})
			}
		}
		if len(deltas) > 0 {
			dups := rapid.SliceOfN(rapid.IntRange(0, len(deltas)-1), 0, 5).Draw(t, "dups")
			for _, i := range dups {
				deltas = append(deltas, deltas[i])
			}
		}
		perm := rapid.Permutation(deltas).Draw(t, "order")
		requireSame(t, "deltas vs states", merged(perm...), merged(states...))
	})
}

// referenceMerge is a deliberately naive merge: collect every write, pick
// the maximum per field by a direct reading of the rules, then hide what the
// largest delete hides.
func referenceMerge(rs ...Record) Record {
	out := Record{ID: "r1"}
	best := map[string][]Field{}
	for _, r := range rs {
		if out.ID == "" {
			out.ID = r.ID
		}
		if r.Deleted.Compare(out.Deleted) > 0 {
			out.Deleted = r.Deleted
		}
		for name, f := range r.Fields {
			best[name] = append(best[name], f)
		}
	}
	for name, fs := range best {
		win := fs[0]
		for _, f := range fs[1:] {
			switch c := f.Stamp.Compare(win.Stamp); {
			case c > 0:
				win = f
			case c == 0:
				// tie: unset wins, else larger bytes
				if win.Value != nil && (f.Value == nil || bytes.Compare(f.Value, win.Value) > 0) {
					win = f
				}
			}
		}
		if win.Stamp.Compare(out.Deleted) > 0 {
			if out.Fields == nil {
				out.Fields = map[string]Field{}
			}
			out.Fields[name] = win
		}
	}
	return out
}

func TestMergeMatchesReference(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		rs := rapid.SliceOfN(genRecord(), 1, 5).Draw(t, "records")
		requireSame(t, "merge vs reference", merged(rs...), referenceMerge(rs...))
	})
}

func TestMergeReportsChange(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		a, b := genRecord().Draw(t, "a").Normalize(), genRecord().Draw(t, "b")
		got := a.Clone()
		changed := got.Merge(b)
		if changed == got.Equal(a) {
			t.Fatalf("Merge reported changed=%v, but before=%+v after=%+v", changed, a, got)
		}
	})
}

func TestDeleteSemantics(t *testing.T) {
	v := func(s string) []byte { b, _ := EncodeValue(s); return b }
	st := func(wall int64, r string) Stamp { return Stamp{Wall: wall, Replica: r} }
	tests := []struct {
		name       string
		changes    []Record
		wantExists bool
		wantValues map[string]string
	}{
		{"set", []Record{SetField("x", "a", v("1"), st(1, "a"))}, true, map[string]string{"a": "1"}},
		{"delete hides older fields", []Record{SetField("x", "a", v("1"), st(1, "a")), DeleteRecord("x", st(2, "a"))}, false, nil},
		{"delete hides field at equal stamp", []Record{SetField("x", "a", v("1"), st(2, "a")), DeleteRecord("x", st(2, "a"))}, false, nil},
		{"recreate after delete keeps only newer fields", []Record{
			SetField("x", "a", v("1"), st(1, "a")), SetField("x", "b", v("2"), st(1, "a")),
			DeleteRecord("x", st(2, "a")), SetField("x", "b", v("3"), st(3, "b")),
		}, true, map[string]string{"b": "3"}},
		{"late old write after delete stays hidden", []Record{DeleteRecord("x", st(5, "a")), SetField("x", "a", v("1"), st(4, "z"))}, false, nil},
		{"unset removes the value", []Record{SetField("x", "a", v("1"), st(1, "a")), UnsetField("x", "a", st(2, "b"))}, false, nil},
		{"older unset loses", []Record{UnsetField("x", "a", st(1, "b")), SetField("x", "a", v("1"), st(2, "a"))}, true, map[string]string{"a": "1"}},
		{"equal stamps: unset wins", []Record{SetField("x", "a", v("1"), st(1, "a")), UnsetField("x", "a", st(1, "a"))}, false, nil},
		{"equal stamps: larger bytes win", []Record{SetField("x", "a", v("2"), st(1, "a")), SetField("x", "a", v("1"), st(1, "a"))}, true, map[string]string{"a": "2"}},
		{"replica id breaks wall ties", []Record{SetField("x", "a", v("B"), st(1, "b")), SetField("x", "a", v("A"), st(1, "a"))}, true, map[string]string{"a": "B"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, order := range [][]Record{tt.changes, reversed(tt.changes)} {
				r := merged(order...)
				if got := r.Exists(); got != tt.wantExists {
					t.Fatalf("Exists: got %v, want %v (record %+v)", got, tt.wantExists, r)
				}
				got := map[string]string{}
				for name, b := range r.Values() {
					var s string
					if err := DecodeValue(b, &s); err != nil {
						t.Fatalf("decode %x: %v", b, err)
					}
					got[name] = s
				}
				if fmt.Sprint(got) != fmt.Sprint(orEmpty(tt.wantValues)) {
					t.Fatalf("values: got %v, want %v", got, tt.wantValues)
				}
			}
		})
	}
}

func reversed(rs []Record) []Record {
	out := make([]Record, len(rs))
	for i, r := range rs {
		out[len(rs)-1-i] = r
	}
	return out
}

func orEmpty(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}
