package engine

import (
	"context"
	"errors"
	"fmt"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// ErrQuotaExceeded refuses a change that would add data to a collection
// at or over its quota (Config.Quotas). Deletes and unsets are still
// accepted, so a tenant can always make room, and so is a change that
// alters nothing (a retry of one applied): pushes stay idempotent.
var ErrQuotaExceeded = errors.New("engine: collection quota exceeded")

// Quota bounds what the collections a pattern matches may hold, each on its
// own: records (tombstones included) and the bytes of their encoded
// records. A zero bound is no bound. The first quota whose pattern matches
// a collection applies to it.
type Quota struct {
	// Pattern is a collection pattern (crdt.MatchPattern): "tenant42.*".
	Pattern    string
	MaxRecords int64
	MaxBytes   int64
}

// quotaOf returns the quota of collection, if any.
func (e *Engine) quotaOf(collection string) (Quota, bool) {
	for _, q := range e.quotas {
		if crdt.MatchPattern(q.Pattern, collection) {
			return q, true
		}
	}
	return Quota{}, false
}

// checkQuotas refuses the admitted changes that would add data to a
// collection at or over its quota. Usage is read once per collection per
// call, before the batch: concurrent writers can overshoot a quota by what
// they apply at once (at most stores.MaxBatch changes each), never more.
// A change that sets a value in a full collection is refused unless its
// record holds it already (or newer writes beat it): a retry of a push
// whose answer was lost comes back duplicate, as at any other time.
func (e *Engine) checkQuotas(ctx context.Context, changes []crdt.Change, index []int, results []Result) ([]crdt.Change, []int, error) {
	if len(e.quotas) == 0 {
		return changes, index, nil
	}
	full := map[string]error{}
	keep, keepIndex := changes[:0:0], index[:0:0]
	for j, c := range changes {
		err, seen := full[c.Collection]
		if !seen {
			if q, ok := e.quotaOf(c.Collection); ok {
				u, uerr := e.usager.Usage(ctx, c.Collection)
				if uerr != nil {
					return nil, nil, fmt.Errorf("usage of %s: %w", c.Collection, uerr)
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
		if err != nil && addsData(c.Record) {
			cur, rerr := e.current(ctx, "quota", c.Collection, c.Record.ID)
			if rerr != nil {
				return nil, nil, rerr
			}
			if _, changed := crdt.Merge(cur, c.Record); changed {
				results[index[j]] = Result{Status: StatusRefused, Err: fmt.Errorf("change %s/%s: %w", c.Collection, c.Record.ID, err)}
				continue
			}
		}
		keep, keepIndex = append(keep, c), append(keepIndex, index[j])
	}
	return keep, keepIndex, nil
}

// addsData reports whether a change sets a value: deletes and unsets only
// make room.
func addsData(r crdt.Record) bool {
	for _, f := range r.Fields {
		if f.Value != nil {
			return true
		}
	}
	return false
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
		if q.MaxRecords < 0 || q.MaxBytes < 0 {
			return nil, fmt.Errorf("quota %s: negative bound", q.Pattern)
		}
	}
	u, ok := s.(stores.Usager)
	if !ok {
		return nil, fmt.Errorf("quotas need a store that keeps usage (stores.Usager); %T does not", s)
	}
	return u, nil
}
