package crdt

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

// The reference decoder: the reflection-based decoding of records and
// changes as it was before decode_fast.go, kept here so that the
// hand-written decoder can be held to it byte for byte.

type refRecordWire struct {
	ID      string           `cbor:"1,keyasint"`
	Deleted *Stamp           `cbor:"2,keyasint,omitempty"`
	Fields  map[string]Field `cbor:"3,keyasint,omitempty"`
}

type refRecord struct{ r Record }

func (r *refRecord) UnmarshalCBOR(data []byte) error {
	if len(data) > MaxRecordBytes {
		return fmt.Errorf("%w: record of %d bytes exceeds %d", ErrTooLarge, len(data), MaxRecordBytes)
	}
	var w refRecordWire
	if err := decMode.Unmarshal(data, &w); err != nil {
		return wrapDecode(err)
	}
	if err := ValidateID(w.ID); err != nil {
		return err
	}
	if len(w.Fields) > MaxFieldsPerRecord {
		return fmt.Errorf("%w: record %q has %d fields, more than %d", ErrTooLarge, w.ID, len(w.Fields), MaxFieldsPerRecord)
	}
	for name := range w.Fields {
		if err := ValidateFieldName(name); err != nil {
			return err
		}
	}
	r.r = Record{ID: w.ID, Fields: w.Fields}
	if w.Deleted != nil {
		if w.Deleted.IsZero() {
			return fmt.Errorf("%w: record %q has an explicit zero delete stamp", ErrInvalid, w.ID)
		}
		if err := w.Deleted.Validate(); err != nil {
			return err
		}
		r.r.Deleted = *w.Deleted
	}
	return nil
}

type refChangeWire struct {
	Collection string    `cbor:"1,keyasint"`
	Record     refRecord `cbor:"2,keyasint"`
}

type refChange struct{ c Change }

func (c *refChange) UnmarshalCBOR(data []byte) error {
	var w refChangeWire
	if err := decMode.Unmarshal(data, &w); err != nil {
		return wrapDecode(err)
	}
	if err := ValidateCollection(w.Collection); err != nil {
		return err
	}
	if w.Record.r.ID == "" {
		return fmt.Errorf("%w: change to %s has no record", ErrMalformed, w.Collection)
	}
	c.c = Change{Collection: w.Collection, Record: w.Record.r}
	return nil
}

func refDecodeRecord(data []byte) (Record, error) {
	var r refRecord
	if err := decMode.Unmarshal(data, &r); err != nil {
		return Record{}, wrapDecode(err)
	}
	return r.r, nil
}

func refDecodeChanges(data []byte) ([]Change, error) {
	var rcs []refChange
	if err := decMode.Unmarshal(data, &rcs); err != nil {
		return nil, wrapDecode(err)
	}
	if rcs == nil {
		return nil, nil
	}
	cs := make([]Change, len(rcs))
	for i := range rcs {
		cs[i] = rcs[i].c
	}
	return cs, nil
}

func sentinelOf(err error) error {
	for _, s := range []error{ErrMalformed, ErrInvalid, ErrTooLarge} {
		if errors.Is(err, s) {
			return s
		}
	}
	return nil
}

type fataler interface {
	Helper()
	Fatalf(format string, args ...any)
}

// agree fails unless both decoders accept with equal results, or both
// refuse with the same sentinel.
func agree(t fataler, what string, data []byte, want, got any, werr, gerr error) {
	t.Helper()
	if gerr != nil && sentinelOf(gerr) == nil {
		t.Fatalf("%s(%x): error %v wraps no sentinel", what, data, gerr)
	}
	switch {
	case werr == nil && gerr == nil:
		if !reflect.DeepEqual(want, got) {
			t.Fatalf("%s(%x): values differ:\nreference %#v\nfast      %#v", what, data, want, got)
		}
	case werr == nil || gerr == nil:
		t.Fatalf("%s(%x): reference error %v, fast error %v", what, data, werr, gerr)
	case sentinelOf(werr) != sentinelOf(gerr):
		t.Fatalf("%s(%x): reference error %v, fast error %v: sentinels differ", what, data, werr, gerr)
	}
}

