package scope_test

import (
	"bytes"
	"testing"

	"github.com/fxamacker/cbor/v2"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/crdt/scope"
)

// FuzzMatch holds Match to a naive evaluator on what a client controls
// on both sides: the narrowing scope it reads with (wire bytes) and the
// values of records it pushes. The evaluator reads the predicate's own
// canonical encoding with a general CBOR decoder and compares canonical
// value bytes, so Match's one-pass walks (needles, hashed "in" lists, the
// longest-operand cut) must agree with it: a disagreement would show a
// scoped reader a record outside its scope, or hide one inside it. Field
// values that are not canonical (a record built in Go may hold anything)
// must not make Match panic.
func FuzzMatch(f *testing.F) {
	for _, s := range []string{
		`a == 1`, `a in [1, "x", [1, 2]]`, `a has 2 and a has 3`, `a has 2 or b has "x"`,
		`(a == [] or b in [true, null]) and not_there == 1`, `a has {"k": 1} or a has [1]`,
		`all`, `none`, `a == $sub`,
	} {
		p, err := scope.Parse(s)
		if err != nil {
			f.Fatal(err)
		}
		for _, v := range [][]byte{{0x01}, {0x82, 0x02, 0x03}, {0x61, 'x'}, {0x83, 0x01, 0x02, 0x82, 0x01, 0x02}, {0xa1, 0x61, 'k', 0x01}, {0x9f, 0x01, 0xff}} {
			f.Add(p.Encode(), v, []byte{0x81, 0xa1, 0x61, 'k', 0x01}, false)
		}
	}
	f.Fuzz(func(t *testing.T, scopeBytes, a, b []byte, deleted bool) {
		p, err := scope.Decode(scopeBytes)
		if err != nil {
			return
		}
		rec := crdt.Record{ID: "x", Fields: map[string]crdt.Field{}}
		at := crdt.Stamp{Wall: 2, Replica: "r"}
		if deleted {
			rec.Deleted = crdt.Stamp{Wall: 3, Replica: "r"}
		}
		canonical := true
		for name, v := range map[string][]byte{"a": a, "b": b} {
			if len(v) == 0 {
				continue // absent
			}
			norm, err := crdt.NormalizeValue(v)
			if err != nil {
				canonical = false
				norm = v
			}
			rec.Fields[name] = crdt.Field{Stamp: at, Value: norm}
		}
		got := p.Match(rec)
		if !canonical {
			return // only: no panic
		}
		want := rec.Exists() // nil: all
		if p != nil {
			want = len(p.Params()) == 0 && refMatchWire(t, p.Encode(), rec)
		}
		if got != want {
			t.Fatalf("%s on a=%x b=%x deleted=%v: Match = %v, reference = %v", p, rec.Fields["a"].Value, rec.Fields["b"].Value, deleted, got, want)
		}
	})
}

// refMatchWire evaluates predicate raw (canonical wire form) on r the
// obvious way.
func refMatchWire(t *testing.T, raw []byte, r crdt.Record) bool {
	var items []cbor.RawMessage
	if err := cbor.Unmarshal(raw, &items); err != nil || len(items) == 0 {
		t.Fatalf("predicate %x: %v", raw, err)
	}
	var op string
	if err := cbor.Unmarshal(items[0], &op); err != nil {
		t.Fatalf("operator %x: %v", items[0], err)
	}
	switch op {
	case "all":
		return r.Exists()
	case "none":
		return false
	case "and", "or":
		for _, k := range items[1:] {
			if m := refMatchWire(t, k, r); m != (op == "and") {
				return m
			}
		}
		return op == "and"
	}
	var field string
	if err := cbor.Unmarshal(items[1], &field); err != nil {
		t.Fatalf("field %x: %v", items[1], err)
	}
	f, ok := r.Fields[field]
	if !ok || f.Value == nil || f.Stamp.Compare(r.Deleted) <= 0 {
		return false
	}
	switch op {
	case "eq":
		return bytes.Equal(f.Value, items[2])
	case "in":
		var list []cbor.RawMessage
		if err := cbor.Unmarshal(items[2], &list); err != nil {
			t.Fatalf("in list %x: %v", items[2], err)
		}
		for _, e := range list {
			if bytes.Equal(f.Value, e) {
				return true
			}
		}
		return false
	case "has":
		var arr []cbor.RawMessage
		if f.Value[0]>>5 != 4 || cbor.Unmarshal(f.Value, &arr) != nil {
			return false
		}
		for _, e := range arr {
			if bytes.Equal(e, items[2]) {
				return true
			}
		}
		return false
	}
	t.Fatalf("unknown operator %q", op)
	return false
}
