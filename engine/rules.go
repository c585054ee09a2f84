package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/crdt/migrate"
	"github.com/convergo/convergo/crdt/scope"
	"github.com/convergo/convergo/transport/proto"
)

// A Rule is what the server's rules file says of the collections a
// pattern matches: who may read and write which records, and what a
// record must look like. Every rule whose pattern matches a collection
// applies to it (RulesFor).
//
// The engine applies Schema and Validate itself, to every change of
// Apply whatever its origin (pushes, the engine's own writes, captured
// changes). Read and Write are for the layer that knows the principal:
// it binds them (scope.Pred.Bind) and passes the result to PullScoped and
// to Apply (WithWriteScope); ReadScope and WriteScope compute them.
type Rule struct {
	// Pattern is a collection pattern (crdt.MatchPattern).
	Pattern string
	// Read is the scope readers of the collection are held to; nil means
	// none. Unbound: it may hold parameters ({"$": "sub"}).
	Read *scope.Pred
	// Write is the scope writers are held to; nil means Read's.
	Write *scope.Pred
	// Schema, when set, is checked against every record a change leaves
	// existing (Schema.Check).
	Schema *Schema
	// Validate, when set, is called with every record a change leaves
	// existing, merged with the stored record; an error refuses the
	// change (it is wrapped with ErrSchema). It must be safe for
	// concurrent use and should be quick: it runs inside Apply.
	Validate func(ctx context.Context, collection string, r crdt.Record) error
	// MaxOffline, when positive, enables tombstone collection for the
	// matching collections: a replica that stays away longer loses its
	// lease (docs/design.md, "Tombstone horizons"; Engine.MaxOffline).
	// Zero keeps tombstones for ever from then on; a horizon published
	// under an earlier rule stays enforced (enforced).
	MaxOffline time.Duration
	// Migrations, when set, are the collection's schema versions
	// (docs/design.md, "Schema versions"): changes written under an older
	// version are translated up, stored records are resolved to the
	// current version and pages translated down to the reader's. Pattern
	// must then be an exact collection name (no wildcard), and only one
	// rule may give a collection migrations.
	Migrations *migrate.Definition
}

// RulesFor returns the rules whose pattern matches collection, in the
// order of Config.Rules; none for the server's own collections
// (proto.Reserved), whatever the pattern, as they have no quota: their
// records are the engine's (counted collections, leases, the deny list),
// which an app's schema ("*") would refuse.
func (e *Engine) RulesFor(collection string) []Rule {
	if proto.Reserved(collection) {
		return nil
	}
	var out []Rule
	for _, r := range e.rules {
		if crdt.MatchPattern(r.Pattern, collection) {
			out = append(out, r)
		}
	}
	return out
}

// ReadScope returns the read scope the rules impose on collection, bound
// with params: the and of every matching rule's Read; nil when none has
// one. An error wraps scope.ErrUnbound when params lack a parameter.
func (e *Engine) ReadScope(collection string, params scope.Params) (*scope.Pred, error) {
	var ps []*scope.Pred
	for _, r := range e.RulesFor(collection) {
		ps = append(ps, r.Read)
	}
	return bindScope(scope.And(ps...), params)
}

// WriteScope returns the write scope the rules impose on collection,
// bound with params: the and of every matching rule's Write, or its Read
// where it has no Write; nil when none has either.
func (e *Engine) WriteScope(collection string, params scope.Params) (*scope.Pred, error) {
	var ps []*scope.Pred
	for _, r := range e.RulesFor(collection) {
		if r.Write != nil {
			ps = append(ps, r.Write)
		} else {
			ps = append(ps, r.Read)
		}
	}
	return bindScope(scope.And(ps...), params)
}

func bindScope(p *scope.Pred, params scope.Params) (*scope.Pred, error) {
	if p == nil {
		return nil, nil
	}
	return p.Bind(params)
}

// validateRules checks rules at Open.
func validateRules(rules []Rule) error {
	for i, r := range rules {
		if err := crdt.ValidatePattern(r.Pattern); err != nil {
			return fmt.Errorf("rule %d: %w", i, err)
		}
		if r.MaxOffline < 0 {
			return fmt.Errorf("rule %s: negative MaxOffline", r.Pattern)
		}
		if r.Schema != nil {
			if err := r.Schema.validate(); err != nil {
				return fmt.Errorf("rule %s: %w", r.Pattern, err)
			}
		}
		if r.Migrations != nil {
			if strings.Contains(r.Pattern, "*") {
				return fmt.Errorf("rule %s: migrations need an exact collection name: versions belong to one collection", r.Pattern)
			}
			for _, o := range rules[:i] {
				if o.Migrations != nil && o.Pattern == r.Pattern {
					return fmt.Errorf("rule %s: a second rule with migrations for the collection", r.Pattern)
				}
			}
		}
	}
	return nil
}

