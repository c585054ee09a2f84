package scope_test

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/crdt/scope"
)

// stamp returns a valid stamp at wall time w.
func stamp(w int64) crdt.Stamp { return crdt.Stamp{Wall: w, Replica: "r1"} }

// rec builds a record with fields written at wall time 2; a nil value is
// an unset.
func rec(t testing.TB, fields map[string]any) crdt.Record {
	t.Helper()
	r := crdt.Record{ID: "x", Fields: map[string]crdt.Field{}}
	for name, v := range fields {
		f := crdt.Field{Stamp: stamp(2)}
		if v != nil {
			b, err := crdt.EncodeValue(v)
			if err != nil {
				t.Fatal(err)
			}
			f.Value = b
		}
		r.Fields[name] = f
	}
	return r
}

func mustParse(t testing.TB, s string) *scope.Pred {
	t.Helper()
	p, err := scope.Parse(s)
	if err != nil {
		t.Fatalf("Parse(%q): %v", s, err)
	}
	return p
}

func mustMarshal(t testing.TB, v any) []byte {
	t.Helper()
	b, err := crdt.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseString(t *testing.T) {
	tests := []struct{ in, want string }{
		{`all`, `all`},
		{`none`, `none`},
		{`owner == $sub`, `owner == $sub`},
		{`owner == $sub or team in $claims.teams`, `owner == $sub or team in $claims.teams`},
		{`team in $claims.teams or owner == $sub`, `owner == $sub or team in $claims.teams`},
		{`status in ["open", "doing", "open"]`, `status in ["open", "doing"]`},
		{`a == 1 and (b == 2 or c == 3)`, `a == 1 and (b == 2 or c == 3)`},
		{`a == 1 and b == 2 or c == 3`, `c == 3 or a == 1 and b == 2`},
		{`(a == 1 and (b == 2 and c == 3))`, `a == 1 and b == 2 and c == 3`},
		{`a == 1 and all`, `a == 1`},
		{`a == 1 or all`, `all`},
		{`a == 1 and none`, `none`},
		{`a == 1 or none`, `a == 1`},
		{`a == 1 or a == 1`, `a == 1`},
		{`members has $sub`, `members has $sub`},
		{`org == $claims.org.id`, `org == $claims.org.id`},
		{`"first name" == "Ada"`, `"first name" == "Ada"`},
		{`"all" == true`, `"all" == true`},
		{`a.b-c == null`, `a.b-c == null`},
		{`n == 1.0`, `n == 1`}, // JSON's view: a whole number is an integer
		{`n == 1.5`, `n == 1.5`},
		{`n == -0.0`, `n == cbor(f98000)`},
		{`n == cbor(f93c00)`, `n == cbor(f93c00)`}, // the float 1.0
		{`n == 18446744073709551615`, `n == 18446744073709551615`},
		{`n == -18446744073709551616`, `n == -18446744073709551616`},
		{`n == 1e300`, `n == 1e+300`},
		{`b == cbor(43010203)`, `b == cbor(43010203)`},
		{`m == {"b": 1, "a": [true, "x"]}`, `m == {"a":[true,"x"],"b":1}`},
		{`s == "<&>\u00e9"`, `s == "<&>é"`},
		{`x in [$sub, {"$": "claims.a"}, 3]`, `x in [3, $sub, $claims.a]`},
		{`x in []`, `x in []`},
		{"  a==1\n\tor\tb==2 ", `a == 1 or b == 2`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			p := mustParse(t, tt.in)
			if got := p.String(); got != tt.want {
				t.Fatalf("String() = %q, want %q", got, tt.want)
			}
			back := mustParse(t, p.String())
			if !back.Equal(p) {
				t.Fatalf("Parse(String()) = %s, want %s", back, p)
			}
			dec, err := scope.Decode(p.Encode())
			if err != nil || !dec.Equal(p) {
				t.Fatalf("Decode(Encode()) = %v, %v; want %s", dec, err, p)
			}
			if dec.Key() != p.Key() || dec.Key() != string(p.Encode()) {
				t.Fatalf("Key = %x, want %x, the encoding", dec.Key(), p.Key())
			}
		})
	}
}

