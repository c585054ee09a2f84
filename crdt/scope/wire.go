package scope

import (
	"encoding/binary"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/fxamacker/cbor/v2"

	"github.com/convergo/convergo/crdt"
)

// Decode decodes a predicate in wire form: one CBOR data item, decoded
// with crdt's hardened decoder. Values may be in any encoding of crdt's
// value model; they are held in canonical form. Errors wrap
// crdt.ErrMalformed (not well-formed CBOR, or not the shape of a
// predicate), crdt.ErrInvalid (an unknown operator, a bad field or
// parameter name) or crdt.ErrTooLarge (over the limits).
func Decode(data []byte) (*Pred, error) {
	if len(data) > MaxBytes {
		return nil, fmt.Errorf("decode scope: %w: %d bytes exceeds %d", crdt.ErrTooLarge, len(data), MaxBytes)
	}
	p, err := decode(data)
	if err != nil {
		return nil, fmt.Errorf("decode scope: %w", err)
	}
	return p, nil
}

func decode(data []byte) (*Pred, error) {
	var d decoder
	root, err := d.pred(data, 1)
	if err != nil {
		return nil, err
	}
	return finish(root, true)
}

type decoder struct{ nodes int }

func (d *decoder) pred(raw []byte, depth int) (*node, error) {
	if depth > MaxDepth {
		return nil, fmt.Errorf("%w: nested deeper than %d", crdt.ErrTooLarge, MaxDepth)
	}
	if d.nodes++; d.nodes > MaxNodes {
		return nil, fmt.Errorf("%w: more than %d predicates", crdt.ErrTooLarge, MaxNodes)
	}
	var items []cbor.RawMessage
	if err := crdt.Unmarshal(raw, &items); err != nil {
		return nil, fmt.Errorf("predicate must be an array: %w", err)
	}
	if len(items) == 0 {
		return nil, fmt.Errorf("%w: empty predicate", crdt.ErrMalformed)
	}
	var name string
	if err := crdt.Unmarshal(items[0], &name); err != nil {
		return nil, fmt.Errorf("operator must be text: %w", err)
	}
	op, ok := opByName(name)
	if !ok {
		return nil, fmt.Errorf("%w: unknown operator %q", crdt.ErrInvalid, name)
	}
	n := &node{op: op}
	switch op {
	case opAll, opNone:
		if len(items) != 1 {
			return nil, fmt.Errorf("%w: %s takes no operands", crdt.ErrMalformed, name)
		}
	case opAnd, opOr:
		if len(items) < 2 {
			return nil, fmt.Errorf("%w: %s needs at least one operand", crdt.ErrMalformed, name)
		}
		for _, it := range items[1:] {
			k, err := d.pred(it, depth+1)
			if err != nil {
				return nil, err
			}
			n.kids = append(n.kids, k)
		}
	default:
		if len(items) != 3 {
			return nil, fmt.Errorf("%w: %s takes a field and a value", crdt.ErrMalformed, name)
		}
		if err := crdt.Unmarshal(items[1], &n.field); err != nil {
			return nil, fmt.Errorf("%s: field name must be text: %w", name, err)
		}
		if err := crdt.ValidateFieldName(n.field); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		var err error
		if op == opIn {
			err = n.decodeList(items[2])
		} else {
			n.val, err = decodeTerm(items[2])
		}
		if err != nil {
			return nil, fmt.Errorf("%s %q: %w", name, n.field, err)
		}
	}
	return newNode(n), nil
}

func opByName(name string) (opKind, bool) {
	for i, s := range opNames {
		if s == name {
			return opKind(i), true
		}
	}
	return 0, false
}

