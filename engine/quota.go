package engine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/crdt/migrate"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/transport/proto"
)

// ErrQuotaExceeded refuses a change that would add data to a collection
// at or over its quota (Config.Quotas): a value, or a tombstone the
// collection does not hold (makesRoom). Deletes of existing records and
// unsets of their fields are still accepted, so a tenant can always make
// room, and so is a change that alters nothing (a retry of one applied):
// pushes stay idempotent.
var ErrQuotaExceeded = errors.New("engine: collection quota exceeded")

// Quota bounds what the collections a pattern matches may hold, each on its
// own: records (tombstones included) and the bytes of their encoded
// records; and how many of them hold records, together. A zero bound is no
// bound. The first quota whose pattern matches a collection applies to
// it; the server's own collections (proto.Reserved) have none.
type Quota struct {
	// Pattern is a collection pattern (crdt.MatchPattern): "tenant42.*".
	Pattern    string
	MaxRecords int64
	MaxBytes   int64
	// MaxCollections bounds the collections Pattern matches that hold
	// records, tombstones included: a token allowed a wildcard pattern
	// could otherwise spread data over any number of collections, each
	// within MaxRecords and MaxBytes. A collection is counted at its first
	// change, a delete or an unset as well as a value (one that held
	// records before the bound was set is counted, never refused), in a
	// collection of the store's own (countedCollection),
	// so every instance counts the same ones; a counted collection stays
	// counted. A change the rules refuse counts none. Concurrent writers
	// can overshoot it by the new collections they write at once.
	MaxCollections int64
}

// quotaOf returns the quota of collection, if any.
func (e *Engine) quotaOf(collection string) (Quota, bool) {
	if proto.Reserved(collection) {
		return Quota{}, false // the server's leases and horizons are never refused
	}
	for _, q := range e.quotas {
		if crdt.MatchPattern(q.Pattern, collection) {
			return q, true
		}
	}
	return Quota{}, false
}

// checkQuotas refuses the admitted changes that would add data (a value,
// or a tombstone: makesRoom) to a collection at or over its quota. Usage is read once per collection per
// call, before the batch: concurrent writers can overshoot a quota by what
// they apply at once (at most stores.MaxBatch changes each), never more.
// A change that sets a value in a full collection, or adds a tombstone to
// it, is refused unless its record holds it already (or newer writes beat it): a retry of a push
// whose answer was lost comes back duplicate, as at any other time.
//
// A record outside the writer's write scope (cfg) decides nothing here:
// whether a change would alter it tells which fields it has and how new
// they are, so every change to it passes on to checkRules, which refuses
// it out of scope.
//
// It returns too the collections to count (Quota.MaxCollections) whose
// changes it kept, by their quota: countCollections counts those that
// still have a change adding data once the rules have judged them.
func (e *Engine) checkQuotas(ctx context.Context, changes []crdt.Change, index []int, results []Result, cfg applyConfig) (_ []crdt.Change, _ []int, toCount map[string]Quota, _ error) {
	if len(e.quotas) == 0 {
		return changes, index, nil, nil
	}
	full, uncounted := map[string]error{}, map[string]error{}
	keep, keepIndex := changes[:0:0], index[:0:0]
	for j, c := range changes {
		q, hasQuota := e.quotaOf(c.Collection)
		err, seen := full[c.Collection]
		if !seen {
			if hasQuota {
				u, uerr := e.usager.Usage(ctx, c.Collection)
				if uerr != nil {
					return nil, nil, nil, fmt.Errorf("usage of %s: %w", c.Collection, uerr)
				}
				switch {
				case q.MaxRecords > 0 && u.Records >= q.MaxRecords:
					err = fmt.Errorf("%w: %s holds %d records, its quota is %d", ErrQuotaExceeded, c.Collection, u.Records, q.MaxRecords)
				case q.MaxBytes > 0 && u.Bytes >= q.MaxBytes:
					err = fmt.Errorf("%w: %s holds %d bytes, its quota is %d", ErrQuotaExceeded, c.Collection, u.Bytes, q.MaxBytes)
				}
			}
			full[c.Collection] = err
		}
		if err != nil {
			cur, rerr := e.current(ctx, "quota", c.Collection, c.Record.ID)
			if rerr != nil {
				return nil, nil, nil, rerr
			}
			merged, changed := crdt.Merge(cur, c.Record)
			if changed && (addsData(c.Record) || !makesRoom(cur, merged)) && !outsideWriteScope(cfg, e.Migrations(c.Collection), c.Collection, cur) {
				results[index[j]] = Result{Status: StatusRefused, Err: fmt.Errorf("change %s/%s: %w", c.Collection, c.Record.ID, err)}
				continue
			}
		}
		if hasQuota && q.MaxCollections > 0 && writes(c.Record) {
			cerr, seen := uncounted[c.Collection]
			if !seen {
				var count bool
				var ioErr error
				pending := int64(0) // counted by this call, not yet written
				for _, p := range toCount {
					if p.Pattern == q.Pattern {
						pending++
					}
				}
				if count, cerr, ioErr = e.countRefusal(ctx, q, c.Collection, pending); ioErr != nil {
					return nil, nil, nil, ioErr
				}
				uncounted[c.Collection] = cerr
				if count && cerr == nil {
					if toCount == nil {
						toCount = map[string]Quota{}
					}
					toCount[c.Collection] = q
				}
			}
			if cerr != nil {
				results[index[j]] = Result{Status: StatusRefused, Err: fmt.Errorf("change %s/%s: %w", c.Collection, c.Record.ID, cerr)}
				continue
			}
		}
		keep, keepIndex = append(keep, c), append(keepIndex, index[j])
	}
	return keep, keepIndex, toCount, nil
}