// checkDifferential decodes data with both decoders through every entry
// point: DecodeRecord, (*Record).UnmarshalCBOR, (*Change).UnmarshalCBOR,
// DecodeChanges and Unmarshal into *Record and *Change.
func checkDifferential(t fataler, data []byte) {
	t.Helper()
	in := bytes.Clone(data)

	wr, werr := refDecodeRecord(data)
	gr, gerr := DecodeRecord(data)
	agree(t, "DecodeRecord", data, wr, gr, werr, gerr)

	var ur Record
	gerr = Unmarshal(data, &ur)
	if gerr != nil {
		ur = Record{}
	}
	agree(t, "Unmarshal(*Record)", data, wr, ur, werr, gerr)

	var rr refRecord
	werr = rr.UnmarshalCBOR(data)
	var fr Record
	gerr = fr.UnmarshalCBOR(data)
	if werr != nil {
		rr.r = Record{}
	}
	if gerr != nil {
		fr = Record{}
	}
	agree(t, "(*Record).UnmarshalCBOR", data, rr.r, fr, werr, gerr)

	var rc refChange
	werr = rc.UnmarshalCBOR(data)
	var fc Change
	gerr = fc.UnmarshalCBOR(data)
	if werr != nil {
		rc.c = Change{}
	}
	if gerr != nil {
		fc = Change{}
	}
	agree(t, "(*Change).UnmarshalCBOR", data, rc.c, fc, werr, gerr)

	var uc Change
	gerr = Unmarshal(data, &uc)
	if gerr != nil {
		uc = Change{}
	}
	agree(t, "Unmarshal(*Change)", data, rc.c, uc, werr, gerr)

	wcs, werr := refDecodeChanges(data)
	gcs, gerr := DecodeChanges(data)
	agree(t, "DecodeChanges", data, wcs, gcs, werr, gerr)

	if !bytes.Equal(in, data) {
		t.Fatalf("decoding modified its input")
	}
}

func genChanges() *rapid.Generator[[]Change] {
	return rapid.Custom(func(t *rapid.T) []Change {
		recs := rapid.SliceOfN(genRecord(), 0, 4).Draw(t, "records")
		cs := make([]Change, len(recs))
		for i, r := range recs {
			cs[i] = Change{Collection: rapid.SampledFrom([]string{"todos", "tenant42.notes", "_x"}).Draw(t, "coll"), Record: r}
		}
		return cs
	})
}

// genEncoding is a valid record, change or change batch encoding.
func genEncoding() *rapid.Generator[[]byte] {
	return rapid.Custom(func(t *rapid.T) []byte {
		switch rapid.IntRange(0, 2).Draw(t, "kind") {
		case 0:
			return AppendRecord(nil, genRecord().Draw(t, "record"))
		case 1:
			cs := genChanges().Draw(t, "changes")
			if len(cs) == 0 {
				return AppendChange(nil, Change{Collection: "c", Record: Record{ID: "r"}})
			}
			return AppendChange(nil, cs[0])
		}
		b, _ := EncodeChanges(genChanges().Draw(t, "changes"))
		return b
	})
}

func TestFastDecodeValidRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		r := genRecord().Draw(t, "record")
		b := AppendRecord(nil, r)
		got, err := DecodeRecord(b)
		if err != nil {
			t.Fatalf("DecodeRecord(%x): %v", b, err)
		}
		if !got.Equal(r) {
			t.Fatalf("round trip: got %+v, want %+v", got, r)
		}
		checkDifferential(t, b)

		cs := genChanges().Draw(t, "changes")
		cb, _ := EncodeChanges(cs)
		back, err := DecodeChanges(cb)
		if err != nil {
			t.Fatalf("DecodeChanges(%x): %v", cb, err)
		}
		if len(back) != len(cs) {
			t.Fatalf("got %d changes, want %d", len(back), len(cs))
		}
		for i := range cs {
			if back[i].Collection != cs[i].Collection || !back[i].Record.Equal(cs[i].Record) {
				t.Fatalf("change %d: got %+v, want %+v", i, back[i], cs[i])
			}
		}
		checkDifferential(t, cb)
	})
}

