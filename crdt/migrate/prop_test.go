package migrate

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"testing"

	"github.com/convergo/convergo/crdt"
	"pgregory.net/rapid"
)

// genDef draws a definition whose every step targets fresh field names, so
// a name never comes back in a later version (the case where translating
// twice is translating once holds across steps too). lossless leaves out
// drop and default, and splits or merges no field a split or merge made
// (the lossless cases of docs/protocol.md are per op: a split part of ""
// merged with another field does not split back the same). It returns the definition and the field names of
// version 1 and of every later version.
func genDef(t *rapid.T, lossless bool) (*Definition, [][]string) {
	names := []string{"a", "b", "c", "d"}
	versions := [][]string{names}
	derived := map[string]bool{}
	steps := rapid.IntRange(0, 4).Draw(t, "steps")
	var js []map[string]any
	for s := 0; s < steps; s++ {
		to := s + 2
		fresh := 0
		newName := func() string { fresh++; return fmt.Sprintf("v%d_%d", to, fresh) }
		cur := append([]string(nil), versions[len(versions)-1]...)
		rapid.Permutation(cur).Draw(t, "order")
		perm := rapid.Permutation(cur).Draw(t, "perm")
		var ops []map[string]any
		var next []string
		kinds := []string{"keep", "rename", "split", "merge"}
		if !lossless {
			kinds = append(kinds, "drop", "default")
		}
		for i := 0; i < len(perm); i++ {
			f := perm[i]
			kind := rapid.SampledFrom(kinds).Draw(t, "op")
			if lossless && (derived[f] || i+1 < len(perm) && derived[perm[i+1]]) && (kind == "split" || kind == "merge") {
				kind = "keep"
			}
			switch kind {
			case "keep":
				next = append(next, f)
			case "rename":
				n := newName()
				ops = append(ops, map[string]any{"op": "rename", "from": f, "to": n})
				next = append(next, n)
				derived[n] = derived[f]
			case "split":
				parts := []string{newName(), newName()}
				ops = append(ops, map[string]any{"op": "split", "from": f, "to": parts, "sep": "|"})
				next = append(next, parts...)
				derived[parts[0]], derived[parts[1]] = true, true
			case "merge":
				if i+1 >= len(perm) {
					next = append(next, f)
					continue
				}
				n := newName()
				ops = append(ops, map[string]any{"op": "merge", "from": []string{f, perm[i+1]}, "to": n, "sep": "|"})
				next = append(next, n)
				derived[n] = true
				i++
			case "drop":
				ops = append(ops, map[string]any{"op": "drop", "field": f})
			case "default":
				n := newName()
				ops = append(ops, map[string]any{"op": "default", "field": n, "value": "dflt"})
				next = append(next, f)
			}
		}
		if len(next) == 0 {
			next = []string{newName()}
			ops = append(ops, map[string]any{"op": "default", "field": next[0], "value": 1})
		}
		if ops == nil {
			ops = []map[string]any{}
		}
		js = append(js, map[string]any{"to": to, "ops": ops})
		versions = append(versions, next)
	}
	if js == nil {
		js = []map[string]any{}
	}
	src, err := json.Marshal(map[string]any{"version": steps + 1, "steps": js})
	if err != nil {
		t.Fatal(err)
	}
	d, err := Parse(src)
	if err != nil {
		t.Fatalf("%s: %v", src, err)
	}
	return d, versions
}

func genField(t *rapid.T, label string, lossless bool) crdt.Field {
	f := crdt.Field{Stamp: crdt.Stamp{Wall: rapid.Int64Range(1, 20).Draw(t, label+" wall"), Replica: rapid.SampledFrom([]string{"r1", "r2"}).Draw(t, label+" replica")}}
	switch k := rapid.IntRange(0, 4).Draw(t, label+" kind"); {
	case lossless:
		f.Value = textValue(rapid.StringMatching(`[xy]{1,4}`).Draw(t, label+" value"))
	case k <= 2:
		f.Value = textValue(rapid.StringMatching(`[xy|]{0,4}`).Draw(t, label+" value"))
	case k == 3:
		f.Value = []byte{0x05}
	}
	return f
}