// countCollections counts, in the collection of its quota's own
// (countedCollection), each collection of toCount that one of the
// changes about to be applied writes to. checkQuotas chose them
// before the rules judged their changes; one whose changes the rules all
// refused holds no data for them, and is not counted. It is counted
// before the data is written, so a failure between the two leaves a
// collection counted that holds none, never one holding data uncounted.
func (e *Engine) countCollections(ctx context.Context, toCount map[string]Quota, changes []crdt.Change) error {
	for _, c := range changes {
		q, ok := toCount[c.Collection]
		if !ok || !writes(c.Record) {
			continue
		}
		delete(toCount, c.Collection)
		cc := countedCollection(q.Pattern)
		st, err := e.Now(cc)
		if err != nil {
			return err
		}
		v, _ := crdt.EncodeValue(st.Wall)
		if err := e.applyOne(ctx, "count collection", crdt.Change{Collection: cc, Record: crdt.SetField(c.Collection, "at", v, st)}); err != nil {
			return err
		}
		e.noteCounted(c.Collection)
	}
	return nil
}

// countedCollection is the collection of the store's own that counts the
// collections quota pattern matches that hold records (Quota.MaxCollections).
func countedCollection(pattern string) string {
	sum := sha256.Sum256([]byte(pattern))
	return proto.CountedPrefix + hex.EncodeToString(sum[:12])
}

// maxCounted bounds Engine.counted, the collections known counted.
const maxCounted = 1 << 14

// countRefusal says whether collection is to be counted under q
// (Quota.MaxCollections): count when it is not counted yet, and the
// refusal (ErrQuotaExceeded) of a change to it when q's
// collections are at their bound and it holds none; ioErr when the store
// failed. pending is how many more this call counts already, not yet
// written. countCollections counts it.
func (e *Engine) countRefusal(ctx context.Context, q Quota, collection string, pending int64) (count bool, refusal, ioErr error) {
	e.countedMu.Lock()
	known := e.counted[collection]
	e.countedMu.Unlock()
	if known {
		return false, nil, nil
	}
	cc := countedCollection(q.Pattern)
	switch _, err := e.store.Get(ctx, cc, collection); {
	case err == nil:
		e.noteCounted(collection)
		return false, nil, nil
	case !errors.Is(err, stores.ErrNotFound):
		return false, nil, fmt.Errorf("whether %s is counted under %s: %w", collection, q.Pattern, err)
	}
	n, err := e.usager.Usage(ctx, cc)
	if err != nil {
		return false, nil, fmt.Errorf("collections counted under %s: %w", q.Pattern, err)
	}
	if n.Records+pending >= q.MaxCollections {
		// One that holds data already (written before the bound) is
		// counted: the bound keeps new ones out, it loses nothing.
		own, err := e.usager.Usage(ctx, collection)
		if err != nil {
			return false, nil, fmt.Errorf("usage of %s: %w", collection, err)
		}
		if own.Records == 0 {
			return false, fmt.Errorf("%w: %d collections matching %s hold records, its quota is %d", ErrQuotaExceeded, n.Records+pending, q.Pattern, q.MaxCollections), nil
		}
	}
	return true, nil, nil
}

