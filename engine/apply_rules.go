package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/crdt/migrate"
	"github.com/convergo/convergo/crdt/scope"
	"github.com/convergo/convergo/stores"
)

// An ApplyOption changes how one Apply call admits its changes.
type ApplyOption func(*applyConfig)

type applyConfig struct {
	writeScope func(collection string) (*scope.Pred, error)
	versions   map[string]int
	held       bool
}

// WithHeld says an Apply call's changes are records the server held and
// gives back (a restore, whose seals prove it): their stamps are admitted
// as stored records' are, with logical counters up to crdt.MaxLogical,
// where a pushed stamp's stop at crdt.MaxIssuedLogical (docs/protocol.md,
// section 3). The clock observes them like any (it carries a counter past
// crdt.MaxIssuedLogical into its wall part).
func WithHeld() ApplyOption {
	return func(c *applyConfig) { c.held = true }
}

// WithWriteScope holds an Apply call's changes to a write scope (an
// option of the call, not of the engine, because each principal's pushes
// have their own): f
// returns the bound effective write scope of a collection (nil: none),
// and an error from it refuses that collection's changes. It is called
// once per collection per call. A change is refused with ErrOutOfScope
// when the stored record exists and the scope does not match it (a
// record outside may not be changed), or when the record it would leave
// exists and the scope does not match that (a create outside, a move
// out); a delete of a record inside passes. The transport passes the
// principal's scope here (docs/design.md, "Write rules").
func WithWriteScope(f func(collection string) (*scope.Pred, error)) ApplyOption {
	return func(c *applyConfig) { c.writeScope = f }
}

// oncePerCollection wraps a write scope function so that it is called
// once per collection (WithWriteScope promises it), however many of the
// call's checks ask.
func oncePerCollection(f func(collection string) (*scope.Pred, error)) func(string) (*scope.Pred, error) {
	type answer struct {
		p   *scope.Pred
		err error
	}
	seen := map[string]answer{}
	return func(collection string) (*scope.Pred, error) {
		a, ok := seen[collection]
		if !ok {
			a.p, a.err = f(collection)
			seen[collection] = a
		}
		return a.p, a.err
	}
}

// maxRuleReads bounds the stored records checkRules reads at once.
const maxRuleReads = 16

// colRules is what checkRules holds a collection's changes to.
type colRules struct {
	write  *scope.Pred
	err    error // the write scope could not be had: refuse
	checks []Rule
	mig    *migrate.Definition // the records are read in its current version, with its defaults
}

func (r *colRules) active() bool {
	return r.write != nil || len(r.checks) > 0 || (r.mig != nil && r.mig.Current() > 1)
}

// readRecords reads the records of keys with read, maxRuleReads at a
// time.
func readRecords(ctx context.Context, keys []recordKey, read func(context.Context, recordKey) (crdt.Record, error)) ([]crdt.Record, error) {
	stored := make([]crdt.Record, len(keys))
	errs := make([]error, len(keys))
	if len(keys) == 1 {
		stored[0], errs[0] = read(ctx, keys[0])
	} else {
		var wg sync.WaitGroup
		sem := make(chan struct{}, maxRuleReads)
		for i, k := range keys {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				stored[i], errs[i] = read(ctx, k)
			}()
		}
		wg.Wait()
	}
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return stored, nil
}

// checkRules refuses the admitted changes that the collection's rules
// refuse (see Apply): it reads each record that a rule applies to once,
// merges the call's changes to it in order into a copy, and checks the
// write scope before and after each merge and the schema and validation
// functions after. Changes no rule applies to cost nothing. Refused
// changes do not count toward later ones of the same record.
//
// A change refused on a record an earlier change of the call left is
// refused only as long as that earlier change lands: it stays in the
// changes returned, its refusal in results, marked in run.tentative, and
// the store's part (applyStored) sends it nowhere unless a change of its
// record is refused there, when it is judged again with the others.
//
// The check and the store's merge are two steps: a change another writer
// makes in between is not seen (see the package doc, "Rules").
func (e *Engine) checkRules(ctx context.Context, run *applyRun, changes []crdt.Change, index []int, results []Result) ([]crdt.Change, []int, error) {
	cfg := run.cfg
	for _, i := range index {
		delete(run.tentative, i) // judged now, again
	}
	if len(e.rules) == 0 && cfg.writeScope == nil {
		return changes, index, nil
	}
	per := map[string]*colRules{}
	var need []recordKey
	seen := map[recordKey]bool{}
	refuse := false // a collection's write scope could not be had
	for _, c := range changes {
		cr, ok := per[c.Collection]
		if !ok {
			cr = &colRules{}
			if cfg.writeScope != nil {
				cr.write, cr.err = cfg.writeScope(c.Collection)
			}
			for _, r := range e.RulesFor(c.Collection) {
				if r.Schema != nil || r.Validate != nil {
					cr.checks = append(cr.checks, r)
				}
			}
			cr.mig = e.Migrations(c.Collection)
			per[c.Collection] = cr
			refuse = refuse || cr.err != nil
		}
		k := recordKey{c.Collection, c.Record.ID}
		if cr.err == nil && cr.active() && !seen[k] {
			seen[k] = true
			need = append(need, k)
		}
	}
	if len(need) == 0 && !refuse {
		return changes, index, nil
	}
	// The records as the store holds them, in the shapes they were written
	// in: each change merges into that, as the store will merge it, and
	// what readers see is that merge resolved (check).
	stored, err := readRecords(ctx, need, func(ctx context.Context, k recordKey) (crdt.Record, error) {
		if err := stores.CheckKey(k.collection, k.id); err != nil {
			return crdt.Record{}, fmt.Errorf("check %s/%s: %w", k.collection, k.id, err)
		}
		return e.held(ctx, "check", k.collection, k.id)
	})
	if err != nil {
		return nil, nil, err
	}
	cur := make(map[recordKey]crdt.Record, len(need))
	for i, k := range need {
		cur[k] = stored[i]
	}
	keep, keepIndex := changes[:0:0], index[:0:0]
	var after map[recordKey]bool // records a change of the call was merged into
	for j, c := range changes {
		cr := per[c.Collection]
		k := recordKey{c.Collection, c.Record.ID}
		var err error
		switch {
		case cr.err != nil:
			err = cr.err
		case cr.active():
			var merged crdt.Record
			if merged, err = cr.check(ctx, c.Collection, cur[k], c.Record); err == nil {
				cur[k] = merged
				if after == nil {
					after = map[recordKey]bool{}
				}
				after[k] = true
			}
		}
		if err != nil {
			results[index[j]] = Result{Status: StatusRefused, Err: fmt.Errorf("change %s/%s: %w", c.Collection, c.Record.ID, err)}
			if cr.err != nil || !after[k] {
				continue
			}
			if run.tentative == nil {
				run.tentative = map[int]bool{}
			}
			run.tentative[index[j]] = true
		}
		keep, keepIndex = append(keep, c), append(keepIndex, index[j])
	}
	return keep, keepIndex, nil
}

