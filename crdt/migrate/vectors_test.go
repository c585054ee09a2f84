package migrate

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/crdt/scope"
)

var update = flag.Bool("update", false, "rewrite ../testdata/migrations.json from the cases in vectors_test.go")

// The migrations vectors are the contract between this package and the
// browser client's src/migrate.js: definitions (valid and invalid), the
// defaults each version reads, and translation cases whose inputs and
// outputs are canonical CBOR records (crdt.EncodeRecord; a change is
// encoded as its record), in hex. They are generated from the cases below
// with -update and checked against them otherwise.

type vectorFile struct {
	Comment     string                     `json:"comment"`
	Definitions map[string]json.RawMessage `json:"definitions"`
	Invalid     []invalidDef               `json:"invalid_definitions"`
	Defaults    []defaultsVec              `json:"defaults"`
	Cases       []caseVec                  `json:"cases"`
}

type invalidDef struct {
	Name       string          `json:"name"`
	Definition json.RawMessage `json:"definition"`
}

type defaultsVec struct {
	Definition string            `json:"definition"`
	Version    int               `json:"version"`
	Defaults   map[string]string `json:"defaults"` // field → canonical CBOR hex
}

type caseVec struct {
	Name       string          `json:"name"`
	Definition string          `json:"definition"`
	Kind       string          `json:"kind"` // "record" or "change"
	From       int             `json:"from"`
	To         int             `json:"to"`
	Input      json.RawMessage `json:"input"`
	InputHex   string          `json:"input_hex"`
	Output     json.RawMessage `json:"output,omitempty"`
	OutputHex  string          `json:"output_hex,omitempty"`
	Dropped    int             `json:"dropped,omitempty"` // records: source fields left out
	Error      string          `json:"error,omitempty"`   // "untranslatable", "schema_ahead" or "invalid"
}

var definitions = map[string]string{
	"none": `{"version": 1, "steps": []}`,
	"notes": `{"version": 2, "steps": [{"to": 2, "ops": [
		{"op": "rename", "from": "title", "to": "name"},
		{"op": "split", "from": "who", "to": ["first", "last"], "sep": " "},
		{"op": "merge", "from": ["street", "city"], "to": "address", "sep": ", "},
		{"op": "default", "field": "priority", "value": 0},
		{"op": "drop", "field": "legacy"}]}]}`,
	"multi": `{"version": 3, "steps": [
		{"to": 2, "ops": [
			{"op": "rename", "from": "title", "to": "name"},
			{"op": "default", "field": "done", "value": false},
			{"op": "default", "field": "tags", "value": ["a", {"b": 1.5}]}]},
		{"to": 3, "ops": [
			{"op": "rename", "from": "name", "to": "label"},
			{"op": "rename", "from": "done", "to": "finished"},
			{"op": "merge", "from": ["first", "last"], "to": "full", "sep": " "},
			{"op": "drop", "field": "obsolete"}]}]}`,
	"date": `{"version": 2, "steps": [{"to": 2, "ops": [
		{"op": "split", "from": "date", "to": ["y", "m", "d"], "sep": "-"}]}]}`,
	// The number rule of defaults (crdt.AppendJSONNumber), which the
	// browser client must follow from the float64s JavaScript reads.
	"numbers": `{"version": 2, "steps": [{"to": 2, "ops": [
		{"op": "default", "field": "one", "value": 1.0},
		{"op": "default", "field": "thousand", "value": 1e3},
		{"op": "default", "field": "negzero", "value": -0.0},
		{"op": "default", "field": "two53", "value": 9007199254740992.0},
		{"op": "default", "field": "maxsafe", "value": 9007199254740991},
		{"op": "default", "field": "minsafe", "value": -9007199254740991},
		{"op": "default", "field": "half", "value": 0.5},
		{"op": "default", "field": "third", "value": 0.3333333333333333},
		{"op": "default", "field": "huge", "value": 1e300},
		{"op": "default", "field": "nested", "value": [1.0, -2.5e0, {"z": -0.0, "a": 2e0}]}]}]}`,
}

