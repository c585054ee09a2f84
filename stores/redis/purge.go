package redis

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strconv"

	goredis "github.com/redis/go-redis/v9"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

var _ stores.Purger = (*Store)(nil)

//go:embed purge.lua
var purgeSource string

var purgeScript = goredis.NewScript(withPrelude(purgeSource, sizeSource))

// Purge implements stores.Purger. Each call reads up to scan.Limit log
// entries at or below the read horizon (ZRANGE BYSCORE) and their records
// (HMGET), purges them in Go (stores.PurgeRecord, the one definition) and
// writes the records it changed with purge.lua, a compare-and-set per
// record: a record is written only if its blob is still the one read (and
// its seq, which the blob holds, so still at or below the horizon). A
// record that Apply changed in between is left as it is; it now sits
// after the read horizon. The collection's keys it writes and reads
// share its hash tag, so on a cluster the script runs on the
// collection's slot. Calls hold
// at most about 1 MiB of blobs each, so Redis is never blocked for long.
//
// The epoch (h.Epoch) is read first (Meta's reads: the store-wide
// counter and the collection's own) and checked; then the script checks,
// in the step that writes, that the collection's counter (its meta hash,
// in its slot) is still the value read, and on a single server the
// store-wide counter too. On a cluster the store-wide counter lives in
// the slot of {convergo}, which no script of the collection's slot may
// read: it is read again before each script call instead, and a
// BumpEpochs (a restore, a restart or failover that may have lost
// writes) that lands between that read and the script is not seen by
// this call (package doc, # Tombstone collection).
func (s *Store) Purge(ctx context.Context, collection string, h stores.Horizon, scan stores.PurgeScan) (stores.PurgeResult, error) {
	if err := s.begin(ctx); err != nil {
		return stores.PurgeResult{}, err
	}
	after, limit, err := stores.CheckPurge(collection, h, scan, 1)
	if err != nil {
		return stores.PurgeResult{}, err
	}
	var res stores.PurgeResult
	// The reads and scripts go to the node whose run was checked, not on
	// through a redirect: a node that took the slot over unchecked may
	// hold another history of the collection under the same epoch (on a
	// cluster a failover's new epoch is kept in the store-wide counter,
	// in another slot), whose entries at or below h.Read no reader of
	// the horizon's history pulled.
	err = s.onSlotMaster(ctx, collection, func(node goredis.UniversalClient) error {
		return s.purgeOn(ctx, node, collection, h, after, limit, &res)
	})
	if err != nil {
		return stores.PurgeResult{}, err
	}
	return res, nil
}

// purgeOn is a try of Purge, with node's client (onSlotMaster). It adds
// what its scripts purged to res, so that a try a redirect ends after
// some of them ran is counted, and sets res's Scanned, Next and More.
func (s *Store) purgeOn(ctx context.Context, node goredis.UniversalClient, collection string, h stores.Horizon, after []uint64, limit int, res *stores.PurgeResult) error {
	op := "purge " + collection
	m, epochs, err := s.meta(ctx, collection, op)
	if err != nil {
		return err
	}
	if err := stores.CheckEpoch(collection, h, m); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	res.Scanned, res.Next, res.More = 0, after, false
	read := min(h.Read[0], MaxSeq)
	if after[0] >= read {
		return nil
	}
	log, err := node.ZRangeArgsWithScores(ctx, goredis.ZRangeArgs{
		Key: s.logKey(collection), ByScore: true,
		Start: "(" + strconv.FormatUint(after[0], 10), Stop: strconv.FormatUint(read, 10),
		Count: int64(limit) + 1,
	}).Result()
	if err != nil {
		return s.fail(ctx, op, err)
	}
	if len(log) > limit {
		log, res.More = log[:limit], true
	}
	if len(log) == 0 {
		return nil
	}
	ids := make([]string, len(log))
	for i, z := range log {
		ids[i], _ = z.Member.(string)
	}
	blobs, err := node.HMGet(ctx, s.recKey(collection), ids...).Result()
	if err != nil {
		return s.fail(ctx, op, err)
	}
	_, cluster := s.client.(*goredis.ClusterClient)
	type purged struct{ deletes, fields int }
	var args []any
	var what []purged
	size := 0
	flush := func() error {
		if len(what) == 0 {
			return nil
		}
		keys := []string{s.recKey(collection), s.logKey(collection), s.usageKey(collection), s.metaKey(collection)}
		if cluster {
			// The store-wide counter is in another slot than the
			// collection's keys: read again before each script, here
			// and not in it.
			raw, err := s.client.Get(ctx, s.storeEpochKey()).Result()
			if err != nil && !errors.Is(err, goredis.Nil) {
				return s.fail(ctx, op, err)
			}
			if raw != epochs.store {
				return fmt.Errorf("%s: %w: the store-wide epoch counter went from %q to %q", op, stores.ErrEpochChanged, epochs.store, raw)
			}
		} else {
			keys = append(keys, s.storeEpochKey())
		}
		out, err := purgeScript.Run(ctx, node, keys, append([]any{strconv.FormatUint(read, 10), epochs.own, epochs.store}, args...)...).Int64Slice()
		if err != nil {
			return s.fail(ctx, op, err)
		}
		if len(out) > 0 && out[0] == 0 {
			return fmt.Errorf("%s: %w: an epoch counter moved since it was read", op, stores.ErrEpochChanged)
		}
		if len(out) != len(what)+1 || out[0] != 1 {
			return fmt.Errorf("%s: purge script returned %d results for %d records", op, len(out), len(what))
		}
		for i, ok := range out[1:] {
			if ok != 1 {
				continue
			}
			a := args[5*i:]
			if a[2].(string) == "" {
				res.Records++
			}
			res.Bytes += int64(a[3].(int) - a[4].(int))
			res.Deletes += what[i].deletes
			res.Fields += what[i].fields
		}
		args, what, size = args[:0], what[:0], 0
		return nil
	}
	for i, z := range log {
		res.Scanned++
		res.Next[0] = uint64(z.Score)
		blob, ok := blobs[i].(string)
		if !ok {
			continue // purged meanwhile, by another purge
		}
		seq, rec, err := decodeBlob(ids[i], []byte(blob))
		if err != nil {
			// Purging is no repair: a damaged record is left to the next
			// write or to Repair, and counted.
			s.corrupt(collection, ids[i], err)
			continue
		}
		if seq != uint64(z.Score) {
			continue // written since the ZRANGE: after the horizon now
		}
		out, deletes, fields := stores.PurgeRecord(rec, h)
		if deletes+fields == 0 {
			continue
		}
		newBlob, newSize := "", 0
		if !stores.Empty(out) {
			newBlob, newSize = string(encodeBlob(seq, out)), len(crdt.AppendRecord(nil, out))
		}
		oldSize := len(crdt.AppendRecord(nil, rec))
		args = append(args, ids[i], blob, newBlob, oldSize, newSize)
		what = append(what, purged{deletes, fields})
		if size += len(blob) + len(newBlob); size >= maxScriptBytes {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}
