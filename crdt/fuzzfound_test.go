package crdt

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
)

// TestValueNestingFitsEveryEnvelope is the regression test for values that
// CanonicalValue accepted but whose record or change batch then failed to
// decode, because the envelope's levels count against MaxNestedLevels too:
// a value nested 20 levels passed DecodeRecord but not DecodeChanges, so a
// stored record could poison every later pull. Now every accepted value
// decodes inside a pull page, the deepest message that carries one.
func TestValueNestingFitsEveryEnvelope(t *testing.T) {
	for _, container := range []struct {
		name string
		open []byte
	}{
		{"array", []byte{0x81}},          // [x]
		{"map", []byte{0xa1, 0x61, 'k'}}, // {"k": x}
	} {
		for depth := 0; depth <= MaxNestedLevels+1; depth++ {
			t.Run(fmt.Sprintf("%s/%d", container.name, depth), func(t *testing.T) {
				v := append(bytes.Repeat(container.open, depth), 0x00)
				err := CanonicalValue(v)
				if wantOK := depth <= MaxValueNestedLevels; (err == nil) != wantOK {
					t.Fatalf("CanonicalValue of %d levels: error %v, want accepted=%v", depth, err, wantOK)
				}
				if err != nil {
					if !errors.Is(err, ErrMalformed) {
						t.Fatalf("error %v does not wrap ErrMalformed", err)
					}
					return
				}
				rec := SetField("r", "f", v, Stamp{Wall: 1, Replica: "a"})
				if err := rec.Validate(); err != nil {
					t.Fatalf("record: %v", err)
				}
				batch, _ := EncodeChanges([]Change{{Collection: "c", Record: rec}})
				if _, err := DecodeChanges(batch); err != nil {
					t.Fatalf("change batch: %v", err)
				}
				// A pull page: {1: collection, 2: [[seq, record]], 3: next, 4: more}.
				page := append([]byte{0xa4, 0x01, 0x61, 'c', 0x02, 0x81, 0x82, 0x01}, AppendRecord(nil, rec)...)
				page = append(page, 0x03, 0x01, 0x04, 0xf4)
				var x any
				if err := Unmarshal(page, &x); err != nil {
					t.Fatalf("pull page: %v", err)
				}
			})
		}
	}
}

// TestChangeWithoutRecord is the regression test for a change map without
// its record (key 2): it decoded to a change with an empty record id, which
// re-encoded to bytes that no longer decode. Found by FuzzDecodeChanges.
func TestChangeWithoutRecord(t *testing.T) {
	for _, tc := range []struct {
		name string
		hex  []byte
	}{
		{"batch", []byte{0x81, 0xa1, 0x01, 0x61, '0'}},                         // [{1: "0"}]
		{"empty map", []byte{0x81, 0xa0}},                                      // [{}]
		{"record without id", []byte{0x81, 0xa2, 0x01, 0x61, 'c', 0x02, 0xa0}}, // [{1: "c", 2: {}}]
	} {
		t.Run(tc.name, func(t *testing.T) {
			cs, err := DecodeChanges(tc.hex)
			if err == nil {
				t.Fatalf("DecodeChanges(%x) = %+v, want an error", tc.hex, cs)
			}
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v wraps neither ErrMalformed nor ErrInvalid", err)
			}
		})
	}
}
