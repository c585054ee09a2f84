package migrate

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/convergo/convergo/crdt"
	"github.com/fxamacker/cbor/v2"
)

// Limits of a definition.
const (
	MaxSteps      = 64
	MaxOpsPerStep = 64
)

// Sentinel errors.
var (
	// ErrUntranslatable means a change cannot be mapped to the version
	// asked for: a split of a value that is not a string, a merge missing
	// one of its parts, a change left without fields by drops.
	ErrUntranslatable = errors.New("migrate: change cannot be translated")
	// ErrSchemaAhead means a version above the definition's current one:
	// the caller runs newer rules than the definition it asks.
	ErrSchemaAhead = errors.New("migrate: version ahead of the current schema")
	// ErrInvalid is crdt.ErrInvalid: a definition breaks a rule, or a
	// version is not a version (negative).
	ErrInvalid = crdt.ErrInvalid
)

// Kind names an op.
type Kind string

// The ops of a step.
const (
	Rename  Kind = "rename"
	Split   Kind = "split"
	Merge   Kind = "merge"
	Default Kind = "default"
	Drop    Kind = "drop"
)

// Op is one op of a step. From and To hold the fields as the op's JSON
// names them: rename has one of each, split one From and several To,
// merge several From and one To. Default and drop name Field; Value is the
// default's canonical CBOR value.
type Op struct {
	Kind  Kind
	From  []string
	To    []string
	Sep   string
	Field string
	Value []byte
}

// Step goes from version To-1 to version To.
type Step struct {
	To  int
	Ops []Op
}

// Definition is the parsed "migrations" object of one collection.
type Definition struct {
	// Version is the current version: the last step's To, 1 without
	// steps.
	Version int
	// Steps[i] goes from version i+1 to i+2.
	Steps []Step
	src   json.RawMessage
	// upSrc and downSrc are the fields some op of some step reads going
	// up and going down: a record with none of them translates to itself.
	upSrc, downSrc map[string]bool
}

// Parse parses and checks a definition (the JSON of docs/design.md,
// "Schema versions"). Errors wrap ErrInvalid.
func Parse(data []byte) (*Definition, error) {
	var d Definition
	if err := d.UnmarshalJSON(data); err != nil {
		return nil, err
	}
	return &d, nil
}

// Current returns the current version: 1 for a nil definition.
func (d *Definition) Current() int {
	if d == nil {
		return 1
	}
	return d.Version
}

// Sources returns, sorted, the fields that translating up reads (the
// sources of renames, splits and merges, and dropped fields): a stored
// record that holds one may resolve it into another field. Nil for a nil
// definition.
func (d *Definition) Sources() []string {
	if d == nil || len(d.upSrc) == 0 {
		return nil
	}
	return slices.Sorted(maps.Keys(d.upSrc))
}

// Resolve checks a version a client names and returns the version it
// stands for: 0 is the current one; a version above the current one is
// ErrSchemaAhead; a negative one ErrInvalid.
func (d *Definition) Resolve(v int) (int, error) {
	switch {
	case v < 0:
		return 0, fmt.Errorf("%w: schema version %d", ErrInvalid, v)
	case v == 0:
		return d.Current(), nil
	case v > d.Current():
		return 0, fmt.Errorf("%w: version %d, current %d", ErrSchemaAhead, v, d.Current())
	}
	return v, nil
}

// MarshalJSON returns the JSON the definition was parsed from.
func (d *Definition) MarshalJSON() ([]byte, error) {
	if d.src == nil {
		return []byte("null"), nil
	}
	return d.src, nil
}

type rawDef struct {
	Version *int      `json:"version"`
	Steps   []rawStep `json:"steps"`
}

type rawStep struct {
	To  int               `json:"to"`
	Ops []json.RawMessage `json:"ops"`
}

