package scope

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/convergo/convergo/crdt"
)

// maxTextBytes bounds the input of Parse. Text is longer than the wire
// form it stands for (quotes, spaces, cbor(...) hex), hence the factor.
const maxTextBytes = 4 * MaxBytes

// keywords cannot be bare field names; String quotes fields named so.
var keywords = map[string]bool{"and": true, "or": true, "in": true, "has": true, "all": true, "none": true}

// Parse parses the text form of a predicate (see the package doc,
// "Text form"). Syntax errors wrap crdt.ErrMalformed and say at which byte
// offset; the rest is checked as Decode checks the wire form.
func Parse(text string) (*Pred, error) {
	if len(text) > maxTextBytes {
		return nil, fmt.Errorf("parse scope: %w: %d bytes of text exceeds %d", crdt.ErrTooLarge, len(text), maxTextBytes)
	}
	if !utf8.ValidString(text) {
		return nil, fmt.Errorf("parse scope: %w: text is not valid UTF-8", crdt.ErrMalformed)
	}
	ps := parser{s: text}
	v, err := ps.or()
	if err == nil && ps.space() < len(ps.s) {
		err = ps.errf("unexpected %q", ps.s[ps.pos:min(ps.pos+10, len(ps.s))])
	}
	if err != nil {
		return nil, fmt.Errorf("parse scope: %w", err)
	}
	b, err := appendGo(nil, v, 0)
	if err == nil {
		var p *Pred
		if p, err = decode(b); err == nil {
			return p, nil
		}
	}
	return nil, fmt.Errorf("parse scope: %w", err)
}

type parser struct {
	s     string
	pos   int
	depth int
}

func (ps *parser) errf(format string, args ...any) error {
	return fmt.Errorf("%w: at offset %d: %s", crdt.ErrMalformed, ps.pos, fmt.Sprintf(format, args...))
}

// space skips white space and returns the offset after it.
func (ps *parser) space() int {
	for ps.pos < len(ps.s) && strings.IndexByte(" \t\r\n", ps.s[ps.pos]) >= 0 {
		ps.pos++
	}
	return ps.pos
}