// TestFastDecodeMutations mutates valid encodings (truncation, byte flips,
// inserted and deleted bytes) and holds both decoders to the same answer.
func TestFastDecodeMutations(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		b := genEncoding().Draw(t, "encoding")
		for range rapid.IntRange(1, 4).Draw(t, "mutations") {
			if len(b) == 0 {
				break
			}
			i := rapid.IntRange(0, len(b)-1).Draw(t, "at")
			switch rapid.IntRange(0, 3).Draw(t, "op") {
			case 0:
				b = b[:i]
			case 1:
				b[i] = rapid.Byte().Draw(t, "byte")
			case 2:
				b = append(b[:i], append([]byte{rapid.Byte().Draw(t, "byte")}, b[i:]...)...)
			case 3:
				b = append(b[:i], b[i+1:]...)
			}
		}
		checkDifferential(t, b)
	})
}

// genNearEnvelope generates items shaped like records, changes and
// batches but with the freedoms and mistakes the reflection decoder
// judges one by one: non-shortest heads, unsorted, unknown, duplicate and
// odd-typed keys, nulls, wrong types, bad stamps and bad fields.
func genNearEnvelope(depth int) *rapid.Generator[[]byte] {
	return genNearEnvelopeKind(depth, -1)
}

func genNearEnvelopeKind(depth, kind int) *rapid.Generator[[]byte] {
	return rapid.Custom(func(t *rapid.T) []byte {
		if kind < 0 {
			kind = rapid.IntRange(0, 10).Draw(t, "kind")
		}
		if depth >= 3 && kind >= 6 {
			kind = rapid.IntRange(0, 5).Draw(t, "leaf")
		}
		switch kind {
		case 0:
			return rapid.SampledFrom([][]byte{
				{0xf6}, {0xf4}, {0xf5}, {0x00}, {0x01}, {0x20}, {0x18, 0x01}, {0x19, 0x00, 0x02},
				{0x1b, 0x80, 0, 0, 0, 0, 0, 0, 0}, {0x3b, 0x80, 0, 0, 0, 0, 0, 0, 0},
				{0x1a, 0xff, 0xff, 0xff, 0xff}, {0x1b, 0, 0, 0, 1, 0, 0, 0, 0},
				{0xf9, 0x3c, 0x00}, {0x40}, {0x41, 0x01}, {0x60}, {0x61, 0xff},
				{0x62, 0xc3, 0xa9}, {0x80}, {0xa0}, {0xf7}, {0xf0}, {0xc1, 0x00}, {0x9f, 0xff},
			}).Draw(t, "atom")
		case 1:
			return appendText(nil, rapid.SampledFrom([]string{"a", "r1", "todos", "x y", "a\x00", "", "_", ".x", "title", strings.Repeat("n", 257)}).Draw(t, "text"))
		case 2: // a stamp, possibly with nulls, wrong sizes or negative wall
			items := [][]byte{
				rapid.SampledFrom([][]byte{{0x01}, {0x18, 0x05}, {0xf6}, {0x20}, {0x00}, {0x61, 'a'}, {0x1b, 0x00, 0x20, 0, 0, 0, 0, 0, 0}}).Draw(t, "wall"),
				rapid.SampledFrom([][]byte{{0x00}, {0x02}, {0xf6}, {0x1a, 0xff, 0xff, 0xff, 0xff}, {0x1b, 0, 0, 0, 1, 0, 0, 0, 0}, {0x20}}).Draw(t, "logical"),
				rapid.SampledFrom([][]byte{{0x61, 'a'}, {0xf6}, {0x60}, {0x61, '.'}, {0x41, 'a'}, {0x78, 0x01, 'b'}, {0x61, 0xff}}).Draw(t, "replica"),
			}
			n := rapid.IntRange(2, 4).Draw(t, "n")
			b := []byte{0x80 | byte(n)}
			for i := range n {
				if i < 3 {
					b = append(b, items[i]...)
				} else {
					b = append(b, genValue().Draw(t, "value")...)
				}
			}
			return b
		case 3:
			return AppendRecord(nil, genRecord().Draw(t, "record"))
		case 4:
			f := genField().Draw(t, "field")
			return appendStamp(nil, f.Stamp, f.Value, f.Value != nil)
		case 5:
			return genValue().Draw(t, "value")
		case 6, 7: // an envelope-like map
			n := rapid.IntRange(0, 4).Draw(t, "pairs")
			b := []byte{0xa0 | byte(n)}
			for range n {
				b = append(b, rapid.SampledFrom([][]byte{
					{0x01}, {0x02}, {0x03}, {0x18, 0x01}, {0x18, 0x03}, {0x04}, {0x20}, {0x61, '1'},
					{0xf6}, {0xf5}, {0x41, 0x01}, {0x80}, {0x61, 'x'}, {0x61, 0xff}, {0xf9, 0x3c, 0x00},
					{0x3b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
				}).Draw(t, "key")...)
				b = append(b, genNearEnvelope(depth+1).Draw(t, "value")...)
			}
			return b
		case 8: // a field map
			n := rapid.IntRange(0, 4).Draw(t, "pairs")
			b := []byte{0xa0 | byte(n)}
			for range n {
				b = append(b, rapid.SampledFrom([][]byte{
					{0x61, 'a'}, {0x61, 'b'}, {0x60}, {0xf6}, {0x01}, {0x41, 'a'}, {0x61, 0x07}, {0x62, 0xc3, 0xa9}, {0x61, 0xff},
				}).Draw(t, "name")...)
				b = append(b, genNearEnvelope(depth+1).Draw(t, "field")...)
			}
			return b
		}
		if kind == 10 { // a record with a valid id and a perturbed stamp or field map
			b := []byte{0xa3, 0x01, 0x61, 'r', 0x02}
			b = append(b, genNearEnvelopeKind(depth+1, 2).Draw(t, "deleted")...)
			b = append(b, 0x03)
			return append(b, genNearEnvelopeKind(depth+1, 8).Draw(t, "fields")...)
		}
		n := rapid.IntRange(0, 3).Draw(t, "items")
		b := []byte{0x80 | byte(n)}
		for range n {
			b = append(b, genNearEnvelope(depth+1).Draw(t, "item")...)
		}
		return b
	})
}

func TestFastDecodeNearEnvelopes(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		checkDifferential(t, genNearEnvelope(0).Draw(t, "item"))
	})
}

