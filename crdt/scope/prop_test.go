package scope_test

import (
	"errors"
	"reflect"
	"slices"
	"testing"

	"pgregory.net/rapid"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/crdt/scope"
)

// The property tests draw predicates as generic values (the shape
// FromValue reads) from a small domain, so that records match often, and
// hold the package to a deliberately naive evaluator over those generic
// values.

var fieldNames = []string{"a", "b", "c"}

// drawScalar draws a value of the domain: integers, text, a boolean,
// null, a float and a byte string (which never equals the text "a").
func drawScalar(t *rapid.T, label string) any {
	return rapid.SampledFrom([]any{int64(0), int64(1), int64(2), "a", "b", true, nil, 1.5, []byte("a")}).Draw(t, label)
}

func drawValue(t *rapid.T, label string) any {
	if rapid.IntRange(0, 4).Draw(t, label+"-kind") == 0 {
		n := rapid.IntRange(0, 2).Draw(t, label+"-len")
		arr := make([]any, n)
		for i := range arr {
			arr[i] = drawScalar(t, label)
		}
		return arr
	}
	return drawScalar(t, label)
}

func param(name string) any { return map[string]any{"$": name} }

// drawPred draws a predicate in generic form; with params, value
// positions may hold the parameters sub and claims.teams.
func drawPred(t *rapid.T, depth int, params bool) any {
	kind := rapid.IntRange(0, 6).Draw(t, "op")
	if depth >= 3 && kind >= 5 {
		kind = 1
	}
	field := rapid.SampledFrom(fieldNames).Draw(t, "field")
	usesParam := func() bool { return params && rapid.IntRange(0, 3).Draw(t, "param") == 0 }
	switch kind {
	case 0:
		return []any{rapid.SampledFrom([]string{"all", "none"}).Draw(t, "const")}
	case 1:
		if usesParam() {
			return []any{"eq", field, param("sub")}
		}
		return []any{"eq", field, drawValue(t, "eq")}
	case 2, 3:
		if usesParam() {
			return []any{"in", field, param("claims.teams")}
		}
		list := make([]any, rapid.IntRange(0, 10).Draw(t, "n"))
		for i := range list {
			if usesParam() {
				list[i] = param("sub")
			} else {
				list[i] = drawValue(t, "in")
			}
		}
		return []any{"in", field, list}
	case 4:
		if usesParam() {
			return []any{"has", field, param("sub")}
		}
		return []any{"has", field, drawScalar(t, "has")}
	}
	op := []string{"and", "or"}[kind-5]
	out := []any{op}
	for range rapid.IntRange(1, 3).Draw(t, "kids") {
		out = append(out, drawPred(t, depth+1, params))
	}
	return out
}

func drawParams(t *rapid.T) scope.Params {
	teams := make([]any, rapid.IntRange(0, 3).Draw(t, "teams"))
	for i := range teams {
		teams[i] = drawScalar(t, "team")
	}
	sub := rapid.SampledFrom([]any{"a", "b", int64(1)}).Draw(t, "sub")
	return scope.Params{"sub": sub, "claims": map[string]any{"teams": teams}}
}

// refField is a field of a reference record.
type refField struct {
	set   bool // false: unset
	wall  int64
	value any
}

type refRecord struct {
	deleted int64 // 0: never deleted
	fields  map[string]refField
}

func drawRecord(t *rapid.T) refRecord {
	r := refRecord{deleted: int64(rapid.IntRange(0, 3).Draw(t, "deleted")), fields: map[string]refField{}}
	for _, name := range fieldNames {
		switch rapid.IntRange(0, 3).Draw(t, "state") {
		case 0: // absent
		case 1:
			r.fields[name] = refField{wall: int64(rapid.IntRange(1, 4).Draw(t, "wall"))}
		default:
			r.fields[name] = refField{set: true, wall: int64(rapid.IntRange(1, 4).Draw(t, "wall")), value: drawValue(t, "value")}
		}
	}
	return r
}

func (r refRecord) record(t *rapid.T) crdt.Record {
	out := crdt.Record{ID: "x", Fields: map[string]crdt.Field{}}
	if r.deleted > 0 {
		out.Deleted = stamp(r.deleted)
	}
	for name, f := range r.fields {
		cf := crdt.Field{Stamp: stamp(f.wall)}
		if f.set {
			b, err := crdt.EncodeValue(f.value)
			if err != nil {
				t.Fatal(err)
			}
			cf.Value = b
		}
		out.Fields[name] = cf
	}
	return out
}

func (r refRecord) visible(name string) (any, bool) {
	f, ok := r.fields[name]
	if !ok || !f.set || f.wall <= r.deleted {
		return nil, false
	}
	return f.value, true
}

func (r refRecord) exists() bool {
	for name := range r.fields {
		if _, ok := r.visible(name); ok {
			return true
		}
	}
	return false
}

// resolve replaces a parameter by its value.
func resolve(v any, params scope.Params) any {
	if m, ok := v.(map[string]any); ok {
		if name, ok := m["$"].(string); ok {
			got, _ := params.Lookup(name)
			return got
		}
	}
	return v
}

