package scope

import (
	"encoding/json"
	"fmt"
	"math/big"
	"reflect"
	"strings"

	"github.com/convergo/convergo/crdt"
)

// FromValue builds a predicate from its wire form held in generic Go
// values, as encoding/json or a CBOR library decodes them into an any:
// []any for arrays, map[string]any for maps, string, bool, nil, numbers
// of any Go type and json.Number. Numbers take JSON's view, as the browser
// client does: a whole number in the safe integer range (|n| < 2^53, and
// not -0) is an integer, whatever its Go type; other numbers are floats. A
// json.Number written without fraction or exponent is an integer of any
// size CBOR holds. []byte is a byte string; other Go values are encoded as
// crdt.EncodeValue encodes them. Errors are those of Decode.
func FromValue(v any) (*Pred, error) {
	b, err := appendGo(nil, v, 0)
	if err != nil {
		return nil, fmt.Errorf("scope from value: %w", err)
	}
	if len(b) > 4*MaxBytes {
		return nil, fmt.Errorf("scope from value: %w: %d bytes", crdt.ErrTooLarge, len(b))
	}
	p, err := decode(b)
	if err != nil {
		return nil, fmt.Errorf("scope from value: %w", err)
	}
	return p, nil
}

// paramRef is a parameter in a generic value, as Parse builds them.
type paramRef string

// rawValue is a value given as its CBOR bytes (the text form's cbor(...)).
type rawValue []byte

// maxGoDepth bounds the nesting appendGo follows: deeper than any
// predicate holding values crdt accepts.
const maxGoDepth = MaxDepth + crdt.MaxValueNestedLevels + 2

// appendGo appends the CBOR encoding of a generic Go value.
func appendGo(b []byte, v any, depth int) ([]byte, error) {
	if depth > maxGoDepth {
		return nil, fmt.Errorf("%w: value nested deeper than %d", crdt.ErrTooLarge, maxGoDepth)
	}
	var err error
	switch x := v.(type) {
	case nil:
		return append(b, 0xf6), nil
	case bool:
		if x {
			return append(b, 0xf5), nil
		}
		return append(b, 0xf4), nil
	case string:
		return appendText(b, x), nil
	case []byte:
		return append(crdt.AppendHead(b, 2, uint64(len(x))), x...), nil
	case paramRef:
		return append(b, paramEnc(string(x))...), nil
	case rawValue:
		return append(b, x...), nil
	case json.Number:
		return crdt.AppendJSONNumber(b, string(x))
	case float64:
		return crdt.AppendJSONFloat(b, x), nil
	case float32:
		return crdt.AppendJSONFloat(b, float64(x)), nil
	case *big.Int:
		return crdt.AppendBigInt(b, x)
	case []any:
		b = crdt.AppendHead(b, 4, uint64(len(x)))
		for _, e := range x {
			if b, err = appendGo(b, e, depth+1); err != nil {
				return nil, err
			}
		}
		return b, nil
	case map[string]any:
		b = crdt.AppendHead(b, 5, uint64(len(x)))
		for k, e := range x {
			b = appendText(b, k)
			if b, err = appendGo(b, e, depth+1); err != nil {
				return nil, err
			}
		}
		return b, nil
	case Params:
		return appendGo(b, map[string]any(x), depth)
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return crdt.AppendBigInt(b, big.NewInt(rv.Int()))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return crdt.AppendHead(b, 0, rv.Uint()), nil
	case reflect.Float32, reflect.Float64:
		return crdt.AppendJSONFloat(b, rv.Float()), nil
	case reflect.String:
		return appendText(b, rv.String()), nil
	case reflect.Slice, reflect.Array:
		if rv.Kind() == reflect.Slice && rv.Type().Elem().Kind() == reflect.Uint8 {
			break // a named byte slice: a byte string, as EncodeValue writes it
		}
		b = crdt.AppendHead(b, 4, uint64(rv.Len()))
		for i := range rv.Len() {
			if b, err = appendGo(b, rv.Index(i).Interface(), depth+1); err != nil {
				return nil, err
			}
		}
		return b, nil
	case reflect.Map:
		if rv.Type().Key().Kind() != reflect.String {
			break
		}
		b = crdt.AppendHead(b, 5, uint64(rv.Len()))
		for it := rv.MapRange(); it.Next(); {
			b = appendText(b, it.Key().String())
			if b, err = appendGo(b, it.Value().Interface(), depth+1); err != nil {
				return nil, err
			}
		}
		return b, nil
	}
	enc, err := crdt.EncodeValue(v)
	if err != nil {
		return nil, err
	}
	return append(b, enc...), nil
}

// Params are the values parameters bind to: "sub" to the principal's
// subject, "claims" to the map of the token's claims. Values are generic
// Go values as in FromValue; nested maps may be map[string]any, Params or
// any map with string keys.
type Params map[string]any

