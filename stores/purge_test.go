package stores_test

import (
	"fmt"
	"maps"
	"testing"

	"pgregory.net/rapid"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// genChange draws a change to record "r": a delete, sets and unsets of a
// few fields, stamped at walls from lo to hi.
func genChange(t *rapid.T, label string, lo, hi int64) crdt.Record {
	r := crdt.Record{ID: "r", Fields: map[string]crdt.Field{}}
	stamp := func(l string) crdt.Stamp {
		return crdt.Stamp{Wall: rapid.Int64Range(lo, hi).Draw(t, l+"wall"), Logical: uint32(rapid.IntRange(0, 2).Draw(t, l+"logical")), Replica: rapid.SampledFrom([]string{"a", "b"}).Draw(t, l+"replica")}
	}
	if rapid.Bool().Draw(t, label+"delete") {
		r.Deleted = stamp(label + "delete")
	}
	for i := range rapid.IntRange(0, 3).Draw(t, label+"fields") {
		name := rapid.SampledFrom([]string{"x", "y", "z"}).Draw(t, fmt.Sprint(label, "field", i))
		var v []byte
		if rapid.Bool().Draw(t, fmt.Sprint(label, "set", i)) {
			v = []byte{0x01 + byte(rapid.IntRange(0, 3).Draw(t, fmt.Sprint(label, "value", i)))}
		}
		r.Fields[name] = crdt.Field{Stamp: stamp(fmt.Sprint(label, "f", i)), Value: v}
	}
	return r
}

// TestPurgeRecordKeepsWhatLaterWritesSee is why the write horizon makes a
// purge safe: for any history, the purged record shows the same values,
// and any later changes stamped at or after the wall leave the purged and
// the unpurged record showing the same values. It also checks what
// PurgeRecord drops and that it leaves nothing it could drop.
func TestPurgeRecordKeepsWhatLaterWritesSee(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		const wall = 50
		var r crdt.Record
		for i := range rapid.IntRange(1, 5).Draw(t, "history") {
			r.Merge(genChange(t, fmt.Sprint("h", i), 1, 100))
		}
		// A field a migration reads keeps the unsets of a record that
		// holds it.
		h := stores.Horizon{Wall: wall}
		if rapid.Bool().Draw(t, "sources") {
			h.Sources = map[string]bool{rapid.SampledFrom([]string{"x", "y", "z"}).Draw(t, "source"): true}
		}
		if rapid.Bool().Draw(t, "defaulted") {
			h.Defaulted = map[string]bool{rapid.SampledFrom([]string{"x", "y", "z"}).Draw(t, "default"): true}
		}
		keepUnsets := false
		for name := range r.Fields {
			keepUnsets = keepUnsets || h.Sources[name]
		}
		before := r.Clone()
		p, deletes, fields := stores.PurgeRecord(r, h)
		if !r.Equal(before) {
			t.Fatalf("PurgeRecord modified its argument")
		}
		if !maps.EqualFunc(p.Values(), r.Values(), func(a, b []byte) bool { return string(a) == string(b) }) {
			t.Fatalf("purge changed the values: %v -> %v", r.Values(), p.Values())
		}
		wantDeletes := 0
		if !r.Deleted.IsZero() && r.Deleted.Wall < wall {
			wantDeletes = 1
		}
		wantFields := 0
		for name, f := range r.Fields {
			if f.Value == nil && f.Stamp.Wall < wall && !keepUnsets && !h.Defaulted[name] {
				wantFields++
			}
		}
		if deletes != wantDeletes || fields != wantFields || len(p.Fields) != len(r.Fields)-fields {
			t.Fatalf("dropped %d deletes, %d fields (%d left of %d), want %d, %d", deletes, fields, len(p.Fields), len(r.Fields), wantDeletes, wantFields)
		}
		// The DynamoDB store tells a purged record from the one it read
		// by the size of its encoding.
		if deletes+fields > 0 && len(crdt.AppendRecord(nil, p)) >= len(crdt.AppendRecord(nil, r)) {
			t.Fatalf("a purge did not shrink the encoding: %d bytes, was %d", len(crdt.AppendRecord(nil, p)), len(crdt.AppendRecord(nil, r)))
		}
		if _, d, f := stores.PurgeRecord(p, h); d+f != 0 {
			t.Fatalf("a purged record has more to purge: %d, %d", d, f)
		}
		for i := range rapid.IntRange(0, 4).Draw(t, "later") {
			c := genChange(t, fmt.Sprint("l", i), wall, 120)
			r.Merge(c)
			p.Merge(c)
			if !maps.EqualFunc(p.Values(), r.Values(), func(a, b []byte) bool { return string(a) == string(b) }) {
				t.Fatalf("after a later change the purged record shows %v, the unpurged %v", p.Values(), r.Values())
			}
		}
	})
}