// TestFastDecodeCases pins the leniencies and precedences the reflection
// decoder has and the fast one must keep.
func TestFastDecodeCases(t *testing.T) {
	f := appendStamp(nil, Stamp{Wall: 1, Replica: "a"}, []byte{0x01}, true)
	badField := appendStamp(nil, Stamp{Wall: 1, Replica: "a.b"}, []byte{0x01}, true) // ErrInvalid
	rec := func(parts ...[]byte) []byte {
		b := []byte{0xa0 | byte(len(parts)/2)}
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}
	fields := func(parts ...[]byte) []byte { return rec(parts...) }
	id := appendText(nil, "r")
	name := func(s string) []byte { return appendText(nil, s) }
	cases := []struct {
		name string
		data []byte
		want error // nil: accepted
	}{
		{"plain", rec([]byte{1}, id, []byte{3}, fields(name("f"), f)), nil},
		{"non-shortest key", rec([]byte{0x18, 1}, id), nil},
		{"unsorted keys", rec([]byte{3}, fields(name("f"), f), []byte{1}, id), nil},
		{"unsorted names", rec([]byte{1}, id, []byte{3}, fields(name("g"), f, name("f"), f)), nil},
		{"null delete stamp", rec([]byte{1}, id, []byte{2}, []byte{0xf6}), nil},
		{"null fields", rec([]byte{1}, id, []byte{3}, []byte{0xf6}), nil},
		{"empty fields", rec([]byte{1}, id, []byte{3}, []byte{0xa0}), nil},
		{"delete stamp with null logical", rec([]byte{1}, id, []byte{2}, []byte{0x83, 0x05, 0xf6, 0x61, 'a'}), nil},
		{"delete stamp non-shortest", rec([]byte{1}, id, []byte{2}, []byte{0x83, 0x18, 0x05, 0x00, 0x61, 'a'}), nil},
		{"delete stamp negative wall", rec([]byte{1}, id, []byte{2}, []byte{0x83, 0x20, 0x00, 0x61, 'a'}), ErrInvalid},
		{"delete stamp all null", rec([]byte{1}, id, []byte{2}, []byte{0x83, 0xf6, 0xf6, 0xf6}), ErrInvalid},
		{"null id", rec([]byte{1}, []byte{0xf6}), ErrInvalid},
		{"null record", []byte{0xf6}, ErrInvalid},
		{"field non-shortest", rec([]byte{1}, id, []byte{3}, fields(name("f"), []byte{0x84, 0x18, 0x01, 0x00, 0x61, 'a', 0x01})), ErrInvalid},
		{"field null", rec([]byte{1}, id, []byte{3}, fields(name("f"), []byte{0xf6})), ErrMalformed},
		{"null name", rec([]byte{1}, id, []byte{3}, fields([]byte{0xf6}, f)), ErrInvalid},
		{"duplicate name", rec([]byte{1}, id, []byte{3}, fields(name("f"), f, name("f"), f)), ErrMalformed},
		{"duplicate name after a bad field", rec([]byte{1}, id, []byte{3}, fields(name("g"), badField, name("f"), f, name("f"), f)), ErrMalformed},
		{"bad field then duplicate of it", rec([]byte{1}, id, []byte{3}, fields(name("f"), badField, name("f"), f)), ErrInvalid},
		{"bad field then type error", rec([]byte{1}, id, []byte{3}, fields(name("f"), badField), []byte{2}, []byte{0x01}), ErrInvalid},
		{"type error then bad field", rec([]byte{2}, []byte{0x01}, []byte{1}, id, []byte{3}, fields(name("f"), badField)), ErrMalformed},
		{"bad field then unknown key", rec([]byte{1}, id, []byte{3}, fields(name("f"), badField), []byte{4}, []byte{0}), ErrMalformed},
		{"bad field then byte-string key", rec([]byte{1}, id, []byte{3}, fields(name("f"), badField), []byte{0x41, 1}, []byte{0}), ErrInvalid},
		{"bad field then duplicate key", rec([]byte{1}, id, []byte{3}, fields(name("f"), badField), []byte{1}, id), ErrMalformed},
		{"bad field then invalid UTF-8 key", rec([]byte{1}, id, []byte{3}, fields(name("f"), badField), []byte{0x61, 0xff}, []byte{0}), ErrInvalid},
		{"bad field then invalid UTF-8 name", rec([]byte{1}, id, []byte{3}, fields(name("f"), badField, []byte{0x61, 0xff}, f)), ErrInvalid},
		{"delete stamp negative logical", rec([]byte{1}, id, []byte{2}, []byte{0x83, 0x05, 0x20, 0x61, 'a'}), ErrMalformed},
		{"delete stamp logical too big", rec([]byte{1}, id, []byte{2}, []byte{0x83, 0x05, 0x1b, 0, 0, 0, 1, 0, 0, 0, 0, 0x61, 'a'}), ErrMalformed},
		{"delete stamp wall past int64", rec([]byte{1}, id, []byte{2}, []byte{0x83, 0x1b, 0x80, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x61, 'a'}), ErrMalformed},
		{"delete stamp of 4", rec([]byte{1}, id, []byte{2}, []byte{0x84, 0x05, 0x00, 0x61, 'a', 0x01}), ErrMalformed},
		{"delete stamp as map", rec([]byte{1}, id, []byte{2}, []byte{0xa0}), ErrMalformed},
		{"delete stamp byte replica", rec([]byte{1}, id, []byte{2}, []byte{0x83, 0x05, 0x00, 0x41, 'a'}), ErrMalformed},
		{"delete stamp invalid UTF-8 replica", rec([]byte{1}, id, []byte{2}, []byte{0x83, 0x05, 0x00, 0x61, 0xff}), ErrMalformed},
		{"text key", rec([]byte{0x61, '1'}, id), ErrMalformed},
		{"trailing byte", append(rec([]byte{1}, id), 0), ErrMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeRecord(tc.data)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("DecodeRecord(%x) = %v, want %v", tc.data, err, tc.want)
			}
			checkDifferential(t, tc.data)
			batch := append([]byte{0x81, 0xa2, 0x01, 0x61, 'c', 0x02}, tc.data...)
			checkDifferential(t, batch)
		})
	}
}