// noteCounted remembers that collection is counted.
func (e *Engine) noteCounted(collection string) {
	e.countedMu.Lock()
	defer e.countedMu.Unlock()
	if e.counted == nil || len(e.counted) >= maxCounted {
		e.counted = map[string]bool{}
	}
	e.counted[collection] = true
}

// outsideWriteScope reports whether stored record r of collection is one
// checkRules refuses every change to: it exists outside the write scope of
// cfg, or that scope cannot be had. d is the collection's migrations.
func outsideWriteScope(cfg applyConfig, d *migrate.Definition, collection string, r crdt.Record) bool {
	if cfg.writeScope == nil {
		return false
	}
	w, err := cfg.writeScope(collection)
	if err != nil {
		return true
	}
	return w != nil && r.Exists() && !w.Match(withDefaults(d, r))
}

// outOfScope returns the refusal checkRules gives every change to held
// record r of collection (raw: in the shapes it was written in) when r
// exists outside the write scope of cfg, or that scope cannot be had; nil
// otherwise. d is the collection's migrations.
func outOfScope(cfg applyConfig, d *migrate.Definition, collection string, r crdt.Record) error {
	if cfg.writeScope == nil {
		return nil
	}
	w, err := cfg.writeScope(collection)
	if err != nil {
		return err
	}
	if before, _ := resolved(d, r); w != nil && before.Exists() && !w.Match(withDefaults(d, before)) {
		return fmt.Errorf("%w: the record is outside the write scope %s", ErrOutOfScope, scopeText(w))
	}
	return nil
}

// addsData reports whether a change sets a value.
func addsData(r crdt.Record) bool {
	for _, f := range r.Fields {
		if f.Value != nil {
			return true
		}
	}
	return false
}

// makesRoom reports whether merged, what a change of deletes and unsets
// leaves of cur (the record as held), only replaces what cur holds: cur
// exists and merged has no field cur has not. A delete of a record not
// held (or held deleted) or an unset of a field its record lacks adds a
// record or a field of tombstones: at the quota it is refused, or a
// writer could grow a collection without end with ids and field names
// it makes up. A record that does not exist is refused so whether or not
// it is held deleted, which tells a writer no more than a change below
// the quota does.
func makesRoom(cur, merged crdt.Record) bool {
	if !cur.Exists() {
		return false
	}
	for name := range merged.Fields {
		if _, ok := cur.Fields[name]; !ok {
			return false
		}
	}
	return true
}

// writes reports whether a change leaves its record held: any change but
// an empty one. A delete or an unset holds a tombstone, and a collection
// of tombstones alone counts under Quota.MaxCollections as one that holds
// data does.
func writes(r crdt.Record) bool {
	return !r.Deleted.IsZero() || len(r.Fields) > 0
}

// validateQuotas checks quotas against the store at Open.
func validateQuotas(qs []Quota, s stores.Store) (stores.Usager, error) {
	if len(qs) == 0 {
		return nil, nil
	}
	for _, q := range qs {
		if err := crdt.ValidatePattern(q.Pattern); err != nil {
			return nil, fmt.Errorf("quota: %w", err)
		}
		if q.MaxRecords < 0 || q.MaxBytes < 0 || q.MaxCollections < 0 {
			return nil, fmt.Errorf("quota %s: negative bound", q.Pattern)
		}
	}
	u, ok := s.(stores.Usager)
	if !ok {
		return nil, fmt.Errorf("quotas need a store that keeps usage (stores.Usager); %T does not", s)
	}
	return u, nil
}
