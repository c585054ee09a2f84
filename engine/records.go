package engine

import (
	"context"
	"errors"
	"fmt"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// Doc is a record's visible fields, decoded from CBOR.
type Doc map[string]any

// Put writes a whole record: every field in fields is set, and every field
// the record has now that fields lacks is unset. Fields written concurrently
// elsewhere that this server has not seen yet survive, as the merge rules
// say.
func (e *Engine) Put(ctx context.Context, collection, id string, fields Doc) error {
	cur, err := e.current(ctx, collection, id)
	if err != nil {
		return err
	}
	return e.write(ctx, collection, id, fields, func(rec *crdt.Record, s crdt.Stamp) {
		for name := range cur.Values() {
			if _, ok := fields[name]; !ok {
				rec.Fields[name] = crdt.Field{Stamp: s}
			}
		}
	})
}

// Update sets the fields in fields and leaves the others as they are.
// A nil value sets the field to null; use Unset to remove a field.
func (e *Engine) Update(ctx context.Context, collection, id string, fields Doc) error {
	return e.write(ctx, collection, id, fields, nil)
}

// Unset removes fields of a record.
func (e *Engine) Unset(ctx context.Context, collection, id string, names ...string) error {
	return e.write(ctx, collection, id, nil, func(rec *crdt.Record, s crdt.Stamp) {
		for _, name := range names {
			rec.Fields[name] = crdt.Field{Stamp: s}
		}
	})
}

// Delete deletes a record: every field written before now is hidden.
func (e *Engine) Delete(ctx context.Context, collection, id string) error {
	s, err := e.Now(collection)
	if err != nil {
		return err
	}
	return e.applyOne(ctx, crdt.Change{Collection: collection, Record: crdt.DeleteRecord(id, s)})
}

// Get returns the visible fields of a record, or an error wrapping
// ErrNotFound when it does not exist (never written, deleted, or all
// its fields unset).
func (e *Engine) Get(ctx context.Context, collection, id string) (Doc, error) {
	rec, err := e.current(ctx, collection, id)
	if err != nil {
		return nil, err
	}
	if !rec.Exists() {
		return nil, fmt.Errorf("get %s/%s: %w", collection, id, ErrNotFound)
	}
	return decodeDoc(rec)
}

// GetRecord returns a record's full state, tombstones included.
func (e *Engine) GetRecord(ctx context.Context, collection, id string) (Entry, error) {
	ent, err := e.store.Get(ctx, collection, id)
	if err != nil {
		return Entry{}, fmt.Errorf("get %s/%s: %w", collection, id, err)
	}
	return Entry{Seq: ent.Seq, Record: ent.Record}, nil
}

// DecodeDoc decodes the visible fields of a record.
func DecodeDoc(rec crdt.Record) (Doc, error) { return decodeDoc(rec) }

func decodeDoc(rec crdt.Record) (Doc, error) {
	doc := Doc{}
	for name, v := range rec.Values() {
		var x any
		if err := crdt.DecodeValue(v, &x); err != nil {
			return nil, fmt.Errorf("decode %s.%s: %w", rec.ID, name, err)
		}
		doc[name] = x
	}
	return doc, nil
}

func (e *Engine) current(ctx context.Context, collection, id string) (crdt.Record, error) {
	ent, err := e.store.Get(ctx, collection, id)
	if errors.Is(err, stores.ErrNotFound) {
		return crdt.Record{ID: id}, nil
	}
	if err != nil {
		return crdt.Record{}, fmt.Errorf("read %s/%s: %w", collection, id, err)
	}
	return ent.Record, nil
}

func (e *Engine) write(ctx context.Context, collection, id string, fields Doc, extra func(*crdt.Record, crdt.Stamp)) error {
	s, err := e.Now(collection)
	if err != nil {
		return err
	}
	rec := crdt.Record{ID: id, Fields: make(map[string]crdt.Field, len(fields))}
	for name, v := range fields {
		b, err := crdt.EncodeValue(v)
		if err != nil {
			return fmt.Errorf("write %s/%s field %q: %w", collection, id, name, err)
		}
		rec.Fields[name] = crdt.Field{Stamp: s, Value: b}
	}
	if extra != nil {
		extra(&rec, s)
	}
	if err := rec.Validate(); err != nil {
		return fmt.Errorf("write %s/%s: %w", collection, id, err)
	}
	return e.applyOne(ctx, crdt.Change{Collection: collection, Record: rec})
}

func (e *Engine) applyOne(ctx context.Context, c crdt.Change) error {
	res, err := e.Apply(ctx, []crdt.Change{c})
	if err != nil {
		return err
	}
	return res[0].Err
}