// TestFastDecodeOwnership checks that decoded values do not alias the
// input or each other.
func TestFastDecodeOwnership(t *testing.T) {
	r := benchRecord("r", 3, 1, "a")
	b := AppendRecord(nil, r)
	got, err := DecodeRecord(b)
	if err != nil {
		t.Fatal(err)
	}
	clear(b)
	if !got.Equal(r) {
		t.Fatalf("decoded record changed with its input: %+v", got)
	}
	f := got.Fields["field00"]
	_ = append(f.Value, 0xff)
	if !got.Equal(r) {
		t.Fatalf("appending to one value changed another: %+v", got)
	}
}

func TestFastDecodeLimits(t *testing.T) {
	// One item per limit, at and past it.
	nest := func(n int) []byte { return append(bytes.Repeat([]byte{0x81}, n), 0x00) }
	value := func(v []byte) []byte {
		return AppendRecord(nil, Record{ID: "r", Fields: map[string]Field{"f": {Stamp: Stamp{Wall: 1, Replica: "a"}, Value: v}}})
	}
	many := func(unknownKey bool) []byte {
		var b []byte
		if unknownKey {
			b = appendHead(b, majorMap, 3)
		} else {
			b = appendHead(b, majorMap, 2)
		}
		b = append(b, 1)
		b = appendText(b, "r")
		b = append(b, 3)
		b = appendHead(b, majorMap, MaxFieldsPerRecord+1)
		for i := range MaxFieldsPerRecord + 1 {
			b = appendText(b, fmt.Sprintf("f%d", i))
			b = appendStamp(b, Stamp{Wall: 1, Replica: "a"}, []byte{0}, true)
		}
		if unknownKey {
			b = append(b, 0x04, 0x00) // an unknown key after the fields wins over ErrTooLarge
		}
		return b
	}
	// A record over MaxRecordBytes is ErrTooLarge whatever else is wrong
	// with it, and so is a value over MaxValueBytes.
	half := EncodeValueMust(strings.Repeat("y", MaxValueBytes-10))
	huge := AppendRecord(nil, Record{ID: "h", Fields: map[string]Field{
		"a": {Stamp: Stamp{Wall: 1, Replica: "a"}, Value: half},
		"b": {Stamp: Stamp{Wall: 1, Replica: "a"}, Value: half},
		"c": {Stamp: Stamp{Wall: 1, Replica: "a"}, Value: half},
	}})
	hugeUnknown := append([]byte{0xa3}, huge[1:]...)
	hugeUnknown = append(hugeUnknown, 0x04, 0x00)
	bigBad := append([]byte{0x82, 0x18, 0x01}, EncodeValueMust(strings.Repeat("z", MaxValueBytes))...) // non-shortest, and too large
	for _, tc := range []struct {
		data []byte
		want error
	}{
		{huge, ErrTooLarge},
		{hugeUnknown, ErrTooLarge},
		{value(bigBad), ErrTooLarge},
		{value(append([]byte{0x82, 0x18, 0x01}, half...)), nil}, // non-shortest but small: normalized
	} {
		if _, err := DecodeRecord(tc.data); !errors.Is(err, tc.want) {
			t.Errorf("DecodeRecord: %v, want %v", err, tc.want)
		}
		checkDifferential(t, tc.data)
		checkDifferential(t, append([]byte{0x81, 0xa2, 0x01, 0x61, 'c', 0x02}, tc.data...))
	}
	for _, data := range [][]byte{
		value(nest(MaxValueNestedLevels)), value(nest(MaxValueNestedLevels + 1)),
		nest(MaxNestedLevels - 1), nest(MaxNestedLevels), nest(MaxNestedLevels + 1),
		value(EncodeValueMust(strings.Repeat("x", MaxValueBytes-3))), value(EncodeValueMust(strings.Repeat("x", MaxValueBytes))),
		many(false), many(true),
		appendHead(nil, majorArray, MaxContainerItems+1),
	} {
		checkDifferential(t, data)
	}
}