// ParseRules reads a rules file: a JSON object from collection patterns
// to rules, in the order they apply,
//
//	{"todos.*": {"scope": "owner == $sub", "write": ["eq", "owner", {"$": "sub"}],
//	             "schema": {"fields": {"title": {"type": "string", "required": true}}}}}
//
// where "scope" (the read scope) and "write" hold a scope in its text
// form (scope.Parse) or its array form (scope.FromValue), "schema" a
// Schema and "migrations" the collection's schema versions
// (migrate.Parse; only under an exact collection name). Unknown keys are errors, so a misspelt rule is not silently
// ignored. Errors wrap ErrInvalid.
func ParseRules(data []byte) ([]Rule, error) {
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	bad := func(format string, args ...any) ([]Rule, error) {
		return nil, fmt.Errorf("%w: rules: %s", ErrInvalid, fmt.Sprintf(format, args...))
	}
	if t, err := d.Token(); err != nil || t != json.Delim('{') {
		return bad("not a JSON object")
	}
	var rules []Rule
	for d.More() {
		t, err := d.Token()
		if err != nil {
			return bad("%v", err)
		}
		pattern := t.(string) // object keys are strings
		var raw struct {
			Scope  json.RawMessage `json:"scope"`
			Write  json.RawMessage `json:"write"`
			Schema *Schema         `json:"schema"`
			// Migrations is a migrate.Definition.
			Migrations *migrate.Definition `json:"migrations"`
			// MaxOffline is a Go duration ("720h").
			MaxOffline string `json:"maxOffline"`
		}
		var body json.RawMessage
		if err := d.Decode(&body); err != nil {
			return bad("%s: %v", pattern, err)
		}
		if err := noDuplicateKeys(body); err != nil {
			return bad("%s: %v", pattern, err)
		}
		strict := json.NewDecoder(bytes.NewReader(body))
		strict.DisallowUnknownFields()
		if err := strict.Decode(&raw); err != nil {
			return bad("%s: %v", pattern, err)
		}
		r := Rule{Pattern: pattern, Schema: raw.Schema, Migrations: raw.Migrations}
		if raw.MaxOffline != "" {
			if r.MaxOffline, err = time.ParseDuration(raw.MaxOffline); err != nil || r.MaxOffline <= 0 {
				return bad("%s: maxOffline: %q is not a positive duration", pattern, raw.MaxOffline)
			}
		}
		if r.Read, err = parseScope(raw.Scope); err != nil {
			return bad("%s: scope: %v", pattern, err)
		}
		if r.Write, err = parseScope(raw.Write); err != nil {
			return bad("%s: write: %v", pattern, err)
		}
		if err := validateRules([]Rule{r}); err != nil {
			return bad("%v", err)
		}
		rules = append(rules, r)
	}
	if _, err := d.Token(); err != nil {
		return bad("%v", err)
	}
	if _, err := d.Token(); err == nil {
		return bad("trailing data after the object")
	}
	return rules, nil
}

// noDuplicateKeys refuses a JSON value in which an object gives a key
// twice, at any depth: encoding/json keeps the last, so a rule with a
// second "scope" (or a field's rule, a bound, a migration's version given
// twice) would silently drop the first, and the file mean less than it
// says. A pattern given twice at the top of the file is two rules, which
// both apply; ParseRules does not pass the file's top object here.
func noDuplicateKeys(data []byte) error {
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	return walkKeys(d, "")
}

// walkKeys reads one value from d, refusing a key given twice in any
// object of it; at is where the value is, for the error.
func walkKeys(d *json.Decoder, at string) error {
	t, err := d.Token()
	if err != nil {
		return err
	}
	switch t {
	case json.Delim('{'):
		seen := map[string]bool{}
		for d.More() {
			k, err := d.Token()
			if err != nil {
				return err
			}
			key := k.(string) // object keys are strings
			if seen[key] {
				return fmt.Errorf("%skey %q given twice", at, key)
			}
			seen[key] = true
			if err := walkKeys(d, at+key+": "); err != nil {
				return err
			}
		}
	case json.Delim('['):
		for i := 0; d.More(); i++ {
			if err := walkKeys(d, fmt.Sprintf("%s%d: ", at, i)); err != nil {
				return err
			}
		}
	default:
		return nil
	}
	_, err = d.Token() // the closing delimiter
	return err
}

