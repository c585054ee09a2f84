package crdt

import (
	"bytes"
	"fmt"
	"reflect"
	"strconv"
	"strings"

	"github.com/fxamacker/cbor/v2"
)

// Null in an envelope (docs/protocol.md, section 2): a known key whose
// value is null is malformed, as a value of any other wrong type is; a
// sender with nothing for a key leaves it out. The codec would read null
// as the field's zero value (or a nil pointer: absent), so
// UnmarshalEnvelope looks for it itself, in the envelope's map and in the
// maps of the envelopes nested in it that the codec decodes by reflection
// (a welcome's hello answer, a pull answer's reset); types that decode
// themselves (cbor.Unmarshaler) check their own.

// cborNull is the encoding of null.
const cborNull = 0xf6

var unmarshalerType = reflect.TypeFor[cbor.Unmarshaler]()

// nullKnownKey returns an error wrapping ErrMalformed when data, an
// envelope the codec decoded into a value of type t, holds null under a
// key t declares (keyasint), or within such a key's value (nullsIn).
// data is well-formed: the codec read it.
func nullKnownKey(data []byte, t reflect.Type) error {
	if bytes.IndexByte(data, cborNull) < 0 || reflect.PointerTo(t).Implements(unmarshalerType) {
		// No null anywhere (the common case, at the cost of one scan), or
		// a type that decodes itself, and checks its own keys.
		return nil
	}
	_, err := nullsIn(data, 0, t)
	return err
}

// nullsIn checks the item at off of data, which the codec decoded into a
// value of type t, and returns the offset after it: null is malformed
// wherever t is not an interface (a known key's value, an item of a list
// or a value of a map under one, a key of an envelope nested in it, a
// value of a type that decodes itself, whose insides it checks itself).
func nullsIn(data []byte, off int, t reflect.Type) (int, error) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() == reflect.Interface {
		return skipItem(data, off), nil
	}
	if data[off] == cborNull {
		return 0, fmt.Errorf("%w: null where %s is read: a key without a value is left out", ErrMalformed, t)
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		return skipItem(data, off), nil
	}
	major, _, arg, p := readHead(data, off)
	var err error
	switch {
	case major == majorArray && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array):
		for range arg {
			if p, err = nullsIn(data, p, t.Elem()); err != nil {
				return 0, err
			}
		}
		return p, nil
	case major == majorMap && t.Kind() == reflect.Map:
		for range arg {
			if p, err = nullsIn(data, skipItem(data, p), t.Elem()); err != nil {
				return 0, err
			}
		}
		return p, nil
	case major != majorMap || t.Kind() != reflect.Struct:
		return skipItem(data, off), nil
	}
	var fields map[uint64]reflect.Type
	for range arg {
		kmajor, _, key, _ := readHead(data, p)
		p = skipItem(data, p)
		ft, known := reflect.Type(nil), false
		if kmajor == majorUint {
			if fields == nil {
				fields = keyFields(t)
			}
			ft, known = fields[key]
		}
		if !known {
			p = skipItem(data, p)
			continue
		}
		if p, err = nullsIn(data, p, ft); err != nil {
			return 0, fmt.Errorf("key %d: %w", key, err)
		}
	}
	return p, nil
}

// keyFields returns the fields of struct t by their integer keys
// (`cbor:"N,keyasint"`), with their types.
func keyFields(t reflect.Type) map[uint64]reflect.Type {
	out := map[uint64]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("cbor"), ",")
		if !strings.Contains(","+opts+",", ",keyasint,") {
			continue
		}
		if k, err := strconv.ParseUint(name, 10, 64); err == nil {
			out[k] = f.Type
		}
	}
	return out
}
