package bolt

import (
	"context"
	"fmt"
	"math"

	bbolt "go.etcd.io/bbolt"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// maxGroupChanges bounds the changes one transaction takes from queued
// batches, so a transaction stays short under a flood of writers.
const maxGroupChanges = 8 * stores.MaxBatch

// request is one Apply call waiting for the commit loop.
type request struct {
	ctx     context.Context
	changes []crdt.Change
	results []stores.Result
	err     error
	done    chan struct{} // closed when results or err are set
}

// Apply implements stores.Store. It returns once the transaction holding
// the changes has committed (and, unless Options.NoSync, reached the disk).
// If ctx ends first Apply returns its error, and the changes may or may not
// commit: Apply is idempotent, so the caller retries.
func (s *Store) Apply(ctx context.Context, changes []crdt.Change) ([]stores.Result, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("apply: %w", err)
	}
	if err := stores.CheckApply(changes); err != nil {
		return nil, err
	}
	if s.closed.Load() {
		return nil, stores.ErrClosed
	}
	if len(changes) == 0 {
		return []stores.Result{}, nil
	}
	r := &request{ctx: ctx, changes: changes, done: make(chan struct{})}
	select {
	case s.requests <- r:
	case <-s.quit:
		return nil, stores.ErrClosed
	case <-ctx.Done():
		return nil, fmt.Errorf("apply: %w", ctx.Err())
	}
	select {
	case <-r.done:
		if r.err != nil {
			return nil, fmt.Errorf("apply: %w", r.err)
		}
		return r.results, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("apply: %w", ctx.Err())
	}
}

// commitLoop owns the writes: it takes the batches queued while the last
// transaction committed and commits them together.
func (s *Store) commitLoop() {
	defer close(s.stopped)
	for {
		var first *request
		select {
		case first = <-s.requests:
		case <-s.quit:
			return
		}
		group, n := []*request{first}, len(first.changes)
	gather:
		for n < s.groupChanges {
			select {
			case r := <-s.requests:
				group = append(group, r)
				n += len(r.changes)
			default:
				break gather
			}
		}
		s.commit(group)
		s.noteSeen()
	}
}

// commit merges every request of group into one transaction, commits it,
// answers the requests and notifies watchers.
func (s *Store) commit(group []*request) {
	var w *writer
	gen, epoch := s.gen, s.genEpoch
	err := recovered(func() error {
		return s.db.Update(func(tx *bbolt.Tx) error {
			w = newWriter(tx)
			for _, r := range group {
				if err := r.ctx.Err(); err != nil {
					r.err = err // the caller has gone: leave its batch out
					continue
				}
				r.results, r.err = w.apply(r.changes)
			}
			if err := w.flush(); err != nil || len(w.heads) == 0 {
				return err
			}
			var err error
			if gen, err = raiseGen(tx); err != nil {
				return err
			}
			epoch, err = readStoreEpoch(tx)
			return err
		})
	})
	if err != nil {
		s.log.Error("commit failed", "batches", len(group), "err", err)
	}
	for _, r := range group {
		if err != nil && r.err == nil {
			r.results, r.err = nil, fmt.Errorf("commit: %w", err)
		}
		close(r.done)
	}
	if err == nil {
		s.gen, s.genEpoch = gen, epoch
		for coll, head := range w.heads {
			s.watchers.Notify(stores.Notification{Collection: coll, Seq: head})
		}
	}
}

type recordKey struct{ coll, id string }

// staged is a record as merged so far in a transaction.
type staged struct {
	rec     crdt.Record
	seq     uint64 // its sequence number now
	fileSeq uint64 // its sequence number in the file, 0 if none
}

// writer merges batches inside one write transaction. Each batch is merged
// into copies and kept only when all of it succeeds, so a refused batch
// leaves nothing behind.
type writer struct {
	tx    *bbolt.Tx
	recs  map[recordKey]*staged // records changed by the kept batches
	heads map[string]uint64     // heads moved by the kept batches
}

func newWriter(tx *bbolt.Tx) *writer {
	return &writer{tx: tx, recs: map[recordKey]*staged{}, heads: map[string]uint64{}}
}

// load returns a copy of the record's state as of the kept batches.
func (w *writer) load(k recordKey) (*staged, error) {
	if st := w.recs[k]; st != nil {
		cp := *st
		cp.rec = st.rec.Clone()
		return &cp, nil
	}
	st := &staged{rec: crdt.Record{ID: k.id}}
	if b := w.tx.Bucket(recordsBucket(k.coll)); b != nil {
		if raw := b.Get([]byte(k.id)); raw != nil {
			e, err := decodeEntry(raw, k.id)
			if err != nil {
				return nil, fmt.Errorf("%s/%s: %w", k.coll, k.id, err)
			}
			st.rec, st.seq, st.fileSeq = e.Record, e.Seq, e.Seq
		}
	}
	return st, nil
}