func isWordStart(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' }
func isWordChar(c byte) bool  { return isWordStart(c) || c >= '0' && c <= '9' || c == '.' || c == '-' }

// peekWord returns the word at the cursor, without consuming it.
func (ps *parser) peekWord() string {
	i := ps.space()
	if i >= len(ps.s) || !isWordStart(ps.s[i]) {
		return ""
	}
	j := i + 1
	for j < len(ps.s) && isWordChar(ps.s[j]) {
		j++
	}
	return ps.s[i:j]
}

func (ps *parser) takeWord(w string) bool {
	if ps.peekWord() != w {
		return false
	}
	ps.pos += len(w)
	return true
}

func (ps *parser) takeByte(c byte) bool {
	if ps.space() < len(ps.s) && ps.s[ps.pos] == c {
		ps.pos++
		return true
	}
	return false
}

// or = and { "or" and }
func (ps *parser) or() (any, error) {
	return ps.chain("or", ps.and)
}

// and = unary { "and" unary }
func (ps *parser) and() (any, error) {
	return ps.chain("and", ps.unary)
}

func (ps *parser) chain(op string, next func() (any, error)) (any, error) {
	first, err := next()
	if err != nil {
		return nil, err
	}
	out := []any{op, first}
	for ps.takeWord(op) {
		v, err := next()
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	if len(out) == 2 {
		return first, nil
	}
	return out, nil
}

// unary = "(" or ")" | "all" | "none" | field ("==" value | "in" list | "has" value)
func (ps *parser) unary() (any, error) {
	if ps.takeByte('(') {
		if ps.depth++; ps.depth > MaxDepth {
			return nil, fmt.Errorf("%w: parentheses nested deeper than %d", crdt.ErrTooLarge, MaxDepth)
		}
		v, err := ps.or()
		if err != nil {
			return nil, err
		}
		if !ps.takeByte(')') {
			return nil, ps.errf("want )")
		}
		ps.depth--
		return v, nil
	}
	if ps.takeWord("all") {
		return []any{"all"}, nil
	}
	if ps.takeWord("none") {
		return []any{"none"}, nil
	}
	field, err := ps.field()
	if err != nil {
		return nil, err
	}
	ps.space()
	switch {
	case strings.HasPrefix(ps.s[ps.pos:], "=="):
		ps.pos += 2
		v, err := ps.value()
		return []any{"eq", field, v}, err
	case ps.takeWord("has"):
		v, err := ps.value()
		return []any{"has", field, v}, err
	case ps.takeWord("in"):
		if !ps.takeByte('[') {
			v, err := ps.value()
			return []any{"in", field, v}, err
		}
		list := []any{}
		for !ps.takeByte(']') {
			if len(list) > 0 && !ps.takeByte(',') {
				return nil, ps.errf("want , or ]")
			}
			v, err := ps.value()
			if err != nil {
				return nil, err
			}
			list = append(list, v)
		}
		return []any{"in", field, list}, nil
	}
	return nil, ps.errf("want ==, in or has after field %q", field)
}

// field = word | JSON string
func (ps *parser) field() (string, error) {
	if w := ps.peekWord(); w != "" {
		if keywords[w] {
			return "", ps.errf("want a field name, not %q (quote a field named so)", w)
		}
		ps.pos += len(w)
		return w, nil
	}
	if ps.pos < len(ps.s) && ps.s[ps.pos] == '"' {
		v, err := ps.json()
		if s, ok := v.(string); ok && err == nil {
			return s, nil
		}
	}
	return "", ps.errf("want a field name")
}

// value = "$" name | "cbor(" hex ")" | JSON value
func (ps *parser) value() (any, error) {
	ps.space()
	rest := ps.s[ps.pos:]
	switch {
	case strings.HasPrefix(rest, "$"):
		n := 1
		for n < len(rest) && isWordChar(rest[n]) {
			n++
		}
		ps.pos += n
		return paramRef(rest[1:n]), nil
	case strings.HasPrefix(rest, "cbor("):
		end := strings.IndexByte(rest, ')')
		if end < 0 {
			return nil, ps.errf("cbor( without )")
		}
		b, err := hex.DecodeString(rest[len("cbor("):end])
		if err != nil {
			return nil, ps.errf("cbor(...) holds bad hex: %v", err)
		}
		ps.pos += end + 1
		if _, err := crdt.NormalizeValue(b); err != nil {
			return nil, fmt.Errorf("at offset %d: %w", ps.pos, err)
		}
		return rawValue(b), nil
	}
	return ps.json()
}

// json reads one JSON value, numbers as json.Number.
func (ps *parser) json() (any, error) {
	dec := json.NewDecoder(strings.NewReader(ps.s[ps.pos:]))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, ps.errf("want a value: %v", err)
	}
	ps.pos += int(dec.InputOffset())
	return v, nil
}

// String returns the text form of p, which Parse reads back to an equal
// predicate. A nil p is "all".
func (p *Pred) String() string {
	if p == nil {
		return "all"
	}
	var sb strings.Builder
	writeNode(&sb, p.root, opOr)
	return sb.String()
}

func writeNode(sb *strings.Builder, n *node, parent opKind) {
	switch n.op {
	case opAll, opNone:
		sb.WriteString(opNames[n.op])
	case opAnd, opOr:
		paren := n.op == opOr && parent == opAnd
		if paren {
			sb.WriteByte('(')
		}
		for i, k := range n.kids {
			if i > 0 {
				sb.WriteString(" " + opNames[n.op] + " ")
			}
			writeNode(sb, k, n.op)
		}
		if paren {
			sb.WriteByte(')')
		}
	case opEq, opHas:
		writeField(sb, n.field)
		if n.op == opEq {
			sb.WriteString(" == ")
		} else {
			sb.WriteString(" has ")
		}
		sb.WriteString(termText(n.val))
	case opIn:
		writeField(sb, n.field)
		sb.WriteString(" in ")
		if n.listParam != "" {
			sb.WriteString("$" + n.listParam)
			return
		}
		sb.WriteByte('[')
		for i, t := range n.list {
			if i > 0 {
				sb.WriteString(", ")
			}
			sb.WriteString(termText(t))
		}
		sb.WriteByte(']')
	}
}

func writeField(sb *strings.Builder, name string) {
	bare := name != "" && isWordStart(name[0]) && !keywords[name]
	for i := 1; bare && i < len(name); i++ {
		bare = isWordChar(name[i])
	}
	if bare {
		sb.WriteString(name)
		return
	}
	sb.WriteString(jsonText(name))
}

// termText renders a value position: a parameter as $name, a value as
// JSON when JSON reads back to the same canonical bytes, else as
// cbor(hex) (byte strings, whole-number floats, NaN, maps with keys that
// are not text, and so on).
func termText(t term) string {
	if t.param != "" {
		return "$" + t.param
	}
	var v any
	if err := crdt.DecodeValue([]byte(t.val), &v); err == nil {
		if s := jsonText(v); s != "" {
			ps := parser{s: s}
			back, err := ps.json()
			if err == nil && ps.pos == len(s) {
				if b, err := appendGo(nil, back, 0); err == nil {
					if c, err := crdt.NormalizeValue(b); err == nil && string(c) == t.val {
						return s
					}
				}
			}
		}
	}
	return "cbor(" + hex.EncodeToString([]byte(t.val)) + ")"
}

// jsonText returns v as JSON without HTML escapes, or "" when it has none.
func jsonText(v any) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return ""
	}
	return strings.TrimSuffix(buf.String(), "\n")
}
