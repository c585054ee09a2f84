package engine

import (
	"context"
	"errors"
	"fmt"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/crdt/migrate"
	"github.com/convergo/convergo/stores"
)

// Schema versions (docs/design.md, "Schema versions"). A collection's
// migrations (Rule.Migrations) say how its records change shape from one
// version to the next. The store holds every record in whatever shape it
// was written in (records written before a migration was installed keep
// their old fields), so the engine translates at its doors: a change is
// translated up to the current version before admission (WithVersions),
// a stored record is resolved to the current version whenever the engine
// reads it (rules, scopes, Get), and a page is translated down to the
// reader's version after its scope was evaluated (PullAt).

// Migrations returns collection's migrations: those of the rule named
// exactly collection, or nil (a collection whose only version is 1).
func (e *Engine) Migrations(collection string) *migrate.Definition {
	for _, r := range e.rules {
		if r.Migrations != nil && r.Pattern == collection {
			return r.Migrations
		}
	}
	return nil
}

// SchemaVersion checks a version a client names for collection and
// returns the version it stands for: 0 is the current one; above the
// current one is an error wrapping ErrSchemaAhead.
func (e *Engine) SchemaVersion(collection string, v int) (int, error) {
	out, err := e.Migrations(collection).Resolve(v)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", collection, err)
	}
	return out, nil
}

// WithVersions says under which schema version the changes of each
// collection of an Apply call were written (absent or 0: the current
// one). Apply translates them up to the current version before admission;
// a change the migration cannot map is refused with ErrUntranslatable, and
// a version above the current one fails the call with ErrSchemaAhead.
func WithVersions(versions map[string]int) ApplyOption {
	return func(c *applyConfig) { c.versions = versions }
}

// translateChanges translates changes up to their collections' current
// versions, refusing (in results) the ones that cannot be; it returns the
// others with their indexes (nil index: all of them, in order).
//
// A change refused untranslatable that has a stamp before its
// collection's write horizon the stored record does not hold (heldLive,
// by the names it was written under) is refused collected instead: it
// would be, could it be translated, and a client's give-back of its
// stamps of a record deleted and collected meanwhile, one change per
// stamp (a part of a merge alone), must come back collected for the
// client to drop the record (docs/protocol.md, "Tombstone collection").
func (e *Engine) translateChanges(ctx context.Context, changes []crdt.Change, versions map[string]int, results []Result) ([]crdt.Change, []int, error) {
	if len(versions) == 0 {
		return changes, nil, nil
	}
	var untranslatable []crdt.Change
	var uindex []int
	cur := map[string]int{}
	for coll, v := range versions {
		if v == 0 {
			continue
		}
		if _, err := e.SchemaVersion(coll, v); err != nil {
			return nil, nil, err
		}
	}
	out := make([]crdt.Change, 0, len(changes))
	index := make([]int, 0, len(changes))
	for i, c := range changes {
		d := e.Migrations(c.Collection)
		from := versions[c.Collection]
		if d != nil && from != 0 && from != d.Current() {
			n, ok := cur[c.Collection]
			if !ok {
				n = d.Current()
				cur[c.Collection] = n
			}
			r, err := d.Change(c.Record, from, n)
			if err != nil {
				results[i] = Result{Status: StatusRefused, Err: fmt.Errorf("change %s/%s: %w", c.Collection, c.Record.ID, err)}
				if errors.Is(err, migrate.ErrUntranslatable) {
					untranslatable = append(untranslatable, c)
					uindex = append(uindex, i)
				}
				continue
			}
			c.Record = r
		}
		out = append(out, c)
		index = append(index, i)
	}
	if len(untranslatable) > 0 {
		if err := e.collectedFirst(ctx, untranslatable, uindex, results); err != nil {
			return nil, nil, err
		}
	}
	return out, index, nil
}

// collectedFirst refuses collected each of changes (refused
// untranslatable, at index in results) that has a stamp before its
// collection's write horizon, read afresh as for any refusal collected,
// which the record as stored does not hold (translateChanges).
func (e *Engine) collectedFirst(ctx context.Context, changes []crdt.Change, index []int, results []Result) error {
	horizons, err := e.writeHorizons(ctx, changes, true)
	if err != nil {
		return err
	}
	for k, c := range changes {
		w := horizons[c.Collection]
		cerr := checkCollected(c, w)
		if cerr == nil || stores.CheckKey(c.Collection, c.Record.ID) != nil {
			continue
		}
		stored, err := e.held(ctx, "apply", c.Collection, c.Record.ID)
		if err != nil {
			return err
		}
		if heldLive(nil, stored, c.Record, w) {
			continue
		}
		results[index[k]] = Result{Status: StatusRefused, Err: fmt.Errorf("change %s/%s: %w", c.Collection, c.Record.ID, cerr)}
	}
	return nil
}

