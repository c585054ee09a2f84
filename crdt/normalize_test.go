package crdt

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/fxamacker/cbor/v2"
	"pgregory.net/rapid"
)

func TestNormalizeValueCases(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
		err            error
	}{
		{"canonical int", "182a", "182a", nil},
		{"int in a wider head", "19002a", "182a", nil},
		{"negative int in 8 bytes", "3b0000000000000000", "20", nil},
		{"0.5 as a float64", "fb3fe0000000000000", "f93800", nil},
		{"1.1 as a float32 stays", "fa3f8ccccd", "fa3f8ccccd", nil},
		{"1.1 as a float64 stays a float64", "fb3ff199999999999a", "fb3ff199999999999a", nil},
		{"a NaN with payload", "fb7ff8000000000001", "f97e00", nil},
		{"infinity as a float64", "fb7ff0000000000000", "f97c00", nil},
		{"map keys out of order", "a2616202616101", "a2616101616202", nil},
		{"nested map keys out of order inside an array", "81a2616202616101", "81a2616101616202", nil},
		{"text with a long head", "7800", "60", nil},
		{"duplicate keys once canonical", "a2616101780161 02", "", ErrInvalid},
		{"tag", "c11a00000001", "", ErrMalformed},
		{"undefined", "f7", "", ErrMalformed},
		{"indefinite array", "9f01ff", "", ErrMalformed},
		{"two items", "0101", "", ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in, err := hex.DecodeString(stripSpaces(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			got, err := NormalizeValue(in)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("got %x, %v; want %v", got, err, tc.err)
				}
				return
			}
			if err != nil || hex.EncodeToString(got) != tc.want {
				t.Fatalf("got %x, %v; want %s", got, err, tc.want)
			}
			if CanonicalValue(got) != nil {
				t.Fatalf("%x is not canonical", got)
			}
		})
	}
}

func stripSpaces(s string) string { return string(bytes.ReplaceAll([]byte(s), []byte(" "), nil)) }

// loose encodes like a CBOR library that makes no effort: map keys in
// insertion (random) order, floats as float64, no shortest forms forced.
var loose = func() cbor.EncMode {
	em, err := cbor.EncOptions{Sort: cbor.SortNone, ShortestFloat: cbor.ShortestFloatNone}.EncMode()
	if err != nil {
		panic(err)
	}
	return em
}()

// genModelValue draws a value of the value model.
func genModelValue(t *rapid.T, depth int) any {
	kinds := 6
	if depth < 3 {
		kinds = 8
	}
	switch rapid.IntRange(0, kinds-1).Draw(t, "kind") {
	case 0:
		return nil
	case 1:
		return rapid.Bool().Draw(t, "bool")
	case 2:
		return rapid.Int64().Draw(t, "int")
	case 3:
		return rapid.Float64().Draw(t, "float")
	case 4:
		return rapid.String().Draw(t, "text")
	case 5:
		return rapid.SliceOf(rapid.Byte()).Draw(t, "bytes")
	case 6:
		n := rapid.IntRange(0, 4).Draw(t, "len")
		a := make([]any, n)
		for i := range a {
			a[i] = genModelValue(t, depth+1)
		}
		return a
	}
	n := rapid.IntRange(0, 4).Draw(t, "len")
	m := map[string]any{}
	for range n {
		m[rapid.String().Draw(t, "key")] = genModelValue(t, depth+1)
	}
	return m
}

// Any encoding of a value normalizes to the value's deterministic encoding,
// and normalizing is idempotent and free for canonical bytes.
func TestNormalizeValueMatchesDeterministicEncoding(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		v := genModelValue(t, 0)
		want, err := EncodeValue(v)
		if err != nil {
			t.Skip(err)
		}
		in, err := loose.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		got, err := NormalizeValue(in)
		if err != nil {
			t.Fatalf("normalize %x: %v", in, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("normalize %x:\n got %x\nwant %x", in, got, want)
		}
		again, err := NormalizeValue(got)
		if err != nil || &again[0] != &got[0] {
			t.Fatalf("normalizing canonical bytes copied or failed: %v", err)
		}
	})
}