// parseScope reads a scope of the rules file: text or the array form;
// absent or null is none.
func parseScope(raw json.RawMessage) (*scope.Pred, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	if text, ok := v.(string); ok {
		return scope.Parse(text)
	}
	return scope.FromValue(v)
}

// A Schema says what records of a collection must look like: the type
// and bounds of named fields, which are required, and whether other
// fields may exist. It is checked against the record a change leaves,
// merged with what is stored, and only while that record exists (a
// delete always passes). In JSON:
//
//	{"fields": {"title": {"type": "string", "required": true, "maxBytes": 200},
//	            "done": {"type": "bool"}, "n": {"type": "int", "min": 0, "max": 10},
//	            "tags": {"type": "array", "maxItems": 20}},
//	 "additional": false}
type Schema struct {
	// Fields holds the rules of named fields.
	Fields map[string]FieldRule `json:"fields"`
	// Closed refuses fields that Fields does not name ("additional":
	// false in JSON). The zero value admits them.
	Closed bool `json:"-"`
}

// FieldRule is a Schema's rule for one field.
type FieldRule struct {
	// Type is one of "string", "int", "float" (any number), "bool",
	// "bytes", "array", "map" or "any"; empty means "any". Values keep
	// their CBOR type, so a whole-number float (1.0) is no "int".
	Type string `json:"type"`
	// Required refuses a record without the field.
	Required bool `json:"required"`
	// Nullable admits null besides values of Type (any admits it anyway).
	Nullable bool `json:"nullable"`
	// MaxBytes bounds a string's or a byte string's length in bytes; 0 is
	// no bound.
	MaxBytes int `json:"maxBytes"`
	// MaxItems bounds an array's elements or a map's entries; 0 is no
	// bound.
	MaxItems int `json:"maxItems"`
	// Min and Max bound a number; nil is no bound.
	Min *float64 `json:"min"`
	Max *float64 `json:"max"`
}

// UnmarshalJSON reads a schema; unknown keys are errors.
func (s *Schema) UnmarshalJSON(data []byte) error {
	var raw struct {
		Fields     map[string]json.RawMessage `json:"fields"`
		Additional *bool                      `json:"additional"`
	}
	d := json.NewDecoder(bytes.NewReader(data))
	d.DisallowUnknownFields()
	if err := d.Decode(&raw); err != nil {
		return fmt.Errorf("schema: %w", err)
	}
	*s = Schema{Closed: raw.Additional != nil && !*raw.Additional}
	for name, body := range raw.Fields {
		var f FieldRule
		d := json.NewDecoder(bytes.NewReader(body))
		d.DisallowUnknownFields()
		if err := d.Decode(&f); err != nil {
			return fmt.Errorf("schema: field %q: %w", name, err)
		}
		if s.Fields == nil {
			s.Fields = map[string]FieldRule{}
		}
		s.Fields[name] = f
	}
	return s.validate()
}

var schemaTypes = []string{"", "any", "string", "int", "float", "bool", "bytes", "array", "map"}

func (s *Schema) validate() error {
	for name, f := range s.Fields {
		if err := crdt.ValidateFieldName(name); err != nil {
			return fmt.Errorf("schema: %w", err)
		}
		if !slices.Contains(schemaTypes, f.Type) {
			return fmt.Errorf("schema: field %q: unknown type %q (one of %s)", name, f.Type, strings.Join(schemaTypes[1:], ", "))
		}
		if (f.Min != nil && *f.Min != *f.Min) || (f.Max != nil && *f.Max != *f.Max) {
			return fmt.Errorf("schema: field %q: a bound is NaN", name)
		}
		if f.MaxBytes < 0 || f.MaxItems < 0 {
			return fmt.Errorf("schema: field %q: a negative bound", name)
		}
	}
	return nil
}