// genRecord draws a record holding fields of any version (as the server's
// store does once migrations are installed), some unset or not strings.
func genRecord(t *rapid.T, versions [][]string) crdt.Record {
	r := crdt.Record{ID: "x", Fields: map[string]crdt.Field{}}
	for _, names := range versions {
		for _, n := range names {
			if rapid.Bool().Draw(t, "has "+n) {
				r.Fields[n] = genField(t, n, false)
			}
		}
	}
	if rapid.Bool().Draw(t, "deleted") {
		r.Deleted = crdt.Stamp{Wall: rapid.Int64Range(1, 20).Draw(t, "deleted wall"), Replica: "r1"}
	}
	return r
}

// Translating twice is translating once, for records of mixed versions
// resolved from any version.
func TestPropIdempotent(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		d, versions := genDef(t, false)
		r := genRecord(t, versions)
		from := rapid.IntRange(1, d.Current()).Draw(t, "from")
		once, _, err := d.Record(r, from, d.Current())
		if err != nil {
			t.Fatal(err)
		}
		twice, _, err := d.Record(once, from, d.Current())
		if err != nil {
			t.Fatal(err)
		}
		if !once.Equal(twice) {
			t.Fatalf("once %v\ntwice %v", once, twice)
		}
		if c, err := d.Change(r, from, d.Current()); err == nil {
			c2, err := d.Change(c, from, d.Current())
			if err != nil || !c.Equal(c2) {
				t.Fatalf("change once %v\ntwice %v (%v)", c, c2, err)
			}
		}
	})
}

// Up, then down, then up again gives what the first up gave, on
// definitions of renames, splits and merges and version-1 records whose
// fields are all set to non-empty strings without the separator (what
// docs/protocol.md calls lossless): the same values, and the same stamps when
// the record's fields share one stamp. (With different stamps a field made
// of several, served back down, takes the newest of their stamps, and a
// later step that combines it differently carries that stamp on.)
func TestPropUpDownUpStable(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		d, versions := genDef(t, true)
		r := crdt.Record{ID: "x", Fields: map[string]crdt.Field{}}
		oneStamp := rapid.Bool().Draw(t, "one stamp")
		for _, n := range versions[0] {
			r.Fields[n] = genField(t, n, true)
			if oneStamp {
				f := r.Fields[n]
				f.Stamp = crdt.Stamp{Wall: 7, Replica: "r1"}
				r.Fields[n] = f
			}
		}
		to := rapid.IntRange(1, d.Current()).Draw(t, "to")
		up, _, err := d.Record(r, 1, to)
		if err != nil {
			t.Fatal(err)
		}
		down, _, err := d.Record(up, to, 1)
		if err != nil {
			t.Fatal(err)
		}
		again, _, err := d.Record(down, 1, to)
		if err != nil {
			t.Fatal(err)
		}
		if !maps.EqualFunc(up.Values(), again.Values(), bytes.Equal) || oneStamp && !up.Equal(again) {
			t.Fatalf("up %v\ndown %v\nagain %v", up, down, again)
		}
		// The same holds for the change rule: every part is present.
		cu, err := d.Change(r, 1, to)
		if err != nil || !cu.Equal(up) {
			t.Fatalf("change up %v (%v), record up %v", cu, err, up)
		}
	})
}

// Translating across several versions is translating step by step.
func TestPropSteps(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		d, versions := genDef(t, false)
		r := genRecord(t, versions)
		a := rapid.IntRange(1, d.Current()).Draw(t, "a")
		b := rapid.IntRange(1, d.Current()).Draw(t, "b")
		direct, n1, err := d.Record(r, a, b)
		if err != nil {
			t.Fatal(err)
		}
		step, total := r, 0
		for v := a; v != b; {
			w := v + 1
			if b < a {
				w = v - 1
			}
			var n int
			if step, n, err = d.Record(step, v, w); err != nil {
				t.Fatal(err)
			}
			total += n
			v = w
		}
		if !direct.Equal(step) || n1 != total {
			t.Fatalf("direct %v (%d)\nsteps %v (%d)", direct, n1, step, total)
		}
	})
}
