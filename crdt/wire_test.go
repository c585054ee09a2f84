package crdt

import (
	"bytes"
	"errors"
	"math"
	"testing"

	"github.com/fxamacker/cbor/v2"
	"pgregory.net/rapid"
)

// reflectEncodeRecord is the reference: the record's wire struct encoded by
// fxamacker/cbor in core deterministic mode.
func reflectEncodeRecord(t *rapid.T, r Record) []byte {
	type fieldWire []any
	w := struct {
		ID      string               `cbor:"1,keyasint"`
		Deleted []any                `cbor:"2,keyasint,omitempty"`
		Fields  map[string]fieldWire `cbor:"3,keyasint,omitempty"`
	}{ID: r.ID}
	if !r.Deleted.IsZero() {
		w.Deleted = []any{r.Deleted.Wall, r.Deleted.Logical, r.Deleted.Replica}
	}
	if len(r.Fields) > 0 {
		w.Fields = map[string]fieldWire{}
		for name, f := range r.Fields {
			fw := fieldWire{f.Stamp.Wall, f.Stamp.Logical, f.Stamp.Replica}
			if f.Value != nil {
				fw = append(fw, cbor.RawMessage(f.Value))
			}
			w.Fields[name] = fw
		}
	}
	b, err := encMode.Marshal(w)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestAppendRecordMatchesReflection(t *testing.T) {
	names := rapid.StringMatching(`[a-zé]{1,30}`)
	rapid.Check(t, func(t *rapid.T) {
		r := genRecord().Draw(t, "record")
		for _, n := range rapid.SliceOfN(names, 0, 6).Draw(t, "names") {
			if r.Fields == nil {
				r.Fields = map[string]Field{}
			}
			r.Fields[n] = genField().Draw(t, "field")
		}
		r.Deleted.Wall = rapid.Int64Range(0, MaxWall).Draw(t, "big wall")
		if r.Deleted.Wall > 0 {
			r.Deleted.Replica = "z"
		}
		got, want := AppendRecord(nil, r), reflectEncodeRecord(t, r)
		if !bytes.Equal(got, want) {
			t.Fatalf("got %x, want %x", got, want)
		}
	})
}

// reflectCanonical is the reference check: decode into any, re-encode,
// compare.
func reflectCanonical(v []byte) bool {
	var x any
	if err := decMode.Unmarshal(v, &x); err != nil {
		return false
	}
	b, err := encMode.Marshal(x)
	return err == nil && bytes.Equal(b, v)
}

func genAny(depth int) *rapid.Generator[any] {
	return rapid.Custom(func(t *rapid.T) any {
		k := rapid.IntRange(0, 8).Draw(t, "kind")
		if depth > 2 && k >= 7 {
			k = 0
		}
		switch k {
		case 0:
			return rapid.Int64().Draw(t, "int")
		case 1:
			return rapid.Uint64().Draw(t, "uint")
		case 2:
			return rapid.Float64().Draw(t, "float")
		case 3:
			return float64(rapid.Float32().Draw(t, "float32"))
		case 4:
			return rapid.String().Draw(t, "string")
		case 5:
			return rapid.SliceOf(rapid.Byte()).Draw(t, "bytes")
		case 6:
			return rapid.SampledFrom([]any{nil, true, false, math.NaN(), math.Inf(1), math.Copysign(0, -1)}).Draw(t, "special")
		case 7:
			return rapid.SliceOfN(genAny(depth+1), 0, 4).Draw(t, "array")
		}
		return rapid.MapOfN(rapid.String(), genAny(depth+1), 0, 4).Draw(t, "map")
	})
}

func TestCanonicalValueMatchesReflection(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		b, err := encMode.Marshal(genAny(0).Draw(t, "value"))
		if err != nil {
			t.Fatal(err)
		}
		if err := CanonicalValue(b); err != nil {
			t.Fatalf("canonical encoding %x refused: %v", b, err)
		}
	})
	// Mutated bytes: the walker and the reference must agree on every input
	// the reference can decode.
	rapid.Check(t, func(t *rapid.T) {
		b, _ := encMode.Marshal(genAny(0).Draw(t, "value"))
		if len(b) > 0 {
			i := rapid.IntRange(0, len(b)-1).Draw(t, "pos")
			b[i] = rapid.Byte().Draw(t, "byte")
		}
		got := CanonicalValue(b) == nil
		if want := reflectCanonical(b); got != want {
			t.Fatalf("CanonicalValue(%x) accepts=%v, reference accepts=%v", b, got, want)
		}
	})
}

func TestCanonicalValueTable(t *testing.T) {
	tests := []struct {
		hex  string
		want error
	}{
		{"f97e00", nil}, {"f97e01", ErrInvalid}, {"fa7fc00000", ErrInvalid}, {"fa47c35040", nil},
		{"fa3f800000", ErrInvalid}, {"fb3ff199999999999a", nil}, {"fb3ff8000000000000", ErrInvalid},
		{"1817", ErrInvalid}, {"1818", nil}, {"5f4100ff", ErrMalformed}, {"c100", ErrMalformed},
		{"f7", ErrMalformed}, {"f820", ErrMalformed}, {"a2616101616101", ErrMalformed}, {"62c328", ErrMalformed},
		{"00ff", ErrMalformed}, {"9a00010000", ErrMalformed},
	}
	for _, tt := range tests {
		b := make([]byte, len(tt.hex)/2)
		for i := range b {
			var x byte
			for _, c := range tt.hex[2*i : 2*i+2] {
				x <<= 4
				switch {
				case c >= '0' && c <= '9':
					x |= byte(c - '0')
				default:
					x |= byte(c-'a') + 10
				}
			}
			b[i] = x
		}
		err := CanonicalValue(b)
		if (tt.want == nil) != (err == nil) || (tt.want != nil && !errors.Is(err, tt.want)) {
			t.Errorf("CanonicalValue(%s): got %v, want %v", tt.hex, err, tt.want)
		}
	}
}
