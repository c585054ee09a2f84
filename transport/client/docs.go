package client

import (
	"fmt"

	"github.com/convergo/convergo/crdt"
)

// Documents: the typed side of a Replica. A record's visible fields read
// as a map of JSON-friendly values (crdt's value mapping: nested objects
// as map[string]any, integers as int64, other numbers as float64, bytes as
// []byte, times as RFC 3339 text) or into a struct, and a struct or map
// writes all its fields in one change. The engine's Doc reads the same
// way, so a value written on either side reads back alike on both.

// GetDoc returns the visible fields of a record in the local view, decoded
// to JSON-friendly values, and whether the record exists (it was written
// and is neither deleted nor unset in every field).
func (r *Replica) GetDoc(collection, id string) (map[string]any, bool, error) {
	rec, _ := r.Get(collection, id)
	if !rec.Exists() {
		return nil, false, nil
	}
	doc := map[string]any{}
	if err := crdt.DecodeValues(rec.Values(), &doc); err != nil {
		return nil, true, fmt.Errorf("get %s/%s: %w", collection, id, err)
	}
	return doc, true, nil
}

// GetInto decodes the visible fields of a record in the local view into v,
// a pointer to a struct (fields matched by `cbor` or `json` tag, else by
// name; fields v lacks are skipped) or to a map, and reports whether the
// record exists; v is untouched when it does not.
func (r *Replica) GetInto(collection, id string, v any) (bool, error) {
	rec, _ := r.Get(collection, id)
	if !rec.Exists() {
		return false, nil
	}
	if err := crdt.DecodeValues(rec.Values(), v); err != nil {
		return true, fmt.Errorf("get %s/%s: %w", collection, id, err)
	}
	return true, nil
}

// SetDoc writes every field of v, a struct or a map with string keys, in
// one change with one stamp. Fields the record has that v lacks are left
// as they are (Unset removes one).
func (r *Replica) SetDoc(collection, id string, v any) error {
	values, err := crdt.ValuesOf(v)
	if err != nil {
		return fmt.Errorf("set %s/%s: %w", collection, id, err)
	}
	return r.write(collection, id, func(s crdt.Stamp) crdt.Record {
		rec := crdt.Record{ID: id, Fields: make(map[string]crdt.Field, len(values))}
		for name, b := range values {
			rec.Fields[name] = crdt.Field{Stamp: s, Value: b}
		}
		return rec
	})
}
