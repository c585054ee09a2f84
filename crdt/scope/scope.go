package scope

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/convergo/convergo/crdt"
)

// Limits on a predicate. Decode, FromValue and Parse check them on what
// they are given, Bind checks them again on what binding produced (a list
// parameter may expand to a long list). They bound the work Match does per
// record and the memory a hostile subscription can pin on the server.
const (
	// MaxBytes bounds the canonical wire form (Encode) of a predicate, and
	// the input of Decode.
	MaxBytes = 4096
	// MaxDepth bounds the nesting of predicates: a comparison has depth 1,
	// an "and" or "or" one more than its deepest operand.
	MaxDepth = 8
	// MaxNodes bounds the number of predicates (comparisons, "and", "or",
	// "all", "none") in one predicate.
	MaxNodes = 256
	// MaxList bounds the values of one "in" list.
	MaxList = 1024
)

// maxParamBytes bounds the length of a parameter name.
const maxParamBytes = 256

// ErrUnbound means Bind found a parameter that Params does not hold, or
// holds as null.
var ErrUnbound = errors.New("scope: unbound parameter")

// Pred is a predicate over the fields of a record. It is immutable once
// built and safe for concurrent use. A nil *Pred is no scope at all: it
// matches every existing record, encodes to nil and prints as "all".
type Pred struct {
	root   *node
	enc    []byte   // canonical wire form
	params []string // sorted, unique
	fields []string // sorted, unique
	key    string   // enc as a string (Key)
	// needles holds, per field that more than one "has" predicate reads,
	// the values they look for (bound preds only): Match walks the
	// field's array once for all, however many values (one too).
	needles map[string]map[string]struct{}
}

type opKind uint8

const (
	opAll opKind = iota
	opNone
	opEq
	opIn
	opHas
	opAnd
	opOr
)

var opNames = [...]string{
	opAll:  "all",
	opNone: "none",
	opEq:   "eq",
	opIn:   "in",
	opHas:  "has",
	opAnd:  "and",
	opOr:   "or",
}

// listSetMin is the length from which an "in" list is matched through a
// map rather than by scanning a slice.
const listSetMin = 8

// term is a value position: a parameter or a value.
type term struct {
	param string // parameter name; "" for a value
	val   string // canonical CBOR bytes of the value when param == ""
}

// enc returns the wire form of t.
func (t term) enc() string {
	if t.param != "" {
		return paramEnc(t.param)
	}
	return t.val
}

// node is one predicate. Nodes are never modified once a Pred holds them,
// so Preds share them freely.
type node struct {
	op        opKind
	field     string
	val       term     // eq, has
	list      []term   // in, when listParam == ""
	listParam string   // in: the whole list is this parameter
	kids      []*node  // and, or
	enc       string   // wire form of this node
	vals      []string // in, bound: the values, sorted
	set       map[string]struct{}
	maxLen    int // in, with set: the longest value's length
}

// newNode returns n with its wire form computed; kids must have theirs.
func newNode(n *node) *node {
	b := crdt.AppendHead(nil, 4, uint64(nodeLen(n)))
	b = appendText(b, opNames[n.op])
	switch n.op {
	case opEq, opHas:
		b = appendText(b, n.field)
		b = append(b, n.val.enc()...)
	case opIn:
		b = appendText(b, n.field)
		if n.listParam != "" {
			b = append(b, paramEnc(n.listParam)...)
		} else {
			b = crdt.AppendHead(b, 4, uint64(len(n.list)))
			for _, t := range n.list {
				b = append(b, t.enc()...)
			}
		}
	case opAnd, opOr:
		for _, k := range n.kids {
			b = append(b, k.enc...)
		}
	}
	n.enc = string(b)
	return n
}

func nodeLen(n *node) int {
	switch n.op {
	case opEq, opHas, opIn:
		return 3
	case opAnd, opOr:
		return 1 + len(n.kids)
	}
	return 1
}

func appendText(b []byte, s string) []byte {
	return append(crdt.AppendHead(b, 3, uint64(len(s))), s...)
}