func (w *writer) head(coll string) (uint64, error) {
	if h, ok := w.heads[coll]; ok {
		return h, nil
	}
	return readHead(w.tx, coll)
}

// apply merges one batch in order. On error the writer is unchanged.
func (w *writer) apply(changes []crdt.Change) ([]stores.Result, error) {
	local := map[recordKey]*staged{}
	heads := map[string]uint64{}
	results := make([]stores.Result, len(changes))
	for i, ch := range changes {
		k := recordKey{ch.Collection, ch.Record.ID}
		st := local[k]
		if st == nil {
			var err error
			if st, err = w.load(k); err != nil {
				return nil, err
			}
			local[k] = st
		}
		changed := st.rec.Merge(ch.Record)
		lost := crdt.LostFields(ch.Record, st.rec)
		if !changed {
			results[i] = stores.Result{Seq: st.seq, Lost: lost}
			continue
		}
		if err := stores.CheckRecordLimits(st.rec); err != nil {
			return nil, fmt.Errorf("%s/%s: %w", k.coll, k.id, err)
		}
		h, ok := heads[k.coll]
		if !ok {
			var err error
			if h, err = w.head(k.coll); err != nil {
				return nil, err
			}
		}
		if h == math.MaxUint64 {
			return nil, fmt.Errorf("%s: %w: sequence numbers exhausted", k.coll, stores.ErrTooLarge)
		}
		h++
		heads[k.coll] = h
		st.seq = h
		results[i] = stores.Result{Changed: true, Seq: h, Lost: lost}
	}
	for k, st := range local {
		if st.seq != st.fileSeq || w.recs[k] != nil {
			w.recs[k] = st
		}
	}
	for c, h := range heads {
		w.heads[c] = h
	}
	return results, nil
}

// flush writes the records, log entries and heads of the kept batches.
func (w *writer) flush() error {
	type buckets struct{ recs, log *bbolt.Bucket }
	bs := map[string]buckets{}
	usage := map[string]*stores.Usage{}
	for k, st := range w.recs {
		if st.seq == st.fileSeq {
			continue
		}
		b, ok := bs[k.coll]
		if !ok {
			var err error
			if b.recs, err = w.tx.CreateBucketIfNotExists(recordsBucket(k.coll)); err != nil {
				return fmt.Errorf("records of %s: %w", k.coll, err)
			}
			if b.log, err = w.tx.CreateBucketIfNotExists(logBucket(k.coll)); err != nil {
				return fmt.Errorf("log of %s: %w", k.coll, err)
			}
			bs[k.coll] = b
		}
		u := usage[k.coll]
		if u == nil {
			cur, err := readUsage(w.tx, k.coll)
			if err != nil {
				return fmt.Errorf("usage of %s: %w", k.coll, err)
			}
			u = &cur
			usage[k.coll] = u
		}
		if old := b.recs.Get([]byte(k.id)); old != nil {
			u.Bytes -= int64(len(old) - 8)
		} else {
			u.Records++
		}
		entry := encodeEntry(st.seq, st.rec)
		u.Bytes += int64(len(entry) - 8)
		if err := b.recs.Put([]byte(k.id), entry); err != nil {
			return fmt.Errorf("put %s/%s: %w", k.coll, k.id, err)
		}
		if st.fileSeq != 0 {
			if err := b.log.Delete(seqKey(st.fileSeq)); err != nil {
				return fmt.Errorf("compact log of %s: %w", k.coll, err)
			}
		}
		if err := b.log.Put(seqKey(st.seq), []byte(k.id)); err != nil {
			return fmt.Errorf("log %s/%s: %w", k.coll, k.id, err)
		}
	}
	for c, u := range usage {
		if err := writeUsage(w.tx, c, *u); err != nil {
			return fmt.Errorf("usage of %s: %w", c, err)
		}
	}
	heads := w.tx.Bucket(headsBucket)
	if heads == nil {
		return fmt.Errorf("%w: heads bucket missing", ErrCorrupt)
	}
	for c, h := range w.heads {
		if err := heads.Put([]byte(c), seqKey(h)); err != nil {
			return fmt.Errorf("head of %s: %w", c, err)
		}
	}
	return nil
}