// decodeList decodes the list of an "in": an array of values or a
// parameter.
func (n *node) decodeList(raw []byte) error {
	v, err := crdt.NormalizeValue(raw)
	if err != nil {
		return err
	}
	switch v[0] >> 5 {
	case 5:
		t, err := classify(v)
		if err != nil {
			return err
		}
		if t.param == "" {
			return fmt.Errorf("%w: list must be an array or a parameter, not a map", crdt.ErrMalformed)
		}
		n.listParam = t.param
		return nil
	case 4:
	default:
		return fmt.Errorf("%w: list must be an array or a parameter", crdt.ErrMalformed)
	}
	count, off := readHead(v, 0)
	if count > MaxList {
		return fmt.Errorf("%w: list of %d values exceeds %d", crdt.ErrTooLarge, count, MaxList)
	}
	n.list = make([]term, 0, count)
	for range count {
		end := itemEnd(v, off)
		t, err := classify(v[off:end])
		if err != nil {
			return err
		}
		n.list = append(n.list, t)
		off = end
	}
	return nil
}

// decodeTerm decodes a value position: a value or a parameter.
func decodeTerm(raw []byte) (term, error) {
	v, err := crdt.NormalizeValue(raw)
	if err != nil {
		return term{}, err
	}
	return classify(v)
}

// classify turns canonical value bytes at a value position into a term: a
// map with the key "$" is a parameter and must be exactly {"$": name}.
func classify(v []byte) (term, error) {
	if v[0]>>5 != 5 {
		return term{val: string(v)}, nil
	}
	pairs, off := readHead(v, 0)
	for i := uint64(0); i < pairs; i++ {
		kend := itemEnd(v, off)
		vend := itemEnd(v, kend)
		if string(v[off:kend]) != "\x61$" {
			off = vend
			continue
		}
		if pairs != 1 || v[kend]>>5 != 3 {
			return term{}, fmt.Errorf(`%w: a map with the key "$" must be a parameter {"$": name}`, crdt.ErrInvalid)
		}
		_, s := readHead(v, kend)
		name := string(v[s:vend])
		if err := validateParam(name); err != nil {
			return term{}, err
		}
		return term{param: name}, nil
	}
	return term{val: string(v)}, nil
}

// validateParam checks a parameter name: "sub", or "claims." followed by
// a dotted path of segments of ASCII letters, digits, '_' and '-'.
func validateParam(name string) error {
	path, ok := strings.CutPrefix(name, "claims.")
	switch {
	case name == "sub":
		return nil
	case !ok || len(name) > maxParamBytes:
		return fmt.Errorf(`%w: parameter %q: names are "sub" and "claims.X", at most %d bytes`, crdt.ErrInvalid, name, maxParamBytes)
	}
	for seg := range strings.SplitSeq(path, ".") {
		if seg == "" {
			return fmt.Errorf("%w: parameter %q has an empty path segment", crdt.ErrInvalid, name)
		}
		// By character, so that a refusal names the one it refuses whole
		// (a byte that begins none reads as U+FFFD).
		for _, r := range seg {
			if r >= utf8.RuneSelf || !isParamChar(byte(r)) {
				return fmt.Errorf("%w: parameter %q has forbidden character %q", crdt.ErrInvalid, name, string(r))
			}
		}
	}
	return nil
}

func isParamChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// readHead reads the head at off of well-formed CBOR: its argument and the
// offset after it. For floats the argument is the bits.
func readHead(b []byte, off int) (arg uint64, next int) {
	info := b[off] & 0x1f
	off++
	switch info {
	case 24:
		return uint64(b[off]), off + 1
	case 25:
		return uint64(binary.BigEndian.Uint16(b[off:])), off + 2
	case 26:
		return uint64(binary.BigEndian.Uint32(b[off:])), off + 4
	case 27:
		return binary.BigEndian.Uint64(b[off:]), off + 8
	}
	return uint64(info), off
}

// headEnd returns the offset after the head at off, or -1 when b does not
// hold a whole definite-length head there.
func headEnd(b []byte, off int) int {
	if off < 0 || off >= len(b) {
		return -1
	}
	info := int(b[off] & 0x1f)
	switch {
	case info < 24:
		return off + 1
	case info > 27:
		return -1
	}
	end := off + 1 + 1<<(info-24)
	if end > len(b) {
		return -1
	}
	return end
}

