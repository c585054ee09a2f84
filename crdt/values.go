package crdt

import (
	"fmt"
	"math"
	"math/big"
	"reflect"

	"github.com/fxamacker/cbor/v2"
)

// Field values and Go values. A field value is one CBOR data item (see
// the package doc, "Encoding"); these functions are the one mapping
// between it and Go, used by the engine's documents and the Go client.
// Decoded into an interface, every value is one encoding/json marshals as
// the JSON it came from:
//
//	CBOR                         Go (decoded into any)
//	null                         nil
//	false, true                  bool
//	integer in int64's range     int64
//	integer above it             uint64
//	integer below it             *big.Int
//	float (any width)            float64
//	text                         string
//	bytes                        []byte (JSON: base64, as encoding/json writes []byte)
//	array                        []any
//	map with text keys           map[string]any
//	map with other keys          map[any]any (keys as above; JSON cannot hold it)
//
// Encoding takes any Go value the CBOR library encodes: maps, slices,
// structs (field names and omitempty from `cbor` tags, else `json` tags,
// as encoding/json would), numbers of every width, []byte as a byte
// string. A time.Time is written as text in RFC 3339 with nanoseconds
// ("2025-11-24T09:30:15.5Z", its zone offset kept), the form encoding/json
// writes, because the value model holds no tags; it reads back as a string
// into any and as the same instant into a time.Time. NaN and infinities
// are held but have no JSON. Every value is held in deterministic form
// (NormalizeValue), so a float that is a whole number stays a float.

// valueEncMode encodes field values: deterministic, times as RFC 3339 text.
var valueEncMode = func() cbor.EncMode {
	o := cbor.CoreDetEncOptions()
	o.Time = cbor.TimeRFC3339Nano
	o.TimeTag = cbor.EncTagNone
	m, err := o.EncMode()
	if err != nil {
		panic(err)
	}
	return m
}()

// EncodeValue encodes a Go value as a canonical field value (see the
// mapping above).
func EncodeValue(v any) ([]byte, error) {
	b, err := valueEncMode.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("%w: encode value: %v", ErrInvalid, err)
	}
	return b, nil // its size is checked where it joins a record (Record.Validate)
}

// DecodeValue decodes a field value into v, which points to any Go type
// the value fits (a struct, a time.Time from RFC 3339 text, a number of
// another width). Into a *any it gives the JSON-friendly types above.
func DecodeValue(data []byte, v any) error {
	if err := Unmarshal(data, v); err != nil {
		return err
	}
	if p, ok := v.(*any); ok {
		*p = plain(*p)
	}
	return nil
}

// ValuesOf encodes a document as field values: v is a map with string
// keys or a struct (or a pointer to one), and each of its entries or
// exported fields becomes one field value. It is the inverse of
// DecodeValues.
func ValuesOf(v any) (map[string][]byte, error) {
	b, err := valueEncMode.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("%w: encode document: %v", ErrInvalid, err)
	}
	var raw map[string]cbor.RawMessage
	if err := envMode.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("%w: a document is a map with string keys or a struct, not %T", ErrInvalid, v)
	}
	out := make(map[string][]byte, len(raw))
	for name, r := range raw {
		if err := ValidateFieldName(name); err != nil {
			return nil, err
		}
		if len(r) > MaxValueBytes {
			return nil, fmt.Errorf("%w: field %q: value of %d bytes exceeds %d", ErrTooLarge, name, len(r), MaxValueBytes)
		}
		out[name] = []byte(r)
	}
	return out, nil
}

// DecodeValues decodes field values, as Record.Values returns them, into v:
// a pointer to a struct (fields matched by `cbor` or `json` tag, else by
// name; fields v lacks are skipped, as encoding/json skips them) or to a
// map (map[string]any gets the JSON-friendly types above).
func DecodeValues(values map[string][]byte, v any) error {
	raw := make(map[string]cbor.RawMessage, len(values))
	for name, b := range values {
		raw[name] = b
	}
	b, err := Marshal(raw)
	if err != nil {
		return err
	}
	if err := envMode.Unmarshal(b, v); err != nil {
		return wrapDecode(err)
	}
	plainDeep(reflect.ValueOf(v))
	return nil
}

// plainDeep applies plain to every interface value inside v: the any
// fields, elements and map values of a decoded struct, slice or map.
func plainDeep(v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer:
		if !v.IsNil() {
			plainDeep(v.Elem())
		}
	case reflect.Interface:
		if !v.IsNil() && v.CanSet() {
			if p := reflect.ValueOf(plain(v.Interface())); p.Type().AssignableTo(v.Type()) {
				v.Set(p)
			}
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if f := v.Field(i); f.CanSet() {
				plainDeep(f)
			}
		}
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			plainDeep(v.Index(i))
		}
	case reflect.Map:
		if !holdsAny(v.Type().Elem()) {
			return
		}
		iter := v.MapRange()
		for iter.Next() {
			e := reflect.New(v.Type().Elem()).Elem()
			e.Set(iter.Value())
			plainDeep(e)
			v.SetMapIndex(iter.Key(), e)
		}
	}
}

// holdsAny reports whether values of t may hold an interface.
func holdsAny(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Interface, reflect.Struct:
		return true
	case reflect.Pointer, reflect.Slice, reflect.Array, reflect.Map:
		return holdsAny(t.Elem())
	}
	return false
}

// plain converts what the CBOR library decodes into an interface to the
// JSON-friendly types of the mapping above.
func plain(v any) any {
	switch x := v.(type) {
	case uint64:
		if x <= math.MaxInt64 {
			return int64(x)
		}
		return x
	case big.Int:
		return &x
	case []any:
		for i, e := range x {
			x[i] = plain(e)
		}
		return x
	case map[string]any:
		for k, e := range x {
			x[k] = plain(e)
		}
		return x
	case map[any]any:
		texts := true
		for k := range x {
			if _, ok := k.(string); !ok {
				texts = false
				break
			}
		}
		if texts {
			m := make(map[string]any, len(x))
			for k, e := range x {
				m[k.(string)] = plain(e)
			}
			return m
		}
		m := make(map[any]any, len(x))
		for k, e := range x {
			if k == nil || reflect.TypeOf(k).Comparable() { // a null key has no type
				m[plain(k)] = plain(e)
			}
		}
		return m
	}
	return v
}
