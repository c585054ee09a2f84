package crdt

import (
	"encoding/json"
	"math"
	"math/big"
	"reflect"
	"testing"
	"time"
)

// TestValueMapping pins what each Go value becomes after a trip through a
// field: the JSON-friendly types docs/embedding.md lists.
func TestValueMapping(t *testing.T) {
	when := time.Date(2025, 11, 24, 9, 30, 15, 123456789, time.FixedZone("", 3600))
	for _, tc := range []struct {
		name string
		in   any
		want any
	}{
		{"null", nil, nil},
		{"bool", true, true},
		{"small int", 42, int64(42)},
		{"negative int", -7, int64(-7)},
		{"uint8", uint8(200), int64(200)},
		{"max int64", int64(math.MaxInt64), int64(math.MaxInt64)},
		{"above int64", uint64(math.MaxUint64), uint64(math.MaxUint64)},
		{"float", 1.5, 1.5},
		{"whole float", 2.0, 2.0},
		{"float32", float32(0.25), 0.25},
		{"string", "héllo", "héllo"},
		{"bytes", []byte{0, 1, 255}, []byte{0, 1, 255}},
		{"time", when, "2025-11-24T09:30:15.123456789+01:00"},
		{"array", []any{1, "two", []int{3}}, []any{int64(1), "two", []any{int64(3)}}},
		{"object", map[string]any{"a": map[string]int{"b": 1}}, map[string]any{"a": map[string]any{"b": int64(1)}}},
		{"struct", struct {
			Name string `json:"name"`
			N    int    `json:"n,omitempty"`
		}{Name: "x"}, map[string]any{"name": "x"}},
		{"int keys", map[int]string{1: "a"}, map[any]any{int64(1): "a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := EncodeValue(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if err := CanonicalValue(b); err != nil {
				t.Fatalf("EncodeValue gave a value CanonicalValue refuses: %v", err)
			}
			var got any
			if err := DecodeValue(b, &got); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %#v, want %#v", got, tc.want)
			}
		})
	}
	b := []byte{0x3b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff} // -2^64
	var got any
	if err := DecodeValue(b, &got); err != nil {
		t.Fatal(err)
	}
	want, _ := new(big.Int).SetString("-18446744073709551616", 10)
	if g, ok := got.(*big.Int); !ok || g.Cmp(want) != 0 {
		t.Fatalf("got %#v, want *big.Int %v", got, want)
	}
	if _, err := json.Marshal(got); err != nil {
		t.Fatalf("json.Marshal(%v): %v", got, err)
	}
}

// TestValuesJSONRoundTrip writes documents with nested objects, integers,
// floats, bytes and times as fields, reads them back as maps and as
// structs, and requires the JSON of each to equal the JSON of what was
// written.
func TestValuesJSONRoundTrip(t *testing.T) {
	type item struct {
		SKU   string  `json:"sku"`
		Qty   int     `json:"qty"`
		Price float64 `json:"price"`
	}
	type order struct {
		ID       string         `json:"id"`
		Total    int64          `json:"total"`
		Ratio    float64        `json:"ratio"`
		Blob     []byte         `json:"blob"`
		Placed   time.Time      `json:"placed"`
		Items    []item         `json:"items"`
		Customer map[string]any `json:"customer"`
		Tags     []string       `json:"tags"`
		Note     *string        `json:"note"`
	}
	placed := time.Date(2025, 11, 24, 9, 30, 15, 500_000_000, time.UTC)
	orders := []order{
		{ID: "o1", Total: -9007199254740993, Ratio: 0.1, Blob: []byte("\x00\xffbin"), Placed: placed,
			Items:    []item{{"a", 2, 9.99}, {"b", 1, 100}},
			Customer: map[string]any{"name": "Ada", "address": map[string]any{"city": "London", "zip": "N1"}, "vip": true},
			Tags:     []string{"x", "y"}},
		{ID: "o2", Total: 0, Ratio: 1e300, Blob: []byte{}, Placed: placed.In(time.FixedZone("", -5*3600)),
			Customer: map[string]any{}, Tags: []string{}},
	}
	for _, o := range orders {
		// Written as the fields of a record, from the struct.
		fields, err := ValuesOf(o)
		if err != nil {
			t.Fatal(err)
		}
		want, err := json.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		// Read back as a map: its JSON equals the struct's.
		doc := map[string]any{}
		for name, b := range fields {
			var v any
			if err := DecodeValue(b, &v); err != nil {
				t.Fatal(err)
			}
			doc[name] = v
		}
		got, err := json.Marshal(doc)
		if err != nil {
			t.Fatalf("json.Marshal of the decoded document: %v", err)
		}
		if !jsonEqual(t, got, want) {
			t.Fatalf("map JSON:\n got  %s\n want %s", got, want)
		}
		// Read back into the struct: equal JSON again.
		var back order
		if err := DecodeValues(fields, &back); err != nil {
			t.Fatal(err)
		}
		got, _ = json.Marshal(back)
		if string(got) != string(want) {
			t.Fatalf("struct JSON:\n got  %s\n want %s", got, want)
		}
		if !back.Placed.Equal(o.Placed) {
			t.Fatalf("time: got %v, want %v", back.Placed, o.Placed)
		}
		// And a JSON document decoded by encoding/json (float64 numbers)
		// is written and read to the same JSON.
		var fromJSON map[string]any
		if err := json.Unmarshal(want, &fromJSON); err != nil {
			t.Fatal(err)
		}
		fields2, err := ValuesOf(fromJSON)
		if err != nil {
			t.Fatal(err)
		}
		var back2 map[string]any
		if err := DecodeValues(fields2, &back2); err != nil {
			t.Fatal(err)
		}
		got, _ = json.Marshal(back2)
		if !jsonEqual(t, got, want) {
			t.Fatalf("JSON document:\n got  %s\n want %s", got, want)
		}
	}
}

func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatal(err)
	}
	return reflect.DeepEqual(x, y)
}