// paramEnc is the wire form of a parameter: the map {"$": name}.
func paramEnc(name string) string {
	return string(appendText([]byte{0xa1, 0x61, '$'}, name))
}

// normalize returns n in canonical form: nested "and"s and "or"s
// flattened, operands sorted by wire form without duplicates, "all" and
// "none" folded away where they decide nothing, an "and" or "or" of one
// operand replaced by it, and "in" lists sorted without duplicates. Equal
// predicates in this sense have equal wire forms, hence equal keys.
func normalize(n *node) *node {
	switch n.op {
	case opIn:
		if n.listParam != "" {
			return n
		}
		list := slices.Clone(n.list)
		slices.SortFunc(list, func(a, b term) int { return strings.Compare(a.enc(), b.enc()) })
		list = slices.CompactFunc(list, func(a, b term) bool { return a.enc() == b.enc() })
		return newNode(&node{op: opIn, field: n.field, list: list})
	case opAnd, opOr:
	default:
		return n
	}
	absorb, unit := opNone, opAll // and: none absorbs, all is the unit
	if n.op == opOr {
		absorb, unit = opAll, opNone
	}
	var kids []*node
	for _, k := range n.kids {
		k = normalize(k)
		switch {
		case k.op == absorb:
			return k
		case k.op == unit:
		case k.op == n.op:
			kids = append(kids, k.kids...)
		default:
			kids = append(kids, k)
		}
	}
	slices.SortFunc(kids, func(a, b *node) int { return strings.Compare(a.enc, b.enc) })
	kids = slices.CompactFunc(kids, func(a, b *node) bool { return a.enc == b.enc })
	switch len(kids) {
	case 0:
		return newNode(&node{op: unit})
	case 1:
		return kids[0]
	}
	return newNode(&node{op: n.op, kids: kids})
}

// stats walks n for what finish needs.
type stats struct {
	params, fields map[string]bool
	nodes, maxList int
}

func (s *stats) walk(n *node) int {
	s.nodes++
	switch n.op {
	case opEq, opHas:
		s.fields[n.field] = true
		if n.val.param != "" {
			s.params[n.val.param] = true
		}
	case opIn:
		s.fields[n.field] = true
		if n.listParam != "" {
			s.params[n.listParam] = true
		}
		s.maxList = max(s.maxList, len(n.list))
		for _, t := range n.list {
			if t.param != "" {
				s.params[t.param] = true
			}
		}
	case opAnd, opOr:
		d := 0
		for _, k := range n.kids {
			d = max(d, s.walk(k))
		}
		return d + 1
	}
	return 1
}

// finish normalizes root and wraps it in a Pred; with check, it refuses a
// predicate over the limits.
func finish(root *node, check bool) (*Pred, error) {
	root = normalize(root)
	s := stats{params: map[string]bool{}, fields: map[string]bool{}}
	depth := s.walk(root)
	if check {
		switch {
		case len(root.enc) > MaxBytes:
			return nil, fmt.Errorf("%w: scope of %d bytes exceeds %d", crdt.ErrTooLarge, len(root.enc), MaxBytes)
		case depth > MaxDepth:
			return nil, fmt.Errorf("%w: scope nested %d deep exceeds %d", crdt.ErrTooLarge, depth, MaxDepth)
		case s.nodes > MaxNodes:
			return nil, fmt.Errorf("%w: scope of %d predicates exceeds %d", crdt.ErrTooLarge, s.nodes, MaxNodes)
		case s.maxList > MaxList:
			return nil, fmt.Errorf("%w: scope list of %d values exceeds %d", crdt.ErrTooLarge, s.maxList, MaxList)
		}
	}
	p := &Pred{
		root:   root,
		enc:    []byte(root.enc),
		key:    root.enc,
		params: sortedKeys(s.params),
		fields: sortedKeys(s.fields),
	}
	if len(p.params) == 0 {
		root = prepare(root)
		p.root = root
		p.needles = needlesOf(root)
	}
	return p, nil
}

