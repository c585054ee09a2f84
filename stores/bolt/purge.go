package bolt

import (
	"context"
	"errors"
	"fmt"

	bbolt "go.etcd.io/bbolt"
	bberrors "go.etcd.io/bbolt/errors"

	"github.com/convergo/convergo/stores"
)

var _ stores.Purger = (*Store)(nil)

// Purge implements stores.Purger in one write transaction per call (at
// most scan.Limit log entries): bbolt runs it between the commit loop's
// transactions, so each record is checked and purged atomically with
// respect to Apply, the usage bucket changes in the same commit, and the
// epoch (h.Epoch) is read in that transaction, where a bump cannot
// change it (bumps are write transactions too). A
// removed record's key and log entry are deleted; the pages they held
// return to bbolt's freelist for later writes (the file does not shrink;
// `bbolt compact` shrinks it offline).
func (s *Store) Purge(ctx context.Context, collection string, h stores.Horizon, scan stores.PurgeScan) (stores.PurgeResult, error) {
	if err := ctx.Err(); err != nil {
		return stores.PurgeResult{}, fmt.Errorf("purge %s: %w", collection, err)
	}
	after, limit, err := stores.CheckPurge(collection, h, scan, 1)
	if err != nil {
		return stores.PurgeResult{}, err
	}
	if s.closed.Load() {
		return stores.PurgeResult{}, stores.ErrClosed
	}
	var res stores.PurgeResult
	err = recovered(func() error {
		return s.db.Update(func(tx *bbolt.Tx) error {
			res = stores.PurgeResult{Next: []uint64{after[0]}}
			return purge(ctx, tx, collection, h, after[0], limit, &res)
		})
	})
	if errors.Is(err, bberrors.ErrDatabaseNotOpen) {
		return stores.PurgeResult{}, stores.ErrClosed
	}
	if err != nil {
		return stores.PurgeResult{}, fmt.Errorf("purge %s after %d: %w", collection, after[0], err)
	}
	return res, nil
}

func purge(ctx context.Context, tx *bbolt.Tx, collection string, h stores.Horizon, after uint64, limit int, res *stores.PurgeResult) error {
	store, err := readStoreEpoch(tx)
	if err != nil {
		return err
	}
	n, lost, err := readEpoch(tx, collection)
	if err != nil {
		return err
	}
	if err := stores.CheckEpoch(collection, h, stores.MetaOf(store, n, lost)); err != nil {
		return err
	}
	recs, logb := tx.Bucket(recordsBucket(collection)), tx.Bucket(logBucket(collection))
	if recs == nil || logb == nil || after >= h.Read[0] {
		return nil
	}
	type put struct {
		id    string
		entry []byte
	}
	var puts []put
	var gone [][2][]byte // log key, record id
	var freed, removed int64
	c := logb.Cursor()
	for k, v := c.Seek(seqKey(after + 1)); k != nil; k, v = c.Next() {
		seq, err := decodeSeq(k)
		if err != nil {
			return fmt.Errorf("log: %w", err)
		}
		if seq > h.Read[0] {
			break
		}
		if res.Scanned == limit {
			res.More = true
			break
		}
		if res.Scanned%64 == 63 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		res.Scanned++
		res.Next[0] = seq
		raw := recs.Get(v)
		if raw == nil {
			return fmt.Errorf("%w: log entry %d names record %q, which is missing", ErrCorrupt, seq, v)
		}
		e, err := decodeEntry(raw, string(v))
		if err != nil {
			return err
		}
		if e.Seq != seq {
			return fmt.Errorf("%w: log entry %d names record %q, which has sequence number %d", ErrCorrupt, seq, v, e.Seq)
		}
		out, deletes, fields := stores.PurgeRecord(e.Record, h)
		if deletes+fields == 0 {
			continue
		}
		res.Deletes += deletes
		res.Fields += fields
		size := int64(len(raw) - 8)
		if stores.Empty(out) {
			gone = append(gone, [2][]byte{seqKey(seq), []byte(string(v))})
			freed += size
			removed++
			continue
		}
		entry := encodeEntry(seq, out)
		freed += size - int64(len(entry)-8)
		puts = append(puts, put{string(v), entry})
	}
	if len(puts)+len(gone) == 0 {
		return nil
	}
	// Written after the walk: changing a bucket under its cursor moves it.
	for _, p := range puts {
		if err := recs.Put([]byte(p.id), p.entry); err != nil {
			return fmt.Errorf("put %s/%s: %w", collection, p.id, err)
		}
	}
	for _, g := range gone {
		if err := logb.Delete(g[0]); err != nil {
			return fmt.Errorf("log of %s: %w", collection, err)
		}
		if err := recs.Delete(g[1]); err != nil {
			return fmt.Errorf("delete %s/%s: %w", collection, g[1], err)
		}
	}
	u, err := readUsage(tx, collection)
	if err != nil {
		return fmt.Errorf("usage of %s: %w", collection, err)
	}
	// readUsage counts a collection without stored usage from the records
	// as they are now, after the deletes above: then it is already right.
	if b := tx.Bucket(usageBucket); b != nil && b.Get([]byte(collection)) != nil {
		u.Records -= removed
		u.Bytes -= freed
	}
	if err := writeUsage(tx, collection, u); err != nil {
		return fmt.Errorf("usage of %s: %w", collection, err)
	}
	res.Records += int(removed)
	res.Bytes += freed
	return nil
}