var invalidDefinitions = []struct{ name, def string }{
	{"not an object", `[]`},
	{"version missing", `{"steps": []}`},
	{"unknown top-level key", `{"version": 1, "steps": [], "extra": 1}`},
	{"version does not match the steps", `{"version": 3, "steps": [{"to": 2, "ops": []}]}`},
	{"step to out of order", `{"version": 3, "steps": [{"to": 3, "ops": []}, {"to": 2, "ops": []}]}`},
	{"unknown op", `{"version": 2, "steps": [{"to": 2, "ops": [{"op": "copy", "from": "a", "to": "b"}]}]}`},
	{"unknown op key", `{"version": 2, "steps": [{"to": 2, "ops": [{"op": "drop", "field": "a", "sep": " "}]}]}`},
	{"missing op key", `{"version": 2, "steps": [{"to": 2, "ops": [{"op": "rename", "from": "a"}]}]}`},
	{"target named twice", `{"version": 2, "steps": [{"to": 2, "ops": [{"op": "rename", "from": "a", "to": "c"}, {"op": "rename", "from": "b", "to": "c"}]}]}`},
	{"source and target in one step", `{"version": 2, "steps": [{"to": 2, "ops": [{"op": "rename", "from": "a", "to": "b"}, {"op": "rename", "from": "b", "to": "c"}]}]}`},
	{"split into one part", `{"version": 2, "steps": [{"to": 2, "ops": [{"op": "split", "from": "a", "to": ["b"], "sep": " "}]}]}`},
	{"merge of one part", `{"version": 2, "steps": [{"to": 2, "ops": [{"op": "merge", "from": ["a"], "to": "b", "sep": " "}]}]}`},
	{"empty sep", `{"version": 2, "steps": [{"to": 2, "ops": [{"op": "split", "from": "a", "to": ["b", "c"], "sep": ""}]}]}`},
	{"empty field name", `{"version": 2, "steps": [{"to": 2, "ops": [{"op": "drop", "field": ""}]}]}`},
	{"field name with a control character", `{"version": 2, "steps": [{"to": 2, "ops": [{"op": "rename", "from": "a\u0001", "to": "b"}]}]}`},
	{"a retired name used again", `{"version": 3, "steps": [{"to": 2, "ops": [{"op": "rename", "from": "a", "to": "b"}]}, {"to": 3, "ops": [{"op": "rename", "from": "c", "to": "a"}]}]}`},
	{"a dropped field given a default again", `{"version": 3, "steps": [{"to": 2, "ops": [{"op": "drop", "field": "a"}]}, {"to": 3, "ops": [{"op": "default", "field": "a", "value": 1}]}]}`},
	{"rename to a list", `{"version": 2, "steps": [{"to": 2, "ops": [{"op": "rename", "from": "a", "to": ["b", "c"]}]}]}`},
	{"too many steps", func() string {
		var steps []string
		for i := 2; i <= MaxSteps+2; i++ {
			steps = append(steps, fmt.Sprintf(`{"to": %d, "ops": []}`, i))
		}
		return fmt.Sprintf(`{"version": %d, "steps": [%s]}`, MaxSteps+2, strings.Join(steps, ","))
	}()},
	{"too many ops", func() string {
		var ops []string
		for i := 0; i <= MaxOpsPerStep; i++ {
			ops = append(ops, fmt.Sprintf(`{"op": "drop", "field": "f%d"}`, i))
		}
		return fmt.Sprintf(`{"version": 2, "steps": [{"to": 2, "ops": [%s]}]}`, strings.Join(ops, ","))
	}()},
}

// unset marks a field written as an unset in the case tables.
type unsetT struct{}

var unset unsetT

// fv is a field of a case: name, stamp wall, value (or unset).
type fv struct {
	name string
	wall int64
	v    any
}

func st(wall int64) crdt.Stamp { return crdt.Stamp{Wall: wall, Replica: "r1"} }

func mk(t *testing.T, deleted int64, fields ...fv) crdt.Record {
	t.Helper()
	r := crdt.Record{ID: "x", Fields: map[string]crdt.Field{}}
	if deleted != 0 {
		r.Deleted = st(deleted)
	}
	for _, f := range fields {
		fd := crdt.Field{Stamp: st(f.wall)}
		if f.v != unset {
			b, err := crdt.EncodeValue(f.v)
			if err != nil {
				t.Fatal(err)
			}
			fd.Value = b
		}
		r.Fields[f.name] = fd
	}
	return r
}

type tcase struct {
	name, def, kind string
	from, to        int
	in              crdt.Record
}

