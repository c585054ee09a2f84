package crdt

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
)

var update = flag.Bool("update", false, "rewrite testdata/vectors.json from the cases in vectors_test.go")

// The vectors file is the contract between this package and every other
// implementation of the rules (the browser client). It is generated from the
// cases below with -update and checked against them otherwise.

type vectorFile struct {
	Comment string         `json:"comment"`
	Values  []valueVector  `json:"values"`
	Order   []orderVector  `json:"stamp_order"`
	Clocks  []clockVector  `json:"clocks"`
	Merges  []mergeVector  `json:"merges"`
	Records []recordVector `json:"records"`
	Invalid []invalidVec   `json:"invalid"`
	// Normalized are records whose field values are not in deterministic
	// encoding: decoders accept them and hold the values canonically.
	Normalized []normalizedVec `json:"normalized"`
	// Envelopes are pull answers {1: [], 2: h'010203', key: true} with one
	// more key of each kind: read with it ignored (error ""), or malformed.
	Envelopes []envelopeVec `json:"envelopes"`
}

type envelopeVec struct {
	Name  string `json:"name"`
	Hex   string `json:"hex"`
	Error string `json:"error"` // "" when the key is ignored, else "malformed"
}

type normalizedVec struct {
	Name    string `json:"name"`
	Hex     string `json:"hex"`      // the record as a client may send it
	WantHex string `json:"want_hex"` // the record as every decoder holds it
}

type valueVector struct {
	Name string          `json:"name"`
	JSON json.RawMessage `json:"json"`
	Hex  string          `json:"hex"`
}

type orderVector struct {
	A   []any `json:"a"`
	B   []any `json:"b"`
	Cmp int   `json:"cmp"`
}

type clockStep struct {
	Op     string  `json:"op"` // "now" or "observe"
	Wall   int64   `json:"wall"`
	Remote []int64 `json:"remote,omitempty"` // [wall, logical] for observe
	Want   []int64 `json:"want"`             // clock state after the step: [wall, logical]
	Error  string  `json:"error,omitempty"`  // "clock_drift", "counter_overflow", "invalid"
}

type clockVector struct {
	Name       string      `json:"name"`
	Replica    string      `json:"replica"`
	MaxDriftMS int64       `json:"max_drift_ms"`
	Start      []int64     `json:"start"`
	Steps      []clockStep `json:"steps"`
}

type mergeVector struct {
	Name    string          `json:"name"`
	A       json.RawMessage `json:"a"`
	B       json.RawMessage `json:"b"`
	Want    json.RawMessage `json:"want"`
	AHex    string          `json:"a_hex"`
	BHex    string          `json:"b_hex"`
	WantHex string          `json:"want_hex"`
	Changed bool            `json:"changed"` // whether merging b into a changes a
	Exists  bool            `json:"exists"`  // whether the merged record exists
}

type recordVector struct {
	Name   string          `json:"name"`
	Record json.RawMessage `json:"record"`
	Hex    string          `json:"hex"`
}

type invalidVec struct {
	Name  string `json:"name"`
	Kind  string `json:"kind"` // "record", "changes" or "value"
	Hex   string `json:"hex"`
	Error string `json:"error"` // "malformed", "invalid" or "too_large"
}

// valueJSON describes a CBOR value in JSON for other implementations:
// integers and non-integral numbers as JSON numbers, strings, booleans,
// null, arrays, objects; and tagged forms for what JSON lacks:
// {"$bytes": hex}, {"$float": "NaN"|"Infinity"|"-Infinity"|"-0"},
// {"$int": "decimal"} for integers outside the JavaScript safe range.
func valueJSON(v any) any {
	switch x := v.(type) {
	case nil, bool, string:
		return x
	case uint64:
		if x > 1<<53-1 {
			return map[string]string{"$int": fmt.Sprint(x)}
		}
		return x
	case int64:
		if x < -(1<<53-1) || x > 1<<53-1 {
			return map[string]string{"$int": fmt.Sprint(x)}
		}
		return x
	case float64:
		switch {
		case math.IsNaN(x):
			return map[string]string{"$float": "NaN"}
		case math.IsInf(x, 1):
			return map[string]string{"$float": "Infinity"}
		case math.IsInf(x, -1):
			return map[string]string{"$float": "-Infinity"}
		case x == 0 && math.Signbit(x):
			return map[string]string{"$float": "-0"}
		case x == math.Trunc(x) && math.Abs(x) <= 1<<53:
			// An integral float: JavaScript would encode the number as an
			// integer, so the vector says it is a float explicitly.
			return map[string]any{"$float": x}
		}
		return x
	case []byte:
		return map[string]string{"$bytes": hex.EncodeToString(x)}
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = valueJSON(e)
		}
		return out
	case map[string]any:
		out := map[string]any{}
		for k, e := range x {
			out[k] = valueJSON(e)
		}
		return out
	}
	panic(fmt.Sprintf("valueJSON: unexpected %T", v))
}