// refMatch evaluates a generic predicate the obvious way.
func refMatch(p any, params scope.Params, r refRecord) bool {
	a := p.([]any)
	switch a[0] {
	case "all":
		return r.exists()
	case "none":
		return false
	case "and":
		for _, k := range a[1:] {
			if !refMatch(k, params, r) {
				return false
			}
		}
		return true
	case "or":
		for _, k := range a[1:] {
			if refMatch(k, params, r) {
				return true
			}
		}
		return false
	}
	v, ok := r.visible(a[1].(string))
	if !ok {
		return false
	}
	want := resolve(a[2], params)
	switch a[0] {
	case "eq":
		return reflect.DeepEqual(v, want)
	case "in":
		for _, e := range want.([]any) {
			if reflect.DeepEqual(v, resolve(e, params)) {
				return true
			}
		}
		return false
	case "has":
		arr, ok := v.([]any)
		for i := 0; ok && i < len(arr); i++ {
			if reflect.DeepEqual(arr[i], want) {
				return true
			}
		}
		return false
	}
	panic("unknown operator")
}

func fromValue(t *rapid.T, v any) *scope.Pred {
	p, err := scope.FromValue(v)
	if err != nil {
		t.Fatalf("FromValue(%v): %v", v, err)
	}
	return p
}

func checkRoundTrips(t *rapid.T, p *scope.Pred) {
	dec, err := scope.Decode(p.Encode())
	if err != nil || string(dec.Encode()) != string(p.Encode()) {
		t.Fatalf("Decode(Encode(%s)) = %v, %v", p, dec, err)
	}
	parsed, err := scope.Parse(p.String())
	if err != nil || string(parsed.Encode()) != string(p.Encode()) {
		t.Fatalf("Parse(%q) = %v, %v", p.String(), parsed, err)
	}
	if parsed.String() != p.String() || parsed.Key() != p.Key() {
		t.Fatalf("Parse(%q) prints %q, key %x want %x", p.String(), parsed.String(), parsed.Key(), p.Key())
	}
}

// bindsNull reports whether binding p with params meets a null in the
// list claims.teams, which Bind refuses (ErrUnbound: a null is a value the
// principal lacks); drawPred uses that parameter only as the whole list of
// an in, and p.Params holds it when normalizing left such an in.
func bindsNull(p *scope.Pred, params scope.Params) bool {
	if !slices.Contains(p.Params(), "claims.teams") {
		return false
	}
	for _, team := range params["claims"].(map[string]any)["teams"].([]any) {
		if team == nil {
			return true
		}
	}
	return false
}

// unboundNull checks that Bind refuses p with params when bindsNull says
// so, and reports whether it did.
func unboundNull(t *rapid.T, p *scope.Pred, params scope.Params) bool {
	if !bindsNull(p, params) {
		return false
	}
	if b, err := p.Bind(params); !errors.Is(err, scope.ErrUnbound) {
		t.Fatalf("Bind(%s) with teams %v: %v, %v, want unbound", p, params["claims"], b, err)
	}
	return true
}

func TestPropRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		p := fromValue(t, drawPred(t, 1, true))
		checkRoundTrips(t, p)
		params := drawParams(t)
		if unboundNull(t, p, params) {
			return
		}
		b, err := p.Bind(params)
		if err != nil {
			t.Fatalf("Bind(%s): %v", p, err)
		}
		checkRoundTrips(t, b)
	})
}

func TestPropMatchReference(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		g := drawPred(t, 1, true)
		params := drawParams(t)
		if unboundNull(t, fromValue(t, g), params) {
			return
		}
		p, err := fromValue(t, g).Bind(params)
		if err != nil {
			t.Fatal(err)
		}
		r := drawRecord(t)
		if got, want := p.Match(r.record(t)), refMatch(g, params, r); got != want {
			t.Fatalf("%s (bound from %v) on %+v: Match = %v, reference = %v", p, g, r, got, want)
		}
		// The text form matches the same.
		q, err := scope.Parse(p.String())
		if err != nil {
			t.Fatal(err)
		}
		if got, want := q.Match(r.record(t)), refMatch(g, params, r); got != want {
			t.Fatalf("text form %s: Match = %v, reference %v", p, got, want)
		}
	})
}

// drawMaybe draws a bound predicate or nil (everything).
func drawMaybe(t *rapid.T, label string) *scope.Pred {
	if rapid.IntRange(0, 4).Draw(t, label) == 0 {
		return nil
	}
	return fromValue(t, drawPred(t, 2, false))
}

func TestPropAndOr(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		a, b, c := drawMaybe(t, "a"), drawMaybe(t, "b"), drawMaybe(t, "c")
		r := drawRecord(t).record(t)
		ma, mb, mc := a.Match(r), b.Match(r), c.Match(r)
		if got := scope.And(a, b).Match(r); got != (ma && mb) {
			t.Fatalf("And(%s, %s) = %v, want %v", a, b, got, ma && mb)
		}
		if got := scope.Or(a, b).Match(r); got != (ma || mb) {
			t.Fatalf("Or(%s, %s) = %v, want %v", a, b, got, ma || mb)
		}
		if got := scope.And(a, scope.Or(b, c)).Match(r); got != (ma && (mb || mc)) {
			t.Fatalf("And(a, Or(b, c)) = %v", got)
		}
		// Normal forms: order and grouping do not change the encoding.
		if !scope.And(a, scope.And(b, c)).Equal(scope.And(scope.And(c, a), b)) {
			t.Fatalf("And is not associative and commutative in form: %s vs %s", scope.And(a, scope.And(b, c)), scope.And(scope.And(c, a), b))
		}
		if !scope.Or(a, scope.Or(b, c)).Equal(scope.Or(scope.Or(c, a), b)) {
			t.Fatalf("Or is not associative and commutative in form")
		}
		if p := scope.And(a, b); p != nil && p.Encode() != nil {
			dec, err := scope.Decode(p.Encode())
			if err == nil && !dec.Equal(p) {
				t.Fatalf("Decode(Encode(%s)) = %s", p, dec)
			}
		}
	})
}