// Lookup returns the value of a parameter name, a dotted path into ps
// ("claims.org.id" is ps["claims"]["org"]["id"]), and whether it is there.
func (ps Params) Lookup(name string) (any, bool) {
	var cur any = map[string]any(ps)
	for seg := range strings.SplitSeq(name, ".") {
		switch m := cur.(type) {
		case map[string]any:
			v, ok := m[seg]
			if !ok {
				return nil, false
			}
			cur = v
		case Params:
			v, ok := m[seg]
			if !ok {
				return nil, false
			}
			cur = v
		default:
			rv := reflect.ValueOf(cur)
			if rv.Kind() != reflect.Map || rv.Type().Key().Kind() != reflect.String {
				return nil, false
			}
			e := rv.MapIndex(reflect.ValueOf(seg).Convert(rv.Type().Key()))
			if !e.IsValid() {
				return nil, false
			}
			cur = e.Interface()
		}
	}
	return cur, true
}

// Bind returns p with every parameter replaced by its value in params. A
// parameter params does not hold, or holds as null, is an error wrapping
// ErrUnbound: a scope naming a claim the token lacks must fail, not match
// records whose field is null. A parameter standing for the whole list of
// an "in" must bind to an array, whose elements become the list, and
// which holds no null (ErrUnbound, for the same reason); any
// parameter bound to a map (or a list element that is one) wraps
// crdt.ErrInvalid. The result is checked against the limits (ErrTooLarge).
// A p without parameters is returned as it is.
func (p *Pred) Bind(params Params) (*Pred, error) {
	if p.Bound() {
		return p, nil
	}
	b := binder{params: params, memo: map[string]term{}}
	root, err := b.node(p.root)
	if err != nil {
		return nil, fmt.Errorf("bind scope: %w", err)
	}
	q, err := finish(root, true)
	if err != nil {
		return nil, fmt.Errorf("bind scope: %w", err)
	}
	return q, nil
}

type binder struct {
	params Params
	memo   map[string]term
}

// value returns the canonical bytes of parameter name's value.
func (b *binder) value(name string) ([]byte, error) {
	v, ok := b.params.Lookup(name)
	if !ok || v == nil {
		return nil, fmt.Errorf("parameter %s: %w", name, ErrUnbound)
	}
	raw, err := appendGo(nil, v, 0)
	if err != nil {
		return nil, fmt.Errorf("parameter %s: %w", name, err)
	}
	c, err := crdt.NormalizeValue(raw)
	if err != nil {
		return nil, fmt.Errorf("parameter %s: %w", name, err)
	}
	return c, nil
}

func (b *binder) term(t term) (term, error) {
	if t.param == "" {
		return t, nil
	}
	if v, ok := b.memo[t.param]; ok {
		return v, nil
	}
	c, err := b.value(t.param)
	if err != nil {
		return term{}, err
	}
	if c[0]>>5 == 5 {
		return term{}, fmt.Errorf("%w: parameter %s is bound to a map", crdt.ErrInvalid, t.param)
	}
	v := term{val: string(c)}
	b.memo[t.param] = v
	return v, nil
}

func (b *binder) node(n *node) (*node, error) {
	switch n.op {
	case opEq, opHas:
		v, err := b.term(n.val)
		if err != nil {
			return nil, err
		}
		return newNode(&node{op: n.op, field: n.field, val: v}), nil
	case opIn:
		c := &node{op: opIn, field: n.field}
		if n.listParam == "" {
			c.list = make([]term, len(n.list))
			for i, t := range n.list {
				v, err := b.term(t)
				if err != nil {
					return nil, err
				}
				c.list[i] = v
			}
			return newNode(c), nil
		}
		v, err := b.value(n.listParam)
		if err != nil {
			return nil, err
		}
		if v[0]>>5 != 4 {
			return nil, fmt.Errorf("%w: parameter %s of an in list is bound to a value that is not an array", crdt.ErrInvalid, n.listParam)
		}
		count, off := readHead(v, 0)
		if count > MaxList {
			return nil, fmt.Errorf("%w: parameter %s: list of %d values exceeds %d", crdt.ErrTooLarge, n.listParam, count, MaxList)
		}
		c.list = make([]term, 0, count)
		for range count {
			end := itemEnd(v, off)
			if v[off]>>5 == 5 {
				return nil, fmt.Errorf("%w: parameter %s holds a map", crdt.ErrInvalid, n.listParam)
			}
			if v[off] == 0xf6 {
				// A null in the list is a value the principal lacks, as
				// a null parameter is: it would match records whose
				// field is null.
				return nil, fmt.Errorf("parameter %s holds null: %w", n.listParam, ErrUnbound)
			}
			c.list = append(c.list, term{val: string(v[off:end])})
			off = end
		}
		return newNode(c), nil
	case opAnd, opOr:
		c := &node{op: n.op, kids: make([]*node, len(n.kids))}
		for i, k := range n.kids {
			var err error
			if c.kids[i], err = b.node(k); err != nil {
				return nil, err
			}
		}
		return newNode(c), nil
	}
	return n, nil
}
