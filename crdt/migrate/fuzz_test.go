package migrate

import (
	"testing"

	"github.com/convergo/convergo/crdt"
)

// FuzzTranslate parses a definition and translates a record with it
// between two versions: no panic, only typed errors, results that are
// valid records, and resolving a record twice is resolving it once.
func FuzzTranslate(f *testing.F) {
	seed := crdt.Record{ID: "x", Fields: map[string]crdt.Field{}}
	for name, v := range map[string]any{"title": "Hello", "who": "Ada Lovelace", "street": "1 Main St", "date": "2026-12-03", "first": 5} {
		b, err := crdt.EncodeValue(v)
		if err != nil {
			f.Fatal(err)
		}
		seed.Fields[name] = crdt.Field{Stamp: crdt.Stamp{Wall: 5, Replica: "r1"}, Value: b}
	}
	enc, err := crdt.EncodeRecord(seed)
	if err != nil {
		f.Fatal(err)
	}
	for _, src := range definitions {
		f.Add(src, enc, uint8(1), uint8(2))
		f.Add(src, enc, uint8(3), uint8(1))
	}
	f.Fuzz(func(t *testing.T, src string, enc []byte, from, to uint8) {
		d, err := Parse([]byte(src))
		if err != nil {
			return
		}
		r, err := crdt.DecodeRecord(enc)
		if err != nil {
			return
		}
		out, _, err := d.Record(r, int(from), int(to))
		if err == nil {
			if verr := out.Validate(); verr != nil {
				t.Fatalf("record %v from %d to %d: invalid result %v: %v", r, from, to, out, verr)
			}
		} else if errCode(err) == "" || errCode(err)[0] == 'o' {
			t.Fatalf("untyped error %v", err)
		}
		if c, err := d.Change(r, int(from), int(to)); err == nil {
			if verr := c.Validate(); verr != nil {
				t.Fatalf("change %v from %d to %d: invalid result %v: %v", r, from, to, c, verr)
			}
		} else if errCode(err)[0] == 'o' {
			t.Fatalf("untyped error %v", err)
		}
		once, _, _ := d.Record(r, 1, d.Current())
		twice, _, _ := d.Record(once, 1, d.Current())
		if !once.Equal(twice) {
			t.Fatalf("resolving twice: %v, once: %v", twice, once)
		}
	})
}