func describeValue(t *testing.T, b []byte) any {
	t.Helper()
	var v any
	if err := DecodeValue(b, &v); err != nil {
		t.Fatalf("decode value %x: %v", b, err)
	}
	return valueJSON(v)
}

func stampJSON(s Stamp) []any { return []any{s.Wall, s.Logical, s.Replica} }

func describeRecord(t *testing.T, r Record) json.RawMessage {
	t.Helper()
	m := map[string]any{"id": r.ID}
	if !r.Deleted.IsZero() {
		m["deleted"] = stampJSON(r.Deleted)
	}
	fields := map[string]any{}
	for name, f := range r.Fields {
		fd := map[string]any{"stamp": stampJSON(f.Stamp)}
		if f.Value != nil {
			fd["value"] = describeValue(t, f.Value)
		}
		fields[name] = fd
	}
	m["fields"] = fields
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func val(t *testing.T, v any) []byte {
	t.Helper()
	b, err := EncodeValue(v)
	if err != nil {
		t.Fatalf("encode %v: %v", v, err)
	}
	return b
}

func buildVectors(t *testing.T) vectorFile {
	st := func(w int64, l uint32, r string) Stamp { return Stamp{Wall: w, Logical: l, Replica: r} }
	vf := vectorFile{Comment: "Generated by `go test ./crdt -run TestVectors -update`; do not edit by hand. " +
		"Records are described with stamps as [wall, logical, replica] and values in the JSON forms of valueJSON in vectors_test.go."}

	values := []struct {
		name string
		v    any
	}{
		{"zero", 0}, {"small int", 23}, {"int one byte", 24}, {"int 255", 255}, {"int 256", 256},
		{"int 65536", 65536}, {"int 2^32", int64(1) << 32}, {"max safe int", int64(1<<53 - 1)},
		{"uint64 max", uint64(math.MaxUint64)}, {"negative one", -1}, {"negative 25", -25},
		{"negative 2^32", -(int64(1) << 32)}, {"min int64", int64(math.MinInt64)},
		{"float half", 0.5}, {"float 1.1", 1.1}, {"float 100000.5", 100000.5}, {"float f32", 3.4028234663852886e+38},
		{"float tiny", 5.960464477539063e-08}, {"float 1e300", 1e300}, {"float integral", 1.0},
		{"float -0", math.Copysign(0, -1)}, {"NaN", math.NaN()}, {"Infinity", math.Inf(1)}, {"-Infinity", math.Inf(-1)},
		{"true", true}, {"false", false}, {"null", nil},
		{"empty string", ""}, {"ascii", "milk"}, {"unicode", "héllo wörld ✓ 😀"}, {"long string", string(bytes.Repeat([]byte("ab"), 40))},
		{"bytes", []byte{0, 1, 2, 255}}, {"empty array", []any{}}, {"array", []any{1, "two", 3.5, nil, true}},
		{"empty map", map[string]any{}},
		{"map key order", map[string]any{"b": 1, "a": 2, "aa": 3, "": 4, "ab": 5, "z": 6, "zzzzzzzzzzzzzzzzzzzzzzzzzz": 7}},
		{"nested", map[string]any{"list": []any{map[string]any{"x": -1.5}}, "ok": false}},
	}
	for _, c := range values {
		b := val(t, c.v)
		var back any
		if err := DecodeValue(b, &back); err != nil {
			t.Fatalf("value %s: %v", c.name, err)
		}
		j, err := json.Marshal(valueJSON(back))
		if err != nil {
			t.Fatal(err)
		}
		vf.Values = append(vf.Values, valueVector{Name: c.name, JSON: j, Hex: hex.EncodeToString(b)})
	}

	order := [][2]Stamp{
		{st(1, 0, "a"), st(2, 0, "a")}, {st(2, 0, "a"), st(1, 5, "z")}, {st(1, 1, "a"), st(1, 2, "a")},
		{st(1, 1, "a"), st(1, 1, "b")}, {st(1, 1, "b"), st(1, 1, "ab")}, {st(1, 1, "B"), st(1, 1, "a")},
		{st(1, 1, "a"), st(1, 1, "a")}, {Stamp{}, st(0, 0, "a")},
	}
	for _, p := range order {
		vf.Order = append(vf.Order, orderVector{A: stampJSON(p[0]), B: stampJSON(p[1]), Cmp: p[0].Compare(p[1])})
	}

	type step struct {
		op     string
		wall   int64
		remote Timestamp
	}
	clocks := []struct {
		name  string
		drift int64
		start Timestamp
		steps []step
	}{
		{"tick", 0, Timestamp{}, []step{{"now", 1000, Timestamp{}}, {"now", 1000, Timestamp{}}, {"now", 1001, Timestamp{}}, {"now", 999, Timestamp{}}, {"now", 500, Timestamp{}}}},
		{"observe", 0, Timestamp{}, []step{
			{"now", 1000, Timestamp{}}, {"observe", 1000, Timestamp{1000, 7}}, {"observe", 1000, Timestamp{2000, 3}},
			{"now", 1500, Timestamp{}}, {"observe", 3000, Timestamp{2500, 9}}, {"observe", 2000, Timestamp{2999, 1}}, {"now", 3001, Timestamp{}},
		}},
		{"drift", 60_000, Timestamp{}, []step{{"observe", 1000, Timestamp{61_000, 0}}, {"observe", 1000, Timestamp{61_001, 0}}, {"now", 1000, Timestamp{}}}},
		{"carry", 0, Timestamp{5000, MaxIssuedLogical - 1}, []step{{"now", 5000, Timestamp{}}, {"now", 5000, Timestamp{}}, {"observe", 5000, Timestamp{5001, 3}}, {"now", 5001, Timestamp{}}}},
		{"carry from a huge remote counter", 0, Timestamp{5000, 0}, []step{{"observe", 5000, Timestamp{5000, MaxLogical}}, {"now", 5000, Timestamp{}}}},
	}
	for _, cv := range clocks {
		c := mustClock(t, "r1", timeMS(cv.drift))
		c.Restore(cv.start)
		out := clockVector{Name: cv.name, Replica: "r1", MaxDriftMS: c.MaxDrift().Milliseconds(), Start: []int64{cv.start.Wall, int64(cv.start.Logical)}}
		for _, s := range cv.steps {
			var err error
			cs := clockStep{Op: s.op, Wall: s.wall}
			if s.op == "now" {
				_, err = c.Now(s.wall)
			} else {
				cs.Remote = []int64{s.remote.Wall, int64(s.remote.Logical)}
				err = c.Observe(s.remote, s.wall)
			}
			cs.Error = errorCode(err)
			cs.Want = []int64{c.Last().Wall, int64(c.Last().Logical)}
			out.Steps = append(out.Steps, cs)
		}
		vf.Clocks = append(vf.Clocks, out)
	}

	one, two, three := val(t, "one"), val(t, "two"), val(t, 3)
	merges := []struct {
		name string
		a, b Record
	}{
		{"empty into empty", Record{ID: "x"}, Record{ID: "x"}},
		{"set into empty", Record{ID: "x"}, SetField("x", "title", one, st(10, 0, "a"))},
		{"newer wins", SetField("x", "title", one, st(10, 0, "a")), SetField("x", "title", two, st(11, 0, "b"))},
		{"older loses", SetField("x", "title", one, st(10, 0, "a")), SetField("x", "title", two, st(9, 9, "b"))},
		{"logical breaks wall tie", SetField("x", "title", one, st(10, 2, "a")), SetField("x", "title", two, st(10, 1, "z"))},
		{"replica breaks tie", SetField("x", "title", one, st(10, 0, "a")), SetField("x", "title", two, st(10, 0, "b"))},
		{"equal stamp larger bytes win", SetField("x", "title", three, st(10, 0, "a")), SetField("x", "title", one, st(10, 0, "a"))},
		{"equal stamp unset wins", SetField("x", "title", one, st(10, 0, "a")), UnsetField("x", "title", st(10, 0, "a"))},
		{"same write again", SetField("x", "title", one, st(10, 0, "a")), SetField("x", "title", one, st(10, 0, "a"))},
		{"different fields", SetField("x", "title", one, st(10, 0, "a")), SetField("x", "done", val(t, true), st(5, 0, "b"))},
		{"unset newer", SetField("x", "title", one, st(10, 0, "a")), UnsetField("x", "title", st(12, 0, "b"))},
		{"delete hides older and equal", Record{ID: "x", Fields: map[string]Field{"a": {st(10, 0, "a"), one}, "b": {st(20, 0, "a"), two}, "c": {st(30, 0, "a"), three}}}, DeleteRecord("x", st(20, 0, "a"))},
		{"write after delete recreates", DeleteRecord("x", st(20, 0, "a")), SetField("x", "title", two, st(21, 0, "b"))},
		{"write before delete hidden", DeleteRecord("x", st(20, 0, "a")), SetField("x", "title", two, st(19, 0, "b"))},
		{"older delete no-op", Record{ID: "x", Deleted: st(20, 0, "a"), Fields: map[string]Field{"t": {st(25, 0, "a"), one}}}, DeleteRecord("x", st(15, 0, "b"))},
		{"unnormalized input", Record{ID: "x", Deleted: st(20, 0, "a")}, Record{ID: "x", Deleted: st(5, 0, "b"), Fields: map[string]Field{"t": {st(4, 0, "b"), one}, "u": {st(25, 0, "b"), two}}}},
	}
	for _, m := range merges {
		got, changed := Merge(m.a, m.b)
		vf.Merges = append(vf.Merges, mergeVector{
			Name: m.name, A: describeRecord(t, m.a), B: describeRecord(t, m.b), Want: describeRecord(t, got),
			AHex: hex.EncodeToString(mustEncode(t, m.a)), BHex: hex.EncodeToString(mustEncode(t, m.b)),
			WantHex: hex.EncodeToString(mustEncode(t, got)), Changed: changed, Exists: got.Exists(),
		})
	}

	records := []struct {
		name string
		r    Record
	}{
		{"empty", Record{ID: "a"}},
		{"deleted only", DeleteRecord("todo-1", st(1732464000000, 0, "server"))},
		{"fields sorted by encoded key", Record{ID: "k", Fields: map[string]Field{
			"zz": {st(1, 0, "a"), one}, "b": {st(2, 1, "b"), val(t, []any{1, 2})}, "aaa": {st(3, 0, "c"), nil}, "é": {st(1<<40, 70000, "replica-id_1"), val(t, 1.5)},
		}}},
		{"full", Record{ID: "todo/ünï", Deleted: st(99, 0, "z"), Fields: map[string]Field{"title": {st(100, 0, "z"), val(t, "buy milk")}, "done": {st(101, 4294967295, "z"), val(t, false)}}}},
	}
	for _, r := range records {
		vf.Records = append(vf.Records, recordVector{Name: r.name, Record: describeRecord(t, r.r), Hex: hex.EncodeToString(mustEncode(t, r.r))})
	}

	for _, nv := range []normalizedVec{
		{Name: "int value in a wide head", Hex: "a2016178" + "03a16174" + "840a00616118" + "01"},
		{Name: "float value as a float64", Hex: "a2016178" + "03a16174" + "840a006161fb3ff8000000000000"},
		{Name: "map value with keys out of order", Hex: "a2016178" + "03a16174" + "840a006161a2616201616101"},
		{Name: "nested, float32 that fits a half, NaN with payload", Hex: "a2016178" + "03a16174" + "840a00616182fa3fc00000fb7ff8000000000001"},
	} {
		r, err := DecodeRecord(mustHex(t, nv.Hex))
		if err != nil {
			t.Fatalf("normalized vector %q: %v", nv.Name, err)
		}
		nv.WantHex = hex.EncodeToString(mustEncode(t, r))
		vf.Normalized = append(vf.Normalized, nv)
	}

	for _, ev := range envelopeCases() {
		b := mustHex(t, ev.Hex)
		var page struct {
			Records cbor.RawMessage `cbor:"1,keyasint"`
			Next    []byte          `cbor:"2,keyasint"`
		}
		err := UnmarshalEnvelope(b, &page)
		if err == nil && (string(page.Records) != "\x80" || hex.EncodeToString(page.Next) != "010203") {
			t.Fatalf("envelope vector %q: read as %x, %x", ev.Name, page.Records, page.Next)
		}
		ev.Error = errorCode(err)
		vf.Envelopes = append(vf.Envelopes, ev)
	}

	for _, iv := range invalidCases() {
		_, err := decodeKind(iv.Kind, mustHex(t, iv.Hex))
		iv.Error = errorCode(err)
		vf.Invalid = append(vf.Invalid, iv)
	}
	return vf
}

// envelopeCases are the keys an envelope may hold beside those it knows
// (docs/protocol.md, section 2): integers of 64 bits and text strings,
// ignored; keys of other types, malformed.
func envelopeCases() []envelopeVec {
	page := func(key string) string { return "a3" + "0180" + "0243010203" + key + "f5" }
	return []envelopeVec{
		{Name: "unknown uint key", Hex: page("1863")},
		{Name: "unknown uint key in a wide head", Hex: page("1b0000000000000063")},
		{Name: "uint key 2^53", Hex: page("1b0020000000000000")},
		{Name: "uint key 2^63-1", Hex: page("1b7fffffffffffffff")},
		{Name: "uint key 2^63", Hex: page("1b8000000000000000")},
		{Name: "uint key 2^64-1", Hex: page("1bffffffffffffffff")},
		{Name: "negative key", Hex: page("20")},
		{Name: "negative key -2^53-1", Hex: page("3b0020000000000000")},
		{Name: "negative key -2^63", Hex: page("3b7fffffffffffffff")},
		{Name: "negative key -2^63-1", Hex: page("3b8000000000000000")},
		{Name: "text key", Hex: page("6178")},
		{Name: "empty text key", Hex: page("60")},
		{Name: "byte string key", Hex: page("4161")},
		{Name: "float key", Hex: page("f93c00")},
		{Name: "float key 3.0, a known key's number", Hex: page("f94200")},
		{Name: "float key -0.5", Hex: page("f9b800")},
		{Name: "boolean key", Hex: page("f5")},
		{Name: "null key", Hex: page("f6")},
		{Name: "array key", Hex: page("80")},
		{Name: "map key", Hex: page("a0")},
		{Name: "two equal unknown keys in two widths", Hex: "a4" + "0180" + "0243010203" + "1863f5" + "190063f5"},
		{Name: "two equal uint keys past 2^53 in two widths", Hex: "a4" + "0180" + "0243010203" + "1b0020000000000000f5" + "1b0020000000000000f4"},
		{Name: "two equal text keys", Hex: "a4" + "0180" + "0243010203" + "6178f5" + "7801" + "78f4"},
		{Name: "two equal negative keys", Hex: "a4" + "0180" + "0243010203" + "3b0020000000000000f5" + "3b0020000000000000f4"},
	}
}

func invalidCases() []invalidVec {
	return []invalidVec{
		{Name: "truncated record", Kind: "record", Hex: "a201617803a1"},
		{Name: "not a map", Kind: "record", Hex: "83010203"},
		{Name: "unknown record key", Kind: "record", Hex: "a2016178046161"},
		{Name: "duplicate map key", Kind: "record", Hex: "a2016178016179"},
		{Name: "indefinite-length map", Kind: "record", Hex: "bf016178ff"},
		{Name: "tagged value", Kind: "record", Hex: "a201617803a16174840a006161c100"},
		{Name: "empty id", Kind: "record", Hex: "a10160"},
		{Name: "id with control character", Kind: "record", Hex: "a101610a"},
		{Name: "invalid utf-8 id", Kind: "record", Hex: "a10162c328"},
		{Name: "field with 2 items", Kind: "record", Hex: "a2016178" + "03a1617482" + "0a00"},
		{Name: "field with zero stamp", Kind: "record", Hex: "a2016178" + "03a16174" + "8400006001"},
		{Name: "bad replica id", Kind: "record", Hex: "a2016178" + "03a16174" + "840a0062612001"},
		{Name: "negative wall", Kind: "record", Hex: "a2016178" + "03a16174" + "8429006161" + "01"},
		{Name: "wall above 2^53", Kind: "record", Hex: "a2016178" + "03a16174" + "841b0020000000000000006161" + "01"},
		{Name: "wall as a float", Kind: "record", Hex: "a2016178" + "03a16174" + "84fb4024000000000000006161" + "01"},
		{Name: "logical above 2^32-1", Kind: "record", Hex: "a2016178" + "03a16174" + "840a1b00000001000000006161" + "01"},
		{Name: "negative logical", Kind: "record", Hex: "a2016178" + "03a16174" + "840a206161" + "01"},
		// A field's array head and stamp are strict, unlike the record
		// envelope around it (docs/protocol.md, section 2).
		{Name: "field array in a wide head", Kind: "record", Hex: "a2016178" + "03a16174" + "98040a006161" + "01"},
		{Name: "field wall in a wide head", Kind: "record", Hex: "a2016178" + "03a16174" + "84180a006161" + "01"},
		{Name: "field logical in a wide head", Kind: "record", Hex: "a2016178" + "03a16174" + "840a18016161" + "01"},
		{Name: "field replica id in a wide head", Kind: "record", Hex: "a2016178" + "03a16174" + "840a00780161" + "01"},
		{Name: "unset field wall in a wide head", Kind: "record", Hex: "a2016178" + "03a16174" + "83190001006161"},
		{Name: "value map with keys equal once canonical", Kind: "record", Hex: "a2016178" + "03a16174" + "840a006161a2616101780161" + "02"},
		{Name: "undefined value", Kind: "record", Hex: "a2016178" + "03a16174" + "840a006161f7"},
		{Name: "simple value", Kind: "record", Hex: "a2016178" + "03a16174" + "840a006161f0"},
		{Name: "bad collection name", Kind: "changes", Hex: "81a2016361206202a1016178"},
		{Name: "collection with brace", Kind: "changes", Hex: "81a201637b617d02a1016178"},
		{Name: "change not an array", Kind: "changes", Hex: "a0"},
		{Name: "trailing bytes", Kind: "changes", Hex: "8000"},
		{Name: "deep nesting", Kind: "value", Hex: string(bytes.Repeat([]byte("81"), 40)) + "00"},
		{Name: "empty value", Kind: "value", Hex: ""},
	}
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

func decodeKind(kind string, b []byte) (any, error) {
	switch kind {
	case "record":
		return DecodeRecord(b)
	case "changes":
		return DecodeChanges(b)
	case "value":
		return nil, CanonicalValue(b)
	}
	return nil, fmt.Errorf("unknown kind %q", kind)
}

// errorCode names an error for other implementations.
func errorCode(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrClockDrift):
		return "clock_drift"
	case errors.Is(err, ErrCounterOverflow):
		return "counter_overflow"
	case errors.Is(err, ErrTooLarge):
		return "too_large"
	case errors.Is(err, ErrInvalid):
		return "invalid"
	case errors.Is(err, ErrMalformed):
		return "malformed"
	}
	return "other: " + err.Error()
}