func cases(t *testing.T) []tcase {
	r := func(name, def string, from, to int, in crdt.Record) tcase {
		return tcase{name, def, "record", from, to, in}
	}
	c := func(name, def string, from, to int, in crdt.Record) tcase {
		return tcase{name, def, "change", from, to, in}
	}
	var out []tcase
	for _, k := range []func(string, string, int, int, crdt.Record) tcase{r, c} {
		out = append(out,
			k("rename up", "notes", 1, 2, mk(t, 0, fv{"title", 5, "Hello"})),
			k("rename up, source newer than target", "notes", 1, 2, mk(t, 0, fv{"title", 5, "old"}, fv{"name", 3, "new"})),
			k("rename up, target newer than source", "notes", 1, 2, mk(t, 0, fv{"title", 3, "old"}, fv{"name", 5, "new"})),
			k("rename up, equal stamps keep the target", "notes", 1, 2, mk(t, 0, fv{"title", 5, "old"}, fv{"name", 5, "new"})),
			k("rename up, unset", "notes", 1, 2, mk(t, 0, fv{"title", 5, unset})),
			k("rename down", "notes", 2, 1, mk(t, 0, fv{"name", 5, "Hello"}, fv{"priority", 4, 3})),
			k("split up", "notes", 1, 2, mk(t, 0, fv{"who", 5, "Ada Lovelace"})),
			k("split up, missing part", "notes", 1, 2, mk(t, 0, fv{"who", 5, "Ada"})),
			k("split up, last part keeps the rest", "notes", 1, 2, mk(t, 0, fv{"who", 5, "Ada King Lovelace"})),
			k("split up, unset", "notes", 1, 2, mk(t, 0, fv{"who", 5, unset})),
			k("split up, resolving against a newer part", "notes", 1, 2, mk(t, 0, fv{"who", 5, "Ada Lovelace"}, fv{"last", 7, "Byron"})),
			k("split up, not a string", "notes", 1, 2, mk(t, 0, fv{"who", 5, 42}, fv{"title", 5, "t"})),
			k("merge up", "notes", 1, 2, mk(t, 0, fv{"street", 5, "1 Main St"}, fv{"city", 6, "Springfield"})),
			k("merge up, one part", "notes", 1, 2, mk(t, 0, fv{"street", 5, "1 Main St"}, fv{"title", 5, "t"})),
			k("merge up, one part unset", "notes", 1, 2, mk(t, 0, fv{"street", 5, "1 Main St"}, fv{"city", 6, unset})),
			k("merge up, all unset", "notes", 1, 2, mk(t, 0, fv{"street", 5, unset}, fv{"city", 4, unset})),
			k("merge up, not a string", "notes", 1, 2, mk(t, 0, fv{"street", 5, true}, fv{"city", 6, "Springfield"})),
			k("merge up, older than the target", "notes", 1, 2, mk(t, 0, fv{"street", 5, "1 Main St"}, fv{"city", 6, "Springfield"}, fv{"address", 9, "2 Elm St, Shelbyville"})),
			k("drop up", "notes", 1, 2, mk(t, 0, fv{"legacy", 5, 1}, fv{"title", 5, "t"})),
			k("drop up, nothing left", "notes", 1, 2, mk(t, 0, fv{"legacy", 5, 1})),
			k("drop up, delete stamp left", "notes", 1, 2, mk(t, 4, fv{"legacy", 5, 1})),
			k("delete stamp carried", "notes", 1, 2, mk(t, 4, fv{"title", 5, "t"}, fv{"who", 6, "A B"})),
			k("delete only", "notes", 2, 1, mk(t, 4)),
			k("split down", "notes", 2, 1, mk(t, 0, fv{"first", 5, "Ada"}, fv{"last", 7, "Lovelace"})),
			k("split down, one part", "notes", 2, 1, mk(t, 0, fv{"first", 5, "Ada"})),
			k("split down, one part unset", "notes", 2, 1, mk(t, 0, fv{"first", 5, "Ada"}, fv{"last", 7, unset})),
			k("merge down", "notes", 2, 1, mk(t, 0, fv{"address", 5, "1 Main St, Springfield"})),
			k("merge down, no separator", "notes", 2, 1, mk(t, 0, fv{"address", 5, "Nowhere"})),
			k("merge down, not a string", "notes", 2, 1, mk(t, 0, fv{"address", 5, 7}, fv{"name", 5, "n"})),
			k("unknown fields pass", "notes", 1, 2, mk(t, 0, fv{"other", 5, "o"})),
			k("default stores nothing", "notes", 1, 2, mk(t, 0, fv{"name", 5, "n"})),
			k("several steps up", "multi", 1, 3, mk(t, 0, fv{"title", 5, "t"}, fv{"done", 6, true}, fv{"first", 7, "Ada"}, fv{"last", 8, "L"}, fv{"obsolete", 1, 1})),
			k("several steps down", "multi", 3, 1, mk(t, 0, fv{"label", 5, "t"}, fv{"finished", 6, true}, fv{"full", 7, "Ada L"})),
			k("several steps, resolving against a newer target", "multi", 1, 3, mk(t, 0, fv{"title", 5, "old"}, fv{"name", 6, "mid"}, fv{"label", 9, "new"})),
			k("several steps, mixed versions resolved", "multi", 1, 3, mk(t, 0, fv{"title", 9, "newest"}, fv{"name", 6, "mid"}, fv{"label", 5, "old"})),
			k("middle version up", "multi", 2, 3, mk(t, 0, fv{"name", 5, "n"})),
			k("middle version down", "multi", 3, 2, mk(t, 0, fv{"label", 5, "n"}, fv{"full", 6, "A B"})),
			k("three-way split", "date", 1, 2, mk(t, 0, fv{"date", 5, "2026-12-03"})),
			k("three-way merge back", "date", 2, 1, mk(t, 0, fv{"y", 5, "2026"}, fv{"m", 6, "12"}, fv{"d", 7, "03"})),
			k("three-way merge back, a part unset", "date", 2, 1, mk(t, 0, fv{"y", 5, "2026"}, fv{"m", 6, unset}, fv{"d", 7, "03"})),
			k("same version", "notes", 2, 2, mk(t, 0, fv{"title", 5, "t"})),
			k("version ahead", "multi", 1, 4, mk(t, 0, fv{"title", 5, "t"})),
			k("version zero", "notes", 0, 2, mk(t, 0, fv{"title", 5, "t"})),
			k("no migrations, version 1", "none", 1, 1, mk(t, 0, fv{"title", 5, "t"})),
			k("no migrations, version 2", "none", 2, 1, mk(t, 0, fv{"title", 5, "t"})),
		)
	}
	return out
}