// resolve returns r in the current version of its collection's
// migrations d (nil: r itself).
func (e *Engine) resolve(d *migrate.Definition, r crdt.Record) crdt.Record {
	out, dropped := resolved(d, r)
	e.noteDropped(dropped)
	return out
}

// resolved returns r in the current version of d (nil: r itself) and
// how many of its fields the translation left out.
func resolved(d *migrate.Definition, r crdt.Record) (crdt.Record, int) {
	if d == nil || d.Current() == 1 {
		return r, 0
	}
	out, dropped, err := d.Record(r, 1, d.Current())
	if err != nil {
		return r, 0 // versions 1 and Current are always valid
	}
	return out, dropped
}

// noteDropped counts source fields a translation of a stored record left
// out (a split or merge of a value that is not a string).
func (e *Engine) noteDropped(n int) {
	if n > 0 {
		e.migrationDrops.Add(uint64(n))
	}
}

// MigrationDrops returns how many fields translations of stored records
// have left out since Open, because a migration could not map them (a
// split or merge of a value that is not a string: docs/design.md, "Schema
// versions"). The record is served without the field; a count that grows
// says a collection holds data its migration does not fit.
func (e *Engine) MigrationDrops() uint64 { return e.migrationDrops.Load() }

// WithDefaults returns r as rules and scopes read it, for the transport's
// checks of restored records: see withDefaults.
func WithDefaults(d *migrate.Definition, r crdt.Record) crdt.Record { return withDefaults(d, r) }

// withDefaults returns r as rules and scopes read it: a record that
// exists shows the current version's defaults for the fields it lacks
// (stamped with its newest stamp, so they are visible; never stored).
func withDefaults(d *migrate.Definition, r crdt.Record) crdt.Record {
	defs := d.Defaults(d.Current())
	if len(defs) == 0 || !r.Exists() {
		return r
	}
	var out crdt.Record
	stamp := r.MaxStamp()
	for f, v := range defs {
		if g, ok := r.Fields[f]; ok && g.Stamp.Compare(r.Deleted) > 0 {
			continue
		}
		if out.Fields == nil {
			out = r.Clone()
		}
		out.Fields[f] = crdt.Field{Stamp: stamp, Value: v}
	}
	if out.Fields == nil {
		return r
	}
	return out
}

// answerInVersions restates the results of the changes written under an
// older schema version (versions, as WithVersions) in that version's
// terms. The store compares a translated change with the record as
// stored, in current names and in whatever shape the record was written
// in: a newer value held under a field's old name (a record written
// before the migration) goes unseen, and the fields it reports lost are
// named as the writer never named them. So each such change is compared
// instead with its record read after the apply and translated to the
// writer's version, as the writer's next pull will show it: Lost names
// the writer's fields whose values that record does not hold, and a
// change none of whose fields the record holds is superseded, not
// applied. Fields the migration drops are nobody's loss and are not
// named. A write landing between the apply and the read counts as one
// that beat the change, which is how the writer's pull will see it.
//
// translated and index are translateChanges's: each change admitted, in
// the current version, and its index in changes.
func (e *Engine) answerInVersions(ctx context.Context, translated []crdt.Change, index []int, versions map[string]int, results []Result) error {
	var keys []recordKey
	var which []int // into translated
	for j, c := range translated {
		d := e.Migrations(c.Collection)
		from := versions[c.Collection]
		if d == nil || from == 0 || from == d.Current() || results[index[j]].Status == StatusRefused {
			continue
		}
		keys, which = append(keys, recordKey{c.Collection, c.Record.ID}), append(which, j)
	}
	if len(keys) == 0 {
		return nil
	}
	stored, err := readRecords(ctx, keys, func(ctx context.Context, k recordKey) (crdt.Record, error) {
		return e.held(ctx, "apply", k.collection, k.id)
	})
	if err != nil {
		return err
	}
	for k, j := range which {
		c := translated[j]
		d := e.Migrations(c.Collection)
		from, cur := versions[c.Collection], d.Current()
		// The change as the writer will read it back: its fields that
		// survive the migration there and back, in its own names.
		mine, _, err := d.Record(c.Record, cur, from)
		if err != nil {
			return fmt.Errorf("apply %s/%s: %w", c.Collection, c.Record.ID, err)
		}
		view, _, err := d.Record(e.resolve(d, stored[k]), cur, from)
		if err != nil {
			return fmt.Errorf("apply %s/%s: %w", c.Collection, c.Record.ID, err)
		}
		lost := crdt.LostFields(mine, view)
		r := &results[index[j]]
		switch {
		case r.Status == StatusApplied && len(lost) == len(mine.Fields) && len(lost) > 0 && c.Record.Deleted.IsZero(),
			r.Status == StatusDuplicate && len(lost) > 0:
			r.Status = StatusSuperseded
		case r.Status == StatusSuperseded && len(lost) == 0:
			r.Status = StatusDuplicate
		}
		r.Lost = lost
	}
	return nil
}