// UnmarshalJSON parses and checks a definition, as Parse does.
func (d *Definition) UnmarshalJSON(data []byte) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: migrations: %s", ErrInvalid, fmt.Sprintf(format, args...))
	}
	var raw rawDef
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&raw); err != nil {
		return bad("%v", err)
	}
	if dec.More() {
		return bad("trailing data")
	}
	if raw.Version == nil {
		return bad("version is missing")
	}
	if len(raw.Steps) > MaxSteps {
		return bad("%d steps, at most %d", len(raw.Steps), MaxSteps)
	}
	out := Definition{Version: *raw.Version, src: bytes.Clone(data)}
	read := map[string]bool{} // the fields ops of the steps before read
	for i, rs := range raw.Steps {
		if rs.To != i+2 {
			return bad("step %d goes to %d, want %d", i, rs.To, i+2)
		}
		if len(rs.Ops) > MaxOpsPerStep {
			return bad("step to %d: %d ops, at most %d", rs.To, len(rs.Ops), MaxOpsPerStep)
		}
		st := Step{To: rs.To}
		for j, ro := range rs.Ops {
			op, err := parseOp(ro)
			if err != nil {
				return bad("step to %d, op %d: %v", rs.To, j, err)
			}
			st.Ops = append(st.Ops, op)
		}
		if err := checkStep(st); err != nil {
			return bad("step to %d: %v", rs.To, err)
		}
		if err := checkRetired(st, read); err != nil {
			return bad("step to %d: %v", rs.To, err)
		}
		out.Steps = append(out.Steps, st)
	}
	if out.Version != len(out.Steps)+1 {
		return bad("version is %d, the steps end at %d", out.Version, len(out.Steps)+1)
	}
	out.upSrc, out.downSrc = map[string]bool{}, map[string]bool{}
	for _, st := range out.Steps {
		for _, op := range st.Ops {
			switch op.Kind {
			case Rename, Split, Merge:
				for _, f := range op.From {
					out.upSrc[f] = true
				}
				for _, f := range op.To {
					out.downSrc[f] = true
				}
			case Drop:
				out.upSrc[op.Field] = true
			}
		}
	}
	*d = out
	return nil
}

var opKeys = map[Kind][]string{
	Rename:  {"op", "from", "to"},
	Split:   {"op", "from", "to", "sep"},
	Merge:   {"op", "from", "to", "sep"},
	Default: {"op", "field", "value"},
	Drop:    {"op", "field"},
}

func parseOp(data []byte) (Op, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil || m == nil {
		return Op{}, fmt.Errorf("not an object")
	}
	var kind string
	if err := json.Unmarshal(m["op"], &kind); err != nil {
		return Op{}, fmt.Errorf("op is not a string")
	}
	op := Op{Kind: Kind(kind)}
	keys, ok := opKeys[op.Kind]
	if !ok {
		return Op{}, fmt.Errorf("unknown op %q", kind)
	}
	for k := range m {
		if !slices.Contains(keys, k) {
			return Op{}, fmt.Errorf("%s: unknown key %q", kind, k)
		}
	}
	for _, k := range keys {
		if _, ok := m[k]; !ok {
			return Op{}, fmt.Errorf("%s: %q is missing", kind, k)
		}
	}
	name := func(key string) (string, error) {
		var s string
		if err := json.Unmarshal(m[key], &s); err != nil {
			return "", fmt.Errorf("%s: %s is not a string", kind, key)
		}
		if err := crdt.ValidateFieldName(s); err != nil {
			return "", fmt.Errorf("%s: %s: %v", kind, key, err)
		}
		return s, nil
	}
	names := func(key string) ([]string, error) {
		var ss []string
		if err := json.Unmarshal(m[key], &ss); err != nil {
			return nil, fmt.Errorf("%s: %s is not an array of strings", kind, key)
		}
		if len(ss) < 2 {
			return nil, fmt.Errorf("%s: %s needs at least 2 fields", kind, key)
		}
		for _, s := range ss {
			if err := crdt.ValidateFieldName(s); err != nil {
				return nil, fmt.Errorf("%s: %s: %v", kind, key, err)
			}
		}
		return ss, nil
	}
	sep := func() (string, error) {
		var s string
		if err := json.Unmarshal(m["sep"], &s); err != nil || s == "" {
			return "", fmt.Errorf("%s: sep must be a non-empty string", kind)
		}
		return s, nil
	}
	var err error
	var s string
	switch op.Kind {
	case Rename:
		if s, err = name("from"); err == nil {
			op.From = []string{s}
			if s, err = name("to"); err == nil {
				op.To = []string{s}
			}
		}
	case Split:
		if s, err = name("from"); err == nil {
			op.From = []string{s}
			if op.To, err = names("to"); err == nil {
				op.Sep, err = sep()
			}
		}
	case Merge:
		if op.From, err = names("from"); err == nil {
			if s, err = name("to"); err == nil {
				op.To = []string{s}
				op.Sep, err = sep()
			}
		}
	case Default:
		if op.Field, err = name("field"); err == nil {
			op.Value, err = jsonValue(m["value"])
		}
	case Drop:
		op.Field, err = name("field")
	}
	return op, err
}

