package engine

import (
	"context"
	"errors"
	"fmt"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// Doc is a record's visible fields: field names to values. Written, a
// value may be any Go value crdt.EncodeValue takes (maps, slices, structs,
// numbers, strings, []byte, time.Time, nil). Read back, values have the
// JSON-friendly types of crdt's mapping, so json.Marshal of a Doc gives the
// JSON of what was written: nested objects as map[string]any, arrays as
// []any, integers as int64, other numbers as float64, bytes as []byte and
// times as their RFC 3339 text. Decode (or Engine.GetInto) fills a struct
// instead.
type Doc map[string]any

// Put writes a whole record: every field in fields is set, and every field
// the record has now that fields lacks is unset. Fields written concurrently
// elsewhere that this server has not seen yet survive, as the merge rules
// say; what the record held when Put read it loses (OwnStamp).
func (e *Engine) Put(ctx context.Context, collection, id string, fields Doc) error {
	if err := stores.CheckKey(collection, id); err != nil {
		return fmt.Errorf("put %s/%s: %w", collection, id, err)
	}
	held, err := e.held(ctx, "put", collection, id)
	if err != nil {
		return err
	}
	cur := e.resolve(e.Migrations(collection), held)
	return e.write(ctx, "put", collection, id, &held, fields, func(rec *crdt.Record, s crdt.Stamp) {
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
	return e.write(ctx, "update", collection, id, nil, fields, nil)
}

// Unset removes fields of a record.
func (e *Engine) Unset(ctx context.Context, collection, id string, names ...string) error {
	return e.write(ctx, "unset", collection, id, nil, nil, func(rec *crdt.Record, s crdt.Stamp) {
		for _, name := range names {
			rec.Fields[name] = crdt.Field{Stamp: s}
		}
	})
}

// Delete deletes a record: every field written before now is hidden.
func (e *Engine) Delete(ctx context.Context, collection, id string) error {
	s, err := e.OwnStamp(ctx, collection, id)
	if err != nil {
		return fmt.Errorf("delete %s/%s: %w", collection, id, err)
	}
	return e.applyOne(ctx, "delete", crdt.Change{Collection: collection, Record: crdt.DeleteRecord(id, s)})
}

// Get returns the visible fields of a record (in its collection's current
// schema version), or an error wrapping ErrNotFound when it does not
// exist (never written, deleted, or all its fields unset).
func (e *Engine) Get(ctx context.Context, collection, id string) (Doc, error) {
	rec, err := e.current(ctx, "get", collection, id)
	if err != nil {
		return nil, err
	}
	if !rec.Exists() {
		return nil, fmt.Errorf("get %s/%s: %w", collection, id, ErrNotFound)
	}
	return decodeDoc(rec)
}

// GetRecord returns a record's full state, tombstones included, in its
// collection's current schema version.
func (e *Engine) GetRecord(ctx context.Context, collection, id string) (Entry, error) {
	ent, err := e.store.Get(ctx, collection, id)
	if err != nil {
		return Entry{}, fmt.Errorf("get %s/%s: %w", collection, id, err)
	}
	return Entry{Seq: ent.Seq, Record: e.resolve(e.Migrations(collection), ent.Record)}, nil
}

// DecodeDoc decodes the visible fields of a record into a Doc.
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

// current reads a record for op (a call's name, for its errors), resolved
// to its collection's current schema version: the empty record when the
// store has none.
func (e *Engine) current(ctx context.Context, op, collection, id string) (crdt.Record, error) {
	if err := stores.CheckKey(collection, id); err != nil {
		return crdt.Record{}, fmt.Errorf("%s %s/%s: %w", op, collection, id, err)
	}
	r, err := e.held(ctx, op, collection, id)
	if err != nil {
		return crdt.Record{}, err
	}
	return e.resolve(e.Migrations(collection), r), nil
}

// held reads the record collection/id as the store holds it, in the
// shapes it was written in (no migration resolves it): what a change
// merges into and a purge collects from. A record the store does not
// hold is returned empty.
func (e *Engine) held(ctx context.Context, op, collection, id string) (crdt.Record, error) {
	ent, err := e.store.Get(ctx, collection, id)
	if errors.Is(err, stores.ErrNotFound) {
		return crdt.Record{ID: id}, nil
	}
	if err != nil {
		return crdt.Record{}, fmt.Errorf("%s %s/%s: read: %w", op, collection, id, err)
	}
	return ent.Record, nil
}

// OwnStamp issues the stamp of a write the server itself makes to
// collection/id (Put, Update, Unset, Delete, the deny list's entries):
// after every stamp the record holds now, whichever instance or replica
// wrote them, and after every stamp this engine issued. A client's clock
// may run up to MaxDrift ahead, and the stamps it writes with it; the
// instance that took them observed them, another one on the same store
// did not, and a write it made after reading the record, stamped from its
// own clock alone, would lose to the older write.
//
// OwnStamp reads the record. It fails wrapping ErrClockSkew while the
// engine's clock is off its store's (ClockHealth): a stamp a year ahead
// would win every later write for a year. It fails wrapping
// crdt.ErrClockDrift when the record holds a stamp more than MaxDrift
// ahead of this server's clock, which only a clock off at the time of
// that write makes.
func (e *Engine) OwnStamp(ctx context.Context, collection, id string) (crdt.Stamp, error) {
	if err := stores.CheckKey(collection, id); err != nil {
		return crdt.Stamp{}, err
	}
	if err := e.ClockHealth(); err != nil {
		return crdt.Stamp{}, err // before the read: it would be for nothing
	}
	held, err := e.held(ctx, "stamp", collection, id)
	if err != nil {
		return crdt.Stamp{}, err
	}
	return e.ownStampAfter(collection, held)
}

// ownStampAfter is OwnStamp with the record already read, as the store
// holds it.
func (e *Engine) ownStampAfter(collection string, held crdt.Record) (crdt.Stamp, error) {
	if err := e.ClockHealth(); err != nil {
		return crdt.Stamp{}, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	c, wall := e.clockOf(collection), e.wall()
	if top := held.MaxStamp(); !top.IsZero() {
		if err := c.Observe(top.Time(), wall); err != nil {
			return crdt.Stamp{}, fmt.Errorf("the record holds a stamp ahead of this server's clock: %w", err)
		}
	}
	return c.Now(wall)
}

// applyOwnRetried applies the change the engine makes for op to
// collection/id, stamped by stamp, first with this instance's clock alone
// (Now) and, only when what the record holds outweighed it (Result.Lost),
// once more after that (OwnStamp). It is for records the engine writes
// often without reading them first (read leases): the read is paid only
// when the first write lost, which it does to a write of another instance
// whose clock runs ahead of this one's, up to MaxClockSkew without either
// being off, made up to that much earlier; or to a collection run's
// delete as read of the record, stamped with its latest write. Lost
// twice, it fails: a newer write came in between.
func (e *Engine) applyOwnRetried(ctx context.Context, op, collection, id string, stamp func(crdt.Stamp) crdt.Record) error {
	s, err := e.Now(collection)
	if err != nil {
		return fmt.Errorf("%s %s/%s: %w", op, collection, id, err)
	}
	for try := 0; ; try++ {
		c := crdt.Change{Collection: collection, Record: stamp(s)}
		res, err := e.Apply(ctx, []crdt.Change{c})
		if err != nil {
			return fmt.Errorf("%s %s/%s: %w", op, collection, id, err)
		}
		if err := res[0].Err; err != nil {
			return fmt.Errorf("%s %s/%s: %w", op, collection, id, errors.Unwrap(err))
		}
		if len(res[0].Lost) == 0 {
			return nil
		}
		if try > 0 {
			return fmt.Errorf("%s %s/%s: fields %v lost to a newer write twice", op, collection, id, res[0].Lost)
		}
		if s, err = e.OwnStamp(ctx, collection, id); err != nil {
			return fmt.Errorf("%s %s/%s: %w", op, collection, id, err)
		}
	}
}

// write stamps fields (and what extra adds) with one new stamp (OwnStamp;
// held is the record as the store holds it when the caller read it, nil
// when it did not) and applies them as one change; op names the call in
// errors.
func (e *Engine) write(ctx context.Context, op, collection, id string, held *crdt.Record, fields Doc, extra func(*crdt.Record, crdt.Stamp)) error {
	var s crdt.Stamp
	var err error
	if held != nil {
		s, err = e.ownStampAfter(collection, *held)
	} else {
		s, err = e.OwnStamp(ctx, collection, id)
	}
	if err != nil {
		return fmt.Errorf("%s %s/%s: %w", op, collection, id, err)
	}
	rec := crdt.Record{ID: id, Fields: make(map[string]crdt.Field, len(fields))}
	for name, v := range fields {
		b, err := crdt.EncodeValue(v)
		if err != nil {
			return fmt.Errorf("%s %s/%s: field %q: %w", op, collection, id, name, err)
		}
		rec.Fields[name] = crdt.Field{Stamp: s, Value: b}
	}
	if extra != nil {
		extra(&rec, s)
	}
	if err := rec.Validate(); err != nil {
		return fmt.Errorf("%s %s/%s: %w", op, collection, id, err)
	}
	return e.applyOne(ctx, op, crdt.Change{Collection: collection, Record: rec})
}

// applyOne applies one change the engine made for op and returns its
// refusal, if any, named after op.
func (e *Engine) applyOne(ctx context.Context, op string, c crdt.Change) error {
	res, err := e.Apply(ctx, []crdt.Change{c})
	if err != nil {
		return fmt.Errorf("%s %s/%s: %w", op, c.Collection, c.Record.ID, err)
	}
	if err := res[0].Err; err != nil {
		return fmt.Errorf("%s %s/%s: %w", op, c.Collection, c.Record.ID, errors.Unwrap(err))
	}
	return nil
}