func TestVectors(t *testing.T) {
	path := filepath.Join("testdata", "vectors.json")
	got := buildVectors(t)
	for _, iv := range got.Invalid {
		if iv.Error == "" || len(iv.Error) > 6 && iv.Error[:6] == "other:" {
			t.Errorf("invalid vector %q: got error %q, want a typed decode error", iv.Name, iv.Error)
		}
	}
	gotJSON, err := json.MarshalIndent(got, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	gotJSON = append(gotJSON, '\n')
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, gotJSON, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s (run with -update to create it): %v", path, err)
	}
	if !bytes.Equal(gotJSON, want) {
		t.Fatalf("%s is out of date with the code: run `go test ./crdt -run TestVectors -update` and review the diff", path)
	}

	// Check the file's bytes decode back to what it describes, independently
	// of how it was generated.
	var vf vectorFile
	if err := json.Unmarshal(want, &vf); err != nil {
		t.Fatal(err)
	}
	for _, m := range vf.Merges {
		a, err := DecodeRecord(mustHex(t, m.AHex))
		if err != nil {
			t.Fatalf("%s: decode a: %v", m.Name, err)
		}
		b, err := DecodeRecord(mustHex(t, m.BHex))
		if err != nil {
			t.Fatalf("%s: decode b: %v", m.Name, err)
		}
		ab, changed := Merge(a, b)
		if h := hex.EncodeToString(mustEncode(t, ab)); h != m.WantHex || changed != m.Changed {
			t.Errorf("%s: got %s changed=%v, want %s changed=%v", m.Name, h, changed, m.WantHex, m.Changed)
		}
		ba, _ := Merge(b, a)
		if h := hex.EncodeToString(mustEncode(t, ba)); h != m.WantHex {
			t.Errorf("%s reversed: got %s, want %s", m.Name, h, m.WantHex)
		}
	}
}

func timeMS(ms int64) time.Duration { return time.Duration(ms) * time.Millisecond }