// Check reports whether record r keeps to s: nil for a record that does
// not exist; else an error wrapping ErrSchema that names the first field
// at fault (in name order).
func (s *Schema) Check(r crdt.Record) error {
	vals := r.Values()
	if vals == nil {
		return nil
	}
	names := make([]string, 0, len(s.Fields))
	for name := range s.Fields {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		f := s.Fields[name]
		v, ok := vals[name]
		if !ok {
			if f.Required {
				return fmt.Errorf("%w: field %q is required", ErrSchema, name)
			}
			continue
		}
		if err := f.check(v); err != nil {
			return fmt.Errorf("%w: field %q: %v", ErrSchema, name, err)
		}
	}
	if s.Closed {
		extra := make([]string, 0)
		for name := range vals {
			if _, ok := s.Fields[name]; !ok {
				extra = append(extra, name)
			}
		}
		if len(extra) > 0 {
			slices.Sort(extra)
			return fmt.Errorf("%w: field %q is not in the schema", ErrSchema, extra[0])
		}
	}
	return nil
}

// check checks one field's value (canonical CBOR).
func (f FieldRule) check(v []byte) error {
	if f.Type == "" || f.Type == "any" {
		return nil
	}
	var x any
	if err := crdt.DecodeValue(v, &x); err != nil {
		return err
	}
	if x == nil {
		if f.Nullable {
			return nil
		}
		return fmt.Errorf("null, want %s", f.Type)
	}
	var num *big.Float
	switch f.Type {
	case "string":
		s, ok := x.(string)
		if !ok {
			return fmt.Errorf("%s, want string", typeName(x))
		}
		if f.MaxBytes > 0 && len(s) > f.MaxBytes {
			return fmt.Errorf("%d bytes, at most %d", len(s), f.MaxBytes)
		}
	case "bytes":
		b, ok := x.([]byte)
		if !ok {
			return fmt.Errorf("%s, want bytes", typeName(x))
		}
		if f.MaxBytes > 0 && len(b) > f.MaxBytes {
			return fmt.Errorf("%d bytes, at most %d", len(b), f.MaxBytes)
		}
	case "bool":
		if _, ok := x.(bool); !ok {
			return fmt.Errorf("%s, want bool", typeName(x))
		}
	case "array":
		a, ok := x.([]any)
		if !ok {
			return fmt.Errorf("%s, want array", typeName(x))
		}
		if f.MaxItems > 0 && len(a) > f.MaxItems {
			return fmt.Errorf("%d items, at most %d", len(a), f.MaxItems)
		}
	case "map":
		n := -1
		switch m := x.(type) {
		case map[string]any:
			n = len(m)
		case map[any]any:
			n = len(m)
		}
		if n < 0 {
			return fmt.Errorf("%s, want map", typeName(x))
		}
		if f.MaxItems > 0 && n > f.MaxItems {
			return fmt.Errorf("%d entries, at most %d", n, f.MaxItems)
		}
	case "int":
		switch n := x.(type) {
		case int64:
			num = new(big.Float).SetInt64(n)
		case uint64:
			num = new(big.Float).SetUint64(n)
		case *big.Int:
			num = new(big.Float).SetInt(n)
		default:
			return fmt.Errorf("%s, want int", typeName(x))
		}
	case "float":
		switch n := x.(type) {
		case int64:
			num = new(big.Float).SetInt64(n)
		case uint64:
			num = new(big.Float).SetUint64(n)
		case *big.Int:
			num = new(big.Float).SetInt(n)
		case float64:
			if n != n { // NaN: no bound holds it
				if f.Min != nil || f.Max != nil {
					return errors.New("NaN is outside every bound")
				}
				return nil
			}
			num = big.NewFloat(n)
		default:
			return fmt.Errorf("%s, want a number", typeName(x))
		}
	}
	if num != nil {
		if f.Min != nil && num.Cmp(big.NewFloat(*f.Min)) < 0 {
			return fmt.Errorf("%s, below the minimum %v", num.Text('g', -1), *f.Min)
		}
		if f.Max != nil && num.Cmp(big.NewFloat(*f.Max)) > 0 {
			return fmt.Errorf("%s, above the maximum %v", num.Text('g', -1), *f.Max)
		}
	}
	return nil
}

func typeName(x any) string {
	switch x.(type) {
	case string:
		return "a string"
	case []byte:
		return "bytes"
	case bool:
		return "a bool"
	case int64, uint64, *big.Int:
		return "an int"
	case float64:
		return "a float"
	case []any:
		return "an array"
	case map[string]any, map[any]any:
		return "a map"
	}
	return fmt.Sprintf("%T", x)
}