func EncodeValueMust(v any) []byte {
	b, err := EncodeValue(v)
	if err != nil {
		panic(err)
	}
	return b
}

// TestFastDecodeVectors runs every encoding in testdata/vectors.json
// through both decoders.
func TestFastDecodeVectors(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("testdata", "vectors.json"))
	if err != nil {
		t.Fatal(err)
	}
	var vf vectorFile
	if err := json.Unmarshal(raw, &vf); err != nil {
		t.Fatal(err)
	}
	var hexes []string
	for _, v := range vf.Values {
		hexes = append(hexes, v.Hex)
	}
	for _, m := range vf.Merges {
		hexes = append(hexes, m.AHex, m.BHex, m.WantHex)
	}
	for _, r := range vf.Records {
		hexes = append(hexes, r.Hex)
	}
	for _, iv := range vf.Invalid {
		hexes = append(hexes, iv.Hex)
	}
	if len(hexes) < 20 {
		t.Fatalf("only %d vectors", len(hexes))
	}
	for _, h := range hexes {
		b, err := hex.DecodeString(h)
		if err != nil {
			t.Fatalf("vector %q: %v", h, err)
		}
		checkDifferential(t, b)
	}
}

// corpusInputs reads every []byte input of the fuzz corpus in
// ../fuzz/testdata/fuzz.
func corpusInputs(t testing.TB) [][]byte {
	dirs, err := filepath.Glob(filepath.Join("..", "fuzz", "testdata", "fuzz", "*", "*"))
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, path := range dirs {
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(raw), "\n") {
			line = strings.TrimSpace(line)
			if !strings.HasPrefix(line, "[]byte(") {
				continue
			}
			s, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(line, "[]byte("), ")"))
			if err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			out = append(out, []byte(s))
		}
	}
	return out
}