func TestDecodeForms(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"all", mustMarshal(t, []any{"all"}), "all"},
		{"eq text", mustMarshal(t, []any{"eq", "owner", "alice"}), `owner == "alice"`},
		{"eq bytes differ from text", mustMarshal(t, []any{"eq", "owner", []byte("alice")}), `owner == cbor(45616c696365)`},
		{"param", mustMarshal(t, []any{"eq", "owner", map[string]any{"$": "sub"}}), `owner == $sub`},
		{"in param", mustMarshal(t, []any{"in", "team", map[string]any{"$": "claims.teams"}}), `team in $claims.teams`},
		{"has", mustMarshal(t, []any{"has", "members", map[string]any{"$": "sub"}}), `members has $sub`},
		{"nested literal $ map stays a value", mustMarshal(t, []any{"eq", "v", []any{map[string]any{"$": "sub"}}}), `v == [{"$":"sub"}]`},
		// [ "eq", "n", 1.5 as float64 ]: values in any width are normalized.
		{"wide float", unhex(t, "83626571616efb3ff8000000000000"), `n == 1.5`},
		// A map value with keys out of order.
		{"unsorted map", unhex(t, "836265716166a2616201616101"), `f == {"a":1,"b":1}`},
		{"int map key", unhex(t, "836265716166a10102"), `f == cbor(a10102)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := scope.Decode(tt.in)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if got := p.String(); got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
			again, err := scope.Decode(p.Encode())
			if err != nil || string(again.Encode()) != string(p.Encode()) {
				t.Fatalf("re-decode: %v, %x want %x", err, again.Encode(), p.Encode())
			}
		})
	}
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// nest returns n levels of ["and", ...] around ["all"].
func nest(n int) any {
	var p any = []any{"eq", "a", 1}
	for range n - 1 {
		p = []any{"and", p}
	}
	return p
}

func TestDecodeErrors(t *testing.T) {
	bigList := make([]any, scope.MaxList+1)
	for i := range bigList {
		bigList[i] = i
	}
	manyNodes := []any{"or"}
	for i := range scope.MaxNodes {
		manyNodes = append(manyNodes, []any{"eq", "a", i})
	}
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty input", nil, crdt.ErrMalformed},
		{"not an array", mustMarshal(t, "eq"), crdt.ErrMalformed},
		{"empty array", mustMarshal(t, []any{}), crdt.ErrMalformed},
		{"operator not text", mustMarshal(t, []any{1, "a", 1}), crdt.ErrMalformed},
		{"eq without value", mustMarshal(t, []any{"eq", "a"}), crdt.ErrMalformed},
		{"eq with extra", mustMarshal(t, []any{"eq", "a", 1, 2}), crdt.ErrMalformed},
		{"field not text", mustMarshal(t, []any{"eq", 1, 1}), crdt.ErrMalformed},
		{"all with operand", mustMarshal(t, []any{"all", 1}), crdt.ErrMalformed},
		{"and without operand", mustMarshal(t, []any{"and"}), crdt.ErrMalformed},
		{"or operand not a predicate", mustMarshal(t, []any{"or", "x"}), crdt.ErrMalformed},
		{"in list not an array", mustMarshal(t, []any{"in", "a", "x"}), crdt.ErrMalformed},
		{"in list a literal map", mustMarshal(t, []any{"in", "a", map[string]any{"x": 1}}), crdt.ErrMalformed},
		{"trailing bytes", append(mustMarshal(t, []any{"all"}), 0), crdt.ErrMalformed},
		{"truncated", mustMarshal(t, []any{"eq", "a", "bc"})[:8], crdt.ErrMalformed},
		{"indefinite array", unhex(t, "9f63616c6cff"), crdt.ErrMalformed},
		{"tag", unhex(t, "83626571616ac101"), crdt.ErrMalformed},
		{"undefined", unhex(t, "836265716161f7"), crdt.ErrMalformed},
		{"unknown operator", mustMarshal(t, []any{"not", []any{"all"}}), crdt.ErrInvalid},
		{"empty field", mustMarshal(t, []any{"eq", "", 1}), crdt.ErrInvalid},
		{"control character in field", mustMarshal(t, []any{"eq", "a\n", 1}), crdt.ErrInvalid},
		{"long field", mustMarshal(t, []any{"eq", strings.Repeat("a", crdt.MaxFieldNameBytes+1), 1}), crdt.ErrInvalid},
		{"unknown parameter", mustMarshal(t, []any{"eq", "a", map[string]any{"$": "user"}}), crdt.ErrInvalid},
		{"empty claim segment", mustMarshal(t, []any{"eq", "a", map[string]any{"$": "claims..x"}}), crdt.ErrInvalid},
		{"bad claim character", mustMarshal(t, []any{"eq", "a", map[string]any{"$": "claims.a/b"}}), crdt.ErrInvalid},
		{"parameter not text", mustMarshal(t, []any{"eq", "a", map[string]any{"$": 1}}), crdt.ErrInvalid},
		{"$ with other keys", mustMarshal(t, []any{"eq", "a", map[string]any{"$": "sub", "b": 1}}), crdt.ErrInvalid},
		{"$ in list element", mustMarshal(t, []any{"in", "a", []any{map[string]any{"$": "sub", "b": 1}}}), crdt.ErrInvalid},
		{"too deep", mustMarshal(t, nest(scope.MaxDepth+1)), crdt.ErrTooLarge},
		{"too many nodes", mustMarshal(t, manyNodes), crdt.ErrTooLarge},
		{"list too long", mustMarshal(t, []any{"in", "a", bigList}), crdt.ErrTooLarge},
		{"too many bytes", mustMarshal(t, []any{"eq", "a", strings.Repeat("x", scope.MaxBytes)}), crdt.ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := scope.Decode(tt.in)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Decode(%x) = %v, %v; want error wrapping %v", tt.in, p, err, tt.want)
			}
		})
	}
	// At the limits, it decodes.
	for _, v := range []any{nest(scope.MaxDepth), manyNodes[:scope.MaxNodes], []any{"in", "a", bigList[:scope.MaxList]}} {
		if _, err := scope.FromValue(v); err != nil {
			t.Errorf("at the limit: %v", err)
		}
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		in   string
		want error
	}{
		{``, crdt.ErrMalformed},
		{`a`, crdt.ErrMalformed},
		{`a = 1`, crdt.ErrMalformed},
		{`a == `, crdt.ErrMalformed},
		{`a == 1 and`, crdt.ErrMalformed},
		{`a == 1 or or b == 1`, crdt.ErrMalformed},
		{`(a == 1`, crdt.ErrMalformed},
		{`a == 1)`, crdt.ErrMalformed},
		{`a in [1 2]`, crdt.ErrMalformed},
		{`a in [1,`, crdt.ErrMalformed},
		{`a in "x"`, crdt.ErrMalformed},
		{`all == 1`, crdt.ErrMalformed},
		{`and == 1`, crdt.ErrMalformed},
		{`a == 'x'`, crdt.ErrMalformed},
		{`a == cbor(zz)`, crdt.ErrMalformed},
		{`a == cbor(0102)`, crdt.ErrMalformed},
		{`a == cbor(c101)`, crdt.ErrMalformed},
		{"a == \"\xff\"", crdt.ErrMalformed},
		{`a == $user`, crdt.ErrInvalid},
		{`a == $`, crdt.ErrInvalid},
		{`a == $claims.`, crdt.ErrInvalid},
		{`"" == 1`, crdt.ErrInvalid},
		{`a == {"$": "sub", "b": 2}`, crdt.ErrInvalid},
		{`a == 1e999`, crdt.ErrInvalid},
		{`a == 18446744073709551616`, crdt.ErrInvalid},
		{strings.Repeat("(", scope.MaxDepth+1) + "all" + strings.Repeat(")", scope.MaxDepth+1), crdt.ErrTooLarge},
		{`a == "` + strings.Repeat("x", scope.MaxBytes) + `"`, crdt.ErrTooLarge},
		{strings.Repeat(" ", 4*scope.MaxBytes+1), crdt.ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.in[:min(len(tt.in), 40)], func(t *testing.T) {
			p, err := scope.Parse(tt.in)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Parse(%q) = %v, %v; want error wrapping %v", tt.in, p, err, tt.want)
			}
		})
	}
}

func TestFromValue(t *testing.T) {
	tests := []struct {
		name string
		in   any
		want string
	}{
		{"json numbers", []any{"in", "n", []any{float64(3), 2.5, float64(-7)}}, `n in [3, -7, 2.5]`},
		{"big json float", []any{"eq", "n", 1e300}, `n == 1e+300`},
		{"json.Number", []any{"eq", "n", jsonNumber("12345678901234567890")}, `n == 12345678901234567890`},
		{"go ints", []any{"in", "n", []int{1, 2}}, `n in [1, 2]`},
		{"strings", []string{"eq", "owner", "bob"}, `owner == "bob"`},
		{"param", []any{"or", []any{"eq", "o", map[string]any{"$": "sub"}}, []any{"all"}}, `all`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := scope.FromValue(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if got := p.String(); got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
	if _, err := scope.FromValue([]any{"eq", "n", make(chan int)}); !errors.Is(err, crdt.ErrInvalid) {
		t.Fatalf("unencodable value: %v, want ErrInvalid", err)
	}
}

func TestBind(t *testing.T) {
	params := scope.Params{
		"sub": "alice",
		"claims": map[string]any{
			"teams": []any{"red", "blue"},
			"none":  []any{},
			"org":   map[string]any{"id": float64(42)}, // as encoding/json decodes it
			"admin": true,
			"null":  nil,
			"many":  make([]any, scope.MaxList+1),
		},
	}
	tests := []struct {
		in, want string
		err      error
	}{
		{`owner == $sub`, `owner == "alice"`, nil},
		{`team in $claims.teams`, `team in ["red", "blue"]`, nil},
		{`team in $claims.none`, `team in []`, nil},
		{`team in [$sub, "green"]`, `team in ["alice", "green"]`, nil},
		{`org == $claims.org.id`, `org == 42`, nil},
		{`members has $sub and admin == $claims.admin`, `admin == true and members has "alice"`, nil},
		{`tags == $claims.teams`, `tags == ["red","blue"]`, nil},
		{`a == 1`, `a == 1`, nil},
		{`owner == $claims.missing`, ``, scope.ErrUnbound},
		{`owner == $claims.org.id.x`, ``, scope.ErrUnbound},
		{`owner == $claims.null`, ``, scope.ErrUnbound},
		{`org == $claims.org`, ``, crdt.ErrInvalid},
		{`team in $sub`, ``, crdt.ErrInvalid},
		{`team in $claims.many`, ``, crdt.ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			p := mustParse(t, tt.in)
			b, err := p.Bind(params)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("Bind = %v, %v; want error wrapping %v", b, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !b.Bound() || len(b.Params()) != 0 {
				t.Fatalf("bound predicate %s still has parameters %v", b, b.Params())
			}
			if got := b.String(); got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
	if _, err := mustParse(t, `a == $sub`).Bind(nil); !errors.Is(err, scope.ErrUnbound) {
		t.Fatalf("Bind(nil) = %v, want ErrUnbound", err)
	}
	var none *scope.Pred
	if b, err := none.Bind(params); b != nil || err != nil {
		t.Fatalf("nil.Bind = %v, %v; want nil, nil", b, err)
	}
}

func TestLookup(t *testing.T) {
	type claims map[string]any // a named map type, as jwt.MapClaims is
	ps := scope.Params{"sub": "s", "claims": claims{"org": map[string]string{"id": "o1"}}}
	for name, want := range map[string]any{"sub": "s", "claims.org.id": "o1"} {
		if got, ok := ps.Lookup(name); !ok || got != want {
			t.Errorf("Lookup(%q) = %v, %v; want %v", name, got, ok, want)
		}
	}
	for _, name := range []string{"claims.x", "sub.x", "claims.org.id.x", ""} {
		if got, ok := ps.Lookup(name); ok {
			t.Errorf("Lookup(%q) = %v, want missing", name, got)
		}
	}
}

func TestMatch(t *testing.T) {
	r := rec(t, map[string]any{
		"owner":   "alice",
		"team":    "red",
		"n":       1,
		"f":       1.0,
		"members": []any{"alice", "bob", []any{1}},
		"gone":    nil,
		"bytes":   []byte("alice"),
	})
	deleted := r.Clone()
	deleted.Deleted = stamp(3)
	partly := r.Clone()
	partly.Deleted = stamp(2)
	partly.Fields["team"] = crdt.Field{Stamp: stamp(4), Value: r.Fields["team"].Value}
	tests := []struct {
		pred string
		r    crdt.Record
		want bool
	}{
		{`all`, r, true},
		{`none`, r, false},
		{`all`, deleted, false},
		{`all`, crdt.Record{ID: "x"}, false},
		{`owner == "alice"`, r, true},
		{`owner == "bob"`, r, false},
		{`owner == "alice"`, deleted, false},
		{`bytes == "alice"`, r, false},
		{`bytes == cbor(45616c696365)`, r, true},
		{`n == 1`, r, true},
		{`n == cbor(f93c00)`, r, false},
		{`f == cbor(f93c00)`, r, true},
		{`f == 1`, r, false},
		{`gone == null`, r, false},
		{`missing == null`, r, false},
		{`team in ["blue", "red"]`, r, true},
		{`team in ["blue"]`, r, false},
		{`team in []`, r, false},
		{`team in ["a", "b", "c", "d", "e", "f", "g", "h", "i", "red"]`, r, true},
		{`team in ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]`, r, false},
		{`members has "bob"`, r, true},
		{`members has [1]`, r, true},
		{`members has 1`, r, false},
		{`owner has "alice"`, r, false},
		{`owner == "alice" and team == "blue"`, r, false},
		{`owner == "alice" or team == "blue"`, r, true},
		{`owner == "alice"`, partly, false},
		{`team == "red"`, partly, true},
		{`all`, partly, true},
		{`owner == $sub`, r, false}, // unbound matches nothing
	}
	for _, tt := range tests {
		t.Run(tt.pred, func(t *testing.T) {
			if got := mustParse(t, tt.pred).Match(tt.r); got != tt.want {
				t.Fatalf("Match = %v, want %v", got, tt.want)
			}
		})
	}
	var nilPred *scope.Pred
	if !nilPred.Match(r) || nilPred.Match(deleted) {
		t.Fatal("nil must match exactly the existing records")
	}
	// A record built in Go holding bytes that are not CBOR must not panic.
	bad := crdt.Record{ID: "x", Fields: map[string]crdt.Field{"members": {Stamp: stamp(1), Value: []byte{0x83, 0x01}}}}
	if mustParse(t, `members has 2`).Match(bad) {
		t.Fatal("a truncated array matched")
	}
}

func TestAndOr(t *testing.T) {
	a, b, c := mustParse(t, `a == 1`), mustParse(t, `b == 2 or c == 3`), mustParse(t, `d == 4 and e == 5`)
	tests := []struct {
		name string
		got  *scope.Pred
		want string // "" for nil
	}{
		{"And()", scope.And(), ""},
		{"And(nil)", scope.And(nil, nil), ""},
		{"And(nil, a)", scope.And(nil, a), `a == 1`},
		{"And(a, b)", scope.And(a, b), `a == 1 and (b == 2 or c == 3)`},
		{"And flattens", scope.And(a, c), `a == 1 and d == 4 and e == 5`},
		{"Or()", scope.Or(), `none`},
		{"Or(a, nil)", scope.Or(a, nil), ""},
		{"Or flattens", scope.Or(a, b), `a == 1 or b == 2 or c == 3`},
		{"Or(a, c)", scope.Or(c, a), `a == 1 or d == 4 and e == 5`},
		{"Or(a, a)", scope.Or(a, a), `a == 1`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.want == "" {
				if tt.got != nil {
					t.Fatalf("got %s, want nil", tt.got)
				}
				return
			}
			if tt.got.String() != tt.want {
				t.Fatalf("got %q, want %q", tt.got, tt.want)
			}
		})
	}
	// Combining a scope with parameters leaves it to bind.
	s := scope.And(mustParse(t, `status == "open"`), mustParse(t, `owner == $sub`))
	if s.Bound() || len(s.Params()) != 1 {
		t.Fatalf("%s: Params = %v", s, s.Params())
	}
	bound, err := s.Bind(scope.Params{"sub": "alice"})
	if err != nil || bound.String() != `owner == "alice" and status == "open"` {
		t.Fatalf("Bind = %v, %v", bound, err)
	}
}

func TestAccessors(t *testing.T) {
	p := mustParse(t, `z == $sub or (a in $claims.t and z has $claims.u.v)`)
	if got := strings.Join(p.Fields(), ","); got != "a,z" {
		t.Errorf("Fields = %s, want a,z", got)
	}
	if got := strings.Join(p.Params(), ","); got != "claims.t,claims.u.v,sub" {
		t.Errorf("Params = %s", got)
	}
	var nilPred *scope.Pred
	if nilPred.String() != "all" || nilPred.Encode() != nil || nilPred.Key() != "" || !nilPred.Bound() || nilPred.Params() != nil || nilPred.Fields() != nil {
		t.Error("nil accessors")
	}
	// Encode returns a copy: changing it does not change p.
	enc := p.Encode()
	enc[0] = 0
	if p.Encode()[0] == 0 {
		t.Error("Encode shares p's bytes")
	}
}

type jsonNumber = json.Number