// check holds one change to the rules, against the record as stored (or
// as the call's earlier changes leave it), held: in the shapes it was
// written in. It returns the held record merged with the change.
func (cr *colRules) check(ctx context.Context, collection string, held, change crdt.Record) (crdt.Record, error) {
	before, _ := resolved(cr.mig, held)
	if cr.write != nil && before.Exists() && !cr.write.Match(withDefaults(cr.mig, before)) {
		return crdt.Record{}, fmt.Errorf("%w: the record is outside the write scope %s", ErrOutOfScope, scopeText(cr.write))
	}
	// Judged as readers will see it: the store merges the change into the
	// record as held, and readers read that resolved to the current
	// version, so a change in the current version that carries a field of
	// an older shape (a title stamped after the name becomes the name), or
	// a part of a merge whose other part the store holds, is judged with
	// what resolving makes of it.
	mergedHeld, _ := crdt.Merge(held, change)
	merged, _ := resolved(cr.mig, mergedHeld)
	// A change that only takes data away (unsets, a delete) is refused
	// only when it is what takes the record past the limits: one stored
	// before a version that serves it over them existed can still be
	// emptied, as at a full quota.
	if err := fitsEveryVersion(cr.mig, merged); err != nil && (addsData(change) || fitsEveryVersion(cr.mig, before) == nil) {
		return crdt.Record{}, err
	}
	if !merged.Exists() {
		return mergedHeld, nil // a delete, or an unset of every field
	}
	seen := withDefaults(cr.mig, merged)
	if cr.write != nil && !cr.write.Match(seen) {
		return crdt.Record{}, fmt.Errorf("%w: the change would leave the record outside the write scope %s", ErrOutOfScope, scopeText(cr.write))
	}
	for _, r := range cr.checks {
		if r.Schema != nil {
			if err := r.Schema.Check(seen); err != nil {
				return crdt.Record{}, fmt.Errorf("rule %s: %w", r.Pattern, err)
			}
		}
		if r.Validate != nil {
			if err := r.Validate(ctx, collection, seen); err != nil {
				if !errors.Is(err, ErrSchema) {
					err = fmt.Errorf("%w: %w", ErrSchema, err)
				}
				return crdt.Record{}, fmt.Errorf("rule %s: %w", r.Pattern, err)
			}
		}
	}
	return mergedHeld, nil
}

// fitsEveryVersion refuses, with ErrTooLarge, a record (in the current
// version of d) that some version's readers would be served beyond the
// model limits: a translation may join parts into one value (a merge, a
// split served back), cut one into many fields or lengthen names, and a
// reader's decoder refuses a value over crdt.MaxValueBytes or a record
// over stores.CheckRecordLimits, so one such record would stop every
// reader of that version (docs/protocol.md, section 13). The stored shape
// itself is the store's to check.
func fitsEveryVersion(d *migrate.Definition, r crdt.Record) error {
	if d == nil || d.Current() == 1 {
		return nil
	}
	for v := d.Current(); v >= 1; v-- {
		if v < d.Current() {
			var err error
			if r, _, err = d.Record(r, v+1, v); err != nil {
				return err
			}
		}
		if err := fitsLimits(r); err != nil {
			return fmt.Errorf("served at schema version %d: %w", v, err)
		}
	}
	return nil
}

// fitsLimits checks r against the model limits a reader decodes with.
func fitsLimits(r crdt.Record) error {
	for name, f := range r.Fields {
		if len(f.Value) > crdt.MaxValueBytes {
			return fmt.Errorf("%w: field %q would be %d bytes, more than %d", ErrTooLarge, name, len(f.Value), crdt.MaxValueBytes)
		}
	}
	return stores.CheckRecordLimits(r)
}

// scopeText is a scope's text form for a message, cut short.
func scopeText(p *scope.Pred) string {
	const max = 200
	s := p.String()
	if len(s) > max {
		s = s[:max] + "..."
	}
	return s
}