func describe(t *testing.T, r crdt.Record) json.RawMessage {
	t.Helper()
	stamp := func(s crdt.Stamp) []any { return []any{s.Wall, s.Logical, s.Replica} }
	m := map[string]any{"id": r.ID}
	if !r.Deleted.IsZero() {
		m["deleted"] = stamp(r.Deleted)
	}
	fields := map[string]any{}
	for name, f := range r.Fields {
		fd := map[string]any{"stamp": stamp(f.Stamp)}
		if f.Value != nil {
			var v any
			if err := crdt.DecodeValue(f.Value, &v); err != nil {
				t.Fatal(err)
			}
			fd["value"] = v
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

func errCode(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrUntranslatable):
		return "untranslatable"
	case errors.Is(err, ErrSchemaAhead):
		return "schema_ahead"
	case errors.Is(err, ErrInvalid):
		return "invalid"
	}
	return "other: " + err.Error()
}

func encHex(t *testing.T, r crdt.Record) string {
	t.Helper()
	b, err := crdt.EncodeRecord(r)
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func parsedDefs(t *testing.T) map[string]*Definition {
	t.Helper()
	defs := map[string]*Definition{}
	for name, src := range definitions {
		d, err := Parse([]byte(src))
		if err != nil {
			t.Fatalf("definition %s: %v", name, err)
		}
		defs[name] = d
	}
	return defs
}

func buildVectors(t *testing.T) vectorFile {
	vf := vectorFile{
		Comment: "Generated by `go test ./crdt/migrate -update`; do not edit by hand. " +
			"input_hex and output_hex are canonical CBOR records (a change is encoded as its record); " +
			"input and output describe them (stamps as [wall, logical, replica]). " +
			"error is untranslatable, schema_ahead or invalid; dropped counts the source fields a record translation left out.",
		Definitions: map[string]json.RawMessage{},
	}
	defs := parsedDefs(t)
	for name, src := range definitions {
		var compact bytes.Buffer
		if err := json.Compact(&compact, []byte(src)); err != nil {
			t.Fatal(err)
		}
		vf.Definitions[name] = compact.Bytes()
	}
	for _, iv := range invalidDefinitions {
		if _, err := Parse([]byte(iv.def)); !errors.Is(err, ErrInvalid) {
			t.Fatalf("invalid definition %q: got %v, want ErrInvalid", iv.name, err)
		}
		raw := json.RawMessage(iv.def)
		var compact bytes.Buffer
		if err := json.Compact(&compact, raw); err != nil {
			t.Fatal(err)
		}
		vf.Invalid = append(vf.Invalid, invalidDef{iv.name, compact.Bytes()})
	}
	names := make([]string, 0, len(defs))
	for name := range defs {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		d := defs[name]
		for v := 1; v <= d.Current(); v++ {
			dv := defaultsVec{Definition: name, Version: v, Defaults: map[string]string{}}
			for f, val := range d.Defaults(v) {
				dv.Defaults[f] = hex.EncodeToString(val)
			}
			vf.Defaults = append(vf.Defaults, dv)
		}
	}
	for _, tc := range cases(t) {
		d := defs[tc.def]
		cv := caseVec{Name: tc.name, Definition: tc.def, Kind: tc.kind, From: tc.from, To: tc.to,
			Input: describe(t, tc.in), InputHex: encHex(t, tc.in)}
		var out crdt.Record
		var err error
		if tc.kind == "record" {
			out, cv.Dropped, err = d.Record(tc.in, tc.from, tc.to)
		} else {
			out, err = d.Change(tc.in, tc.from, tc.to)
		}
		cv.Error = errCode(err)
		if strings.HasPrefix(cv.Error, "other") {
			t.Fatalf("%s %s: untyped error %v", tc.kind, tc.name, err)
		}
		if err == nil {
			cv.Output, cv.OutputHex = describe(t, out), encHex(t, out)
		}
		vf.Cases = append(vf.Cases, cv)
	}
	return vf
}

func TestVectors(t *testing.T) {
	path := filepath.Join("..", "testdata", "migrations.json")
	got := buildVectors(t)
	gotJSON, err := json.MarshalIndent(got, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	gotJSON = append(gotJSON, '\n')
	if *update {
		if err := os.WriteFile(path, gotJSON, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s (run with -update to create it): %v", path, err)
	}
	if !bytes.Equal(gotJSON, want) {
		t.Fatalf("%s is out of date with the code: run `go test ./crdt/migrate -update` and review the diff", path)
	}

	// Check the file itself, independently of how it was generated: the
	// hex inputs decode and translate to the hex outputs.
	var vf vectorFile
	if err := json.Unmarshal(want, &vf); err != nil {
		t.Fatal(err)
	}
	defs := map[string]*Definition{}
	for name, raw := range vf.Definitions {
		if defs[name], err = Parse(raw); err != nil {
			t.Fatalf("definition %s: %v", name, err)
		}
	}
	for _, cv := range vf.Cases {
		b, err := hex.DecodeString(cv.InputHex)
		if err != nil {
			t.Fatal(err)
		}
		in, err := crdt.DecodeRecord(b)
		if err != nil {
			t.Fatalf("%s: %v", cv.Name, err)
		}
		var out crdt.Record
		dropped := 0
		if cv.Kind == "record" {
			out, dropped, err = defs[cv.Definition].Record(in, cv.From, cv.To)
		} else {
			out, err = defs[cv.Definition].Change(in, cv.From, cv.To)
		}
		if code := errCode(err); code != cv.Error {
			t.Errorf("%s %s: got error %q, want %q", cv.Kind, cv.Name, code, cv.Error)
			continue
		}
		if err == nil {
			if h := encHex(t, out); h != cv.OutputHex || dropped != cv.Dropped {
				t.Errorf("%s %s: got %s dropped %d, want %s dropped %d", cv.Kind, cv.Name, h, dropped, cv.OutputHex, cv.Dropped)
			}
		}
	}
}

// Default numbers are read by crdt's rule for JSON documents, and only
// those the browser client, which sees a float64, reads the same way are
// accepted.
func TestDefaultNumbers(t *testing.T) {
	for _, tc := range []struct{ json, hex string }{
		{`0`, "00"}, {`-1`, "20"}, {`1.0`, "01"}, {`1e3`, "1903e8"}, {`1.5`, "f93e00"}, {`-0.0`, "f98000"},
		{`9007199254740991`, "1b001fffffffffffff"}, {`-9007199254740991`, "3b001ffffffffffffe"},
		{`9007199254740992.0`, "fa5a000000"}, {`9.007199254740993e15`, "fa5a000000"},
		{`1e300`, "fb7e37e43c8800759c"}, {`"s"`, "6173"}, {`null`, "f6"},
		{`{"b": [1, 2.5]}`, "a1616282" + "01f94100"},
	} {
		b, err := jsonValue([]byte(tc.json))
		if err != nil || hex.EncodeToString(b) != tc.hex {
			t.Errorf("%s: got %x %v, want %s", tc.json, b, err, tc.hex)
		}
		// The scope package reads a number in the rules file the same way.
		var n any
		dec := json.NewDecoder(strings.NewReader(tc.json))
		dec.UseNumber()
		if err := dec.Decode(&n); err != nil {
			t.Fatal(err)
		}
		if num, ok := n.(json.Number); ok {
			p, err := scope.FromValue([]any{"eq", "f", num})
			if err != nil {
				t.Fatal(err)
			}
			r := crdt.Record{ID: "r", Fields: map[string]crdt.Field{"f": {Stamp: crdt.Stamp{Wall: 1, Replica: "a"}, Value: b}}}
			if !p.Match(r) {
				t.Errorf("%s: the scope %s does not hold a record whose f is the default", tc.json, p)
			}
		}
	}
	// Integers JavaScript cannot hold exactly, and -0 written as an
	// integer (JavaScript reads the float -0), would give the browser
	// client another default than the server: refused.
	for _, bad := range []string{`-0`, `9007199254740992`, `-9007199254740992`, `18446744073709551615`, `[1, {"x": 9007199254740993}]`, `18446744073709551616`, `1e400`} {
		if _, err := jsonValue([]byte(bad)); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}

func TestTextValues(t *testing.T) {
	for _, n := range []int{0, 1, 23, 24, 255, 256, 65535, 65536, 70000} {
		s := strings.Repeat("é", n/2) + strings.Repeat("x", n%2)
		want, err := crdt.EncodeValue(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := textValue(s); !bytes.Equal(got, want) {
			t.Errorf("textValue of %d bytes: got %x..., want %x...", len(s), got[:min(len(got), 8)], want[:min(len(want), 8)])
		}
		if got, ok := text(want); !ok || got != s {
			t.Errorf("text of %d bytes: got %d bytes, %v", len(s), len(got), ok)
		}
	}
	for _, v := range [][]byte{{}, {0x01}, {0x7f}, {0x78}, {0x78, 0x05, 'a'}, {0x62, 'a'}, {0x40}} {
		if _, ok := text(v); ok {
			t.Errorf("text of %x: ok, want not a text", v)
		}
	}
}

func TestValues(t *testing.T) {
	d := parsedDefs(t)["notes"]
	r := mk(t, 0, fv{"name", 5, "n"})
	if v := d.Values(r, 2); !bytes.Equal(v["priority"], []byte{0x00}) || len(v) != 2 {
		t.Errorf("v2: %x, want name and priority 0", v)
	}
	if v := d.Values(r, 1); len(v) != 1 {
		t.Errorf("v1: %x, want name alone", v)
	}
	if v := d.Values(mk(t, 0, fv{"name", 5, "n"}, fv{"priority", 6, unset}), 2); len(v) != 1 {
		t.Errorf("an unset field read %x, want it unset", v)
	}
	if v := d.Values(mk(t, 9, fv{"name", 5, "n"}), 2); v != nil {
		t.Errorf("a deleted record read %x, want nothing", v)
	}
	if v := d.Values(mk(t, 5, fv{"name", 7, "n"}, fv{"priority", 4, 3}), 2); !bytes.Equal(v["priority"], []byte{0x00}) {
		t.Errorf("a field hidden by the delete read %x, want the default", v)
	}
	var none *Definition
	if v := none.Values(r, 1); len(v) != 1 || none.Current() != 1 || none.Defaults(1) != nil {
		t.Errorf("nil definition: %x", v)
	}
}