func TestFastDecodeFuzzCorpus(t *testing.T) {
	inputs := corpusInputs(t)
	if len(inputs) < 100 {
		t.Fatalf("only %d corpus inputs", len(inputs))
	}
	for _, in := range inputs {
		checkDifferential(t, in)
	}
}

// FuzzDecodeDifferential holds the hand-written decoder to the reflection
// decoder on arbitrary input.
func FuzzDecodeDifferential(f *testing.F) {
	for _, in := range corpusInputs(f) {
		f.Add(in)
	}
	cs := benchBatch(3)
	b, _ := EncodeChanges(cs)
	f.Add(b)
	f.Add(AppendRecord(nil, benchRecord("r", 2, 5, "a")))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDifferential(t, data)
	})
}

func BenchmarkDecodeBatch1000Reflect(b *testing.B) {
	data, err := EncodeChanges(benchBatch(1000))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := refDecodeChanges(data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeRecord10(b *testing.B) {
	data := AppendRecord(nil, benchRecord("todo-1", 10, 1_732_464_000_000, "replica-1"))
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeRecord(data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeRecord10Reflect(b *testing.B) {
	data := AppendRecord(nil, benchRecord("todo-1", 10, 1_732_464_000_000, "replica-1"))
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := refDecodeRecord(data); err != nil {
			b.Fatal(err)
		}
	}
}