// jsonValue encodes a JSON value as a canonical field value, reading its
// numbers by crdt's rule for JSON documents (crdt.AppendJSONNumber), the
// one scopes in the rules file follow. The browser client reads the same
// definition through JavaScript, which sees a number only as its float64:
// a number whose text reads otherwise by that rule than its float64 (an
// integer written beyond ±(2^53−1), or -0 written as an integer) would
// give the two sides different defaults, and is refused.
func jsonValue(raw json.RawMessage) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("default: value: %v", err)
	}
	v, err := plainNumbers(v)
	if err != nil {
		return nil, fmt.Errorf("default: value: %v", err)
	}
	b, err := crdt.EncodeValue(v)
	if err != nil {
		return nil, fmt.Errorf("default: value: %v", err)
	}
	if b, err = crdt.NormalizeValue(b); err != nil {
		return nil, fmt.Errorf("default: value: %v", err)
	}
	if err := crdt.CanonicalValue(b); err != nil {
		return nil, fmt.Errorf("default: value: %v", err)
	}
	return b, nil
}

// plainNumbers replaces the json.Numbers in v by their encodings.
func plainNumbers(v any) (any, error) {
	switch x := v.(type) {
	case json.Number:
		s := x.String()
		b, err := crdt.AppendJSONNumber(nil, s)
		if err != nil {
			return nil, err
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || !bytes.Equal(b, crdt.AppendJSONFloat(nil, f)) {
			return nil, fmt.Errorf("number %s: JavaScript reads it as %v; write a float (with a fraction or exponent) or an integer within ±(2^53−1)", s, f)
		}
		return cbor.RawMessage(b), nil
	case []any:
		for i := range x {
			var err error
			if x[i], err = plainNumbers(x[i]); err != nil {
				return nil, err
			}
		}
	case map[string]any:
		for k := range x {
			e, err := plainNumbers(x[k])
			if err != nil {
				return nil, err
			}
			x[k] = e
		}
	}
	return v, nil
}

// checkStep refuses a field named twice as a target, and a field that is
// both a source and a target in one step.
func checkStep(st Step) error {
	targets := map[string]bool{}
	sources := map[string]bool{}
	for _, op := range st.Ops {
		var tt, ss []string
		switch op.Kind {
		case Rename, Split, Merge:
			tt, ss = op.To, op.From
		case Default:
			tt = []string{op.Field}
		case Drop:
			ss = []string{op.Field}
		}
		for _, t := range tt {
			if targets[t] {
				return fmt.Errorf("field %q is a target twice", t)
			}
			targets[t] = true
		}
		for _, s := range ss {
			if sources[s] {
				return fmt.Errorf("field %q is a source twice", s)
			}
			sources[s] = true
		}
	}
	for t := range targets {
		if sources[t] {
			return fmt.Errorf("field %q is both a source and a target", t)
		}
	}
	return nil
}

// checkRetired refuses a step whose op writes a field an op of an earlier
// step reads (read; a rename's, split's or merge's source, a dropped
// field), and then adds the fields st reads to read. A stored record is
// resolved from version 1 whatever version wrote it, so such a field,
// written in a later version, would be taken for the earlier one: moved,
// split, merged or dropped away from where its writer put it.
func checkRetired(st Step, read map[string]bool) error {
	for _, op := range st.Ops {
		var targets []string
		switch op.Kind {
		case Rename, Split, Merge:
			targets = op.To
		case Default:
			targets = []string{op.Field}
		}
		for _, t := range targets {
			if read[t] {
				return fmt.Errorf("field %q was retired by an earlier version: its name cannot be used again", t)
			}
		}
	}
	for _, op := range st.Ops {
		switch op.Kind {
		case Rename, Split, Merge:
			for _, f := range op.From {
				read[f] = true
			}
		case Drop:
			read[op.Field] = true
		}
	}
	return nil
}

// Defaults returns the defaults a record read at version v shows for the
// fields it lacks (nil when none): those of the default ops of steps up to
// v, followed through later renames and forgotten by later drops, splits
// and merges of their field. The map must not be modified.
func (d *Definition) Defaults(v int) map[string][]byte {
	if d == nil {
		return nil
	}
	var out map[string][]byte
	for _, st := range d.Steps {
		if st.To > v {
			break
		}
		next := map[string][]byte{}
		moved := map[string]bool{}
		for _, op := range st.Ops {
			switch op.Kind {
			case Rename:
				if val, ok := out[op.From[0]]; ok {
					next[op.To[0]] = val
				}
				moved[op.From[0]] = true
			case Split, Merge:
				for _, f := range op.From {
					moved[f] = true
				}
			case Drop:
				moved[op.Field] = true
			case Default:
				next[op.Field] = op.Value
			}
		}
		for f, val := range out {
			if _, ok := next[f]; !ok && !moved[f] {
				next[f] = val
			}
		}
		out = next
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// Values returns the visible values of r read at version v: r.Values()
// with the defaults of version v for the fields r lacks (absent or hidden
// by its delete; an unset field reads as unset). A record that does not
// exist has no values, defaults or not.
func (d *Definition) Values(r crdt.Record, v int) map[string][]byte {
	vals := r.Values()
	if vals == nil {
		return nil
	}
	for f, val := range d.Defaults(v) {
		if g, ok := r.Fields[f]; ok && g.Stamp.Compare(r.Deleted) > 0 {
			continue
		}
		vals[f] = val
	}
	return vals
}

// Record translates a stored record from version from to version to
// (either direction). A source field that cannot be mapped (a split or
// merged value that is not a string) is left out; dropped counts them.
// The result is r itself when the versions are equal or no op of any
// step reads a field of r, else a record that shares values with r but
// not its field map: callers must not modify either. Versions must be
// 1..Current() (else ErrSchemaAhead or ErrInvalid).
func (d *Definition) Record(r crdt.Record, from, to int) (out crdt.Record, dropped int, err error) {
	out, dropped, err = d.translate(r, from, to, false)
	return out, dropped, err
}

// Change translates a change (a partial record) from version from to
// version to, or fails with ErrUntranslatable when an op cannot map it or
// its fields are all dropped. Versions are checked as for Record.
func (d *Definition) Change(r crdt.Record, from, to int) (crdt.Record, error) {
	out, _, err := d.translate(r, from, to, true)
	return out, err
}

func (d *Definition) translate(r crdt.Record, from, to int, change bool) (crdt.Record, int, error) {
	for _, v := range []int{from, to} {
		if v < 1 {
			return crdt.Record{}, 0, fmt.Errorf("%w: schema version %d", ErrInvalid, v)
		}
		if v > d.Current() {
			return crdt.Record{}, 0, fmt.Errorf("%w: version %d, current %d", ErrSchemaAhead, v, d.Current())
		}
	}
	if from == to {
		return r, 0, nil
	}
	if !change {
		src := d.upSrc
		if from > to {
			src = d.downSrc
		}
		touched := false
		for name := range r.Fields {
			if src[name] {
				touched = true
				break
			}
		}
		if !touched {
			return r, 0, nil // no op reads a field of r: the common case once data is in the current shape
		}
	}
	t := tr{rec: r.Clone(), change: change}
	if t.rec.Fields == nil {
		t.rec.Fields = map[string]crdt.Field{}
	}
	for v := from; v < to; v++ { // up: step v→v+1
		for _, op := range d.Steps[v-1].Ops {
			if err := t.up(op); err != nil {
				return crdt.Record{}, 0, fmt.Errorf("version %d to %d: %w", v, v+1, err)
			}
		}
		if err := t.emptied(v + 1); err != nil {
			return crdt.Record{}, 0, err
		}
	}
	for v := from; v > to; v-- { // down: step v-1→v, inverted
		ops := d.Steps[v-2].Ops
		for i := len(ops) - 1; i >= 0; i-- {
			if err := t.down(ops[i]); err != nil {
				return crdt.Record{}, 0, fmt.Errorf("version %d to %d: %w", v, v-1, err)
			}
		}
		if err := t.emptied(v - 1); err != nil {
			return crdt.Record{}, 0, err
		}
	}
	if len(t.rec.Fields) == 0 && r.Fields == nil {
		t.rec.Fields = nil
	}
	return t.rec, t.dropped, nil
}

type tr struct {
	rec     crdt.Record
	change  bool
	dropped int
}

func (t *tr) emptied(v int) error {
	if t.change && len(t.rec.Fields) == 0 && t.rec.Deleted.IsZero() {
		return fmt.Errorf("%w: every field of the change was dropped in version %d", ErrUntranslatable, v)
	}
	return nil
}

// set writes f to name unless a present target is at least as new.
func (t *tr) set(name string, f crdt.Field) {
	if g, ok := t.rec.Fields[name]; ok && f.Stamp.Compare(g.Stamp) <= 0 {
		return
	}
	t.rec.Fields[name] = f
}

func (t *tr) up(op Op) error {
	switch op.Kind {
	case Rename:
		return t.rename(op.From[0], op.To[0])
	case Split:
		return t.split(op.From[0], op.To, op.Sep)
	case Merge:
		return t.merge(op.From, op.To[0], op.Sep, t.change)
	case Drop:
		delete(t.rec.Fields, op.Field)
	}
	return nil
}

func (t *tr) down(op Op) error {
	switch op.Kind {
	case Rename:
		return t.rename(op.To[0], op.From[0])
	case Split:
		return t.merge(op.To, op.From[0], op.Sep, false)
	case Merge:
		return t.split(op.To[0], op.From, op.Sep)
	}
	return nil
}

func (t *tr) rename(a, b string) error {
	if f, ok := t.rec.Fields[a]; ok {
		delete(t.rec.Fields, a)
		t.set(b, f)
	}
	return nil
}

func (t *tr) split(a string, parts []string, sep string) error {
	f, ok := t.rec.Fields[a]
	if !ok {
		return nil
	}
	if f.Value == nil {
		delete(t.rec.Fields, a)
		for _, b := range parts {
			t.set(b, crdt.Field{Stamp: f.Stamp})
		}
		return nil
	}
	s, ok := text(f.Value)
	if !ok {
		if t.change {
			return fmt.Errorf("%w: split of %q, which is not a string", ErrUntranslatable, a)
		}
		delete(t.rec.Fields, a)
		t.dropped++
		return nil
	}
	delete(t.rec.Fields, a)
	ss := strings.SplitN(s, sep, len(parts))
	for i, b := range parts {
		p := ""
		if i < len(ss) {
			p = ss[i]
		}
		t.set(b, crdt.Field{Stamp: f.Stamp, Value: textValue(p)})
	}
	return nil
}

func (t *tr) merge(parts []string, b, sep string, strict bool) error {
	present := 0
	for _, a := range parts {
		if _, ok := t.rec.Fields[a]; ok {
			present++
		}
	}
	if present == 0 {
		return nil
	}
	if strict && present != len(parts) {
		var missing []string
		for _, a := range parts {
			if _, ok := t.rec.Fields[a]; !ok {
				missing = append(missing, a)
			}
		}
		return fmt.Errorf("%w: merge into %q needs every part, %q missing", ErrUntranslatable, b, missing)
	}
	var stamp crdt.Stamp
	var vals []string
	used := 0
	for _, a := range parts {
		f, ok := t.rec.Fields[a]
		if !ok {
			continue
		}
		if f.Value != nil {
			s, ok := text(f.Value)
			if !ok {
				if t.change {
					return fmt.Errorf("%w: merge of %q, which is not a string", ErrUntranslatable, a)
				}
				t.dropped++
				continue
			}
			vals = append(vals, s)
		}
		used++
		if f.Stamp.Compare(stamp) > 0 {
			stamp = f.Stamp
		}
	}
	for _, a := range parts {
		delete(t.rec.Fields, a)
	}
	if used == 0 {
		return nil
	}
	nf := crdt.Field{Stamp: stamp}
	if len(vals) > 0 {
		nf.Value = textValue(strings.Join(vals, sep))
	}
	t.set(b, nf)
	return nil
}

// text returns the string a field value holds, if it is a text string.
// Field values are canonical CBOR (crdt.CanonicalValue): a definite
// length and valid UTF-8, so the head alone says where the text is.
func text(v []byte) (string, bool) {
	if len(v) == 0 || v[0]>>5 != 3 {
		return "", false
	}
	info, off := v[0]&0x1f, 1
	var n uint64
	switch {
	case info < 24:
		n = uint64(info)
	case info <= 27:
		w := 1 << (info - 24)
		if len(v) < 1+w {
			return "", false
		}
		for _, c := range v[1 : 1+w] {
			n = n<<8 | uint64(c)
		}
		off += w
	default:
		return "", false // indefinite length: not canonical
	}
	if uint64(len(v)-off) != n {
		return "", false
	}
	return string(v[off:]), true
}

// textValue encodes s as a canonical field value.
func textValue(s string) []byte {
	return append(crdt.AppendHead(make([]byte, 0, len(s)+9), 3, uint64(len(s))), s...)
}
