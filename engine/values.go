package engine

import (
	"context"
	"fmt"

	"github.com/convergo/convergo/crdt"
)

// GetInto decodes the visible fields of a record into v, a pointer to a
// struct (fields matched by `cbor` or `json` tag, else by name; fields v
// lacks are skipped) or to a map. It returns an error wrapping ErrNotFound
// when the record does not exist, as Get does.
func (e *Engine) GetInto(ctx context.Context, collection, id string, v any) error {
	rec, err := e.current(ctx, "get", collection, id)
	if err != nil {
		return err
	}
	if !rec.Exists() {
		return fmt.Errorf("get %s/%s: %w", collection, id, ErrNotFound)
	}
	if err := crdt.DecodeValues(rec.Values(), v); err != nil {
		return fmt.Errorf("get %s/%s: %w", collection, id, err)
	}
	return nil
}

// DocOf turns v, a struct or a map with string keys, into a Doc to write:
// each exported field (named by its `cbor` or `json` tag) or entry becomes
// a field, with the value it reads back as.
func DocOf(v any) (Doc, error) {
	values, err := crdt.ValuesOf(v)
	if err != nil {
		return nil, err
	}
	doc := make(Doc, len(values))
	for name, b := range values {
		var x any
		if err := crdt.DecodeValue(b, &x); err != nil {
			return nil, fmt.Errorf("field %q: %w", name, err)
		}
		doc[name] = x
	}
	return doc, nil
}

// Decode decodes d into v, a pointer to a struct or a map, as GetInto
// does.
func (d Doc) Decode(v any) error {
	values, err := crdt.ValuesOf(map[string]any(d))
	if err != nil {
		return err
	}
	return crdt.DecodeValues(values, v)
}