// itemEnd returns the offset just past the CBOR item at off, or -1 when b
// does not hold a whole definite-length item there. It walks without
// recursion, so hostile nesting costs no stack.
func itemEnd(b []byte, off int) int {
	for need := uint64(1); need > 0; need-- {
		if headEnd(b, off) < 0 {
			return -1
		}
		major := b[off] >> 5
		arg, next := readHead(b, off)
		off = next
		rest := uint64(len(b) - off)
		switch major {
		case 2, 3:
			if arg > rest {
				return -1
			}
			off += int(arg)
		case 4:
			if arg > rest {
				return -1
			}
			need += arg
		case 5:
			if arg > rest/2 {
				return -1
			}
			need += 2 * arg
		case 6:
			need++
		}
	}
	return off
}

// Match reports whether p holds for r. A record that does not exist
// (deleted, or with every field unset) matches nothing, and a missing,
// unset or hidden field matches no comparison. A nil p matches every
// existing record; a p with parameters left matches nothing.
//
// Its cost is bounded by the record and p's own size, whatever p holds:
// each "has" field's array is walked at most once per call, for every
// value p's "has" predicates look for in it at once (Pred.needles), and an
// "eq" or "in" reads no more of a value than its longest operand.
func (p *Pred) Match(r crdt.Record) bool {
	if p == nil {
		return r.Exists()
	}
	if len(p.params) != 0 {
		return false
	}
	m := matcher{p: p, r: &r}
	return m.match(p.root)
}

// onWalk, when set (by tests), is called at each walk of an array.
var onWalk func()

// matcher is one Match call: what it found in the arrays it walked.
type matcher struct {
	p *Pred
	r *crdt.Record
	// found holds, per field whose array was walked, the values of
	// p.needles[field] the array holds.
	found map[string]map[string]bool
}

func (m *matcher) match(n *node) bool {
	r := m.r
	switch n.op {
	case opAll:
		return r.Exists()
	case opNone:
		return false
	case opAnd:
		for _, k := range n.kids {
			if !m.match(k) {
				return false
			}
		}
		return true
	case opOr:
		for _, k := range n.kids {
			if m.match(k) {
				return true
			}
		}
		return false
	}
	f, ok := r.Fields[n.field]
	if !ok || f.Value == nil || f.Stamp.Compare(r.Deleted) <= 0 {
		return false
	}
	v := f.Value
	switch n.op {
	case opEq:
		return string(v) == n.val.val
	case opIn:
		if n.set != nil {
			if len(v) > n.maxLen {
				return false // not hashed: a long value costs nothing
			}
			_, ok := n.set[string(v)]
			return ok
		}
		for _, s := range n.vals {
			if string(v) == s {
				return true
			}
		}
		return false
	}
	// has: v is an array holding the value.
	needles := m.p.needles[n.field]
	if needles == nil { // the only "has" of its field: walked once anyway
		return walkArray(v, func(item string) bool { return item == n.val.val })
	}
	found, ok := m.found[n.field]
	if !ok {
		found = map[string]bool{}
		if len(needles) == 1 { // every "has" of the field looks for n's value
			found[n.val.val] = walkArray(v, func(item string) bool { return item == n.val.val })
		} else {
			walkArray(v, func(item string) bool {
				if _, ok := needles[item]; ok {
					found[item] = true
					return len(found) == len(needles)
				}
				return false
			})
		}
		if m.found == nil {
			m.found = map[string]map[string]bool{}
		}
		m.found[n.field] = found
	}
	return found[n.val.val]
}

// walkArray calls stop with each item of array v (its canonical bytes)
// until stop returns true, and reports whether it did. Values are
// canonical, but a record built in Go might hold anything, so the walk
// checks bounds and ends at the first item that breaks them.
func walkArray(v []byte, stop func(item string) bool) bool {
	if onWalk != nil {
		onWalk()
	}
	if len(v) == 0 || v[0]>>5 != 4 || headEnd(v, 0) < 0 {
		return false
	}
	count, off := readHead(v, 0)
	for range count {
		end := itemEnd(v, off)
		if end < 0 {
			return false
		}
		if stop(string(v[off:end])) {
			return true
		}
		off = end
	}
	return false
}