// prepare returns n with the lookup structures Match uses filled in. It
// copies the "in" nodes it fills, since nodes may be shared.
func prepare(n *node) *node {
	switch n.op {
	case opIn:
		if n.vals != nil || n.set != nil {
			return n
		}
		c := *n
		c.vals = make([]string, len(n.list))
		for i, t := range n.list {
			c.vals[i] = t.val
		}
		if len(c.vals) >= listSetMin {
			c.set = make(map[string]struct{}, len(c.vals))
			for _, v := range c.vals {
				c.set[v] = struct{}{}
				c.maxLen = max(c.maxLen, len(v))
			}
			c.vals = nil
		}
		return &c
	case opAnd, opOr:
		c := *n
		c.kids = make([]*node, len(n.kids))
		for i, k := range n.kids {
			c.kids[i] = prepare(k)
		}
		return &c
	}
	return n
}

// needlesOf returns the values the "has" predicates of n look for, per
// field that more than one of them reads (Pred.needles); nil if none.
func needlesOf(n *node) map[string]map[string]struct{} {
	var m map[string]map[string]struct{}
	count := map[string]int{}
	var walk func(*node)
	walk = func(n *node) {
		switch n.op {
		case opHas:
			if m == nil {
				m = map[string]map[string]struct{}{}
			}
			if m[n.field] == nil {
				m[n.field] = map[string]struct{}{}
			}
			m[n.field][n.val.val] = struct{}{}
			count[n.field]++
		case opAnd, opOr:
			for _, k := range n.kids {
				walk(k)
			}
		}
	}
	walk(n)
	for f, c := range count {
		if c < 2 {
			delete(m, f)
		}
	}
	if len(m) == 0 {
		return nil
	}
	return m
}

func sortedKeys(m map[string]bool) []string {
	if len(m) == 0 {
		return nil
	}
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Encode returns the canonical wire form of p: equal predicates give
// equal bytes. It returns nil for a nil p.
func (p *Pred) Encode() []byte {
	if p == nil {
		return nil
	}
	return bytes.Clone(p.enc)
}

// Key returns Encode as a string, for map keys: equal predicates give
// equal keys and different ones different keys, or "" for a nil p.
// Servers key what readers of one scope share by it (the whole encoding,
// not a digest of it, so that no two scopes can ever share a key).
func (p *Pred) Key() string {
	if p == nil {
		return ""
	}
	return p.key
}

// Params returns the names of the parameters p uses, sorted.
func (p *Pred) Params() []string {
	if p == nil {
		return nil
	}
	return slices.Clone(p.params)
}

// Bound reports whether p uses no parameters. A nil p is bound.
func (p *Pred) Bound() bool { return p == nil || len(p.params) == 0 }

// Fields returns the names of the record fields p reads, sorted.
func (p *Pred) Fields() []string {
	if p == nil {
		return nil
	}
	return slices.Clone(p.fields)
}

// Equal reports whether p and q have the same canonical wire form.
func (p *Pred) Equal(q *Pred) bool {
	if p == nil || q == nil {
		return p == q
	}
	return bytes.Equal(p.enc, q.enc)
}

// And returns the conjunction of ps. Nil operands, which stand for
// everything, are dropped, so And() and And(nil) are nil. Nested "and"s are
// flattened. The limits are not checked: the operands were, and a server
// combining its own scopes with a client's is trusted to; Bind checks them
// on the result.
func And(ps ...*Pred) *Pred { return combine(opAnd, ps) }

// Or returns the disjunction of ps. A nil operand (everything) makes the
// result nil. Nested "or"s are flattened. Or() of no operands matches
// nothing: it is the predicate ["none"]. Limits are as for And.
func Or(ps ...*Pred) *Pred {
	if slices.Contains(ps, nil) {
		return nil
	}
	return combine(opOr, ps)
}

func combine(op opKind, ps []*Pred) *Pred {
	var kids []*node
	for _, p := range ps {
		if p != nil {
			kids = append(kids, p.root)
		}
	}
	if op == opAnd && len(kids) == 0 {
		return nil
	}
	p, err := finish(&node{op: op, kids: kids}, false)
	if err != nil {
		panic(err) // finish fails only on limits, unchecked here
	}
	return p
}
