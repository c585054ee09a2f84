package dynamodb

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	awsdynamodb "github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

var _ stores.Purger = (*Store)(nil)

// purgeRecordsPerTx is the most records one purge transaction writes: two
// actions each (the record item and its log entry), the head's usage and
// the checks of the epoch (purgeGuards: the collection's and the
// store-wide counter).
const purgeRecordsPerTx = (maxTxActions - 1 - purgeGuards) / 2

// purgeGuards is the number of condition checks on the epoch in every
// purge transaction, last in it: the collection's epoch item, then the
// store item (epochGuards).
const purgeGuards = 2

// purgeWrite is what a purge does to one record: its log entry (which
// holds the record's state at that seq, so nothing else is read), and
// the purged state (nil enc: remove it).
type purgeWrite struct {
	e               stores.Entry
	enc             []byte
	oldSize         int
	deletes, fields int
}

// Purge implements stores.Purger, shard by shard for a collection of K
// shards. It reads the log with strongly consistent Queries (a log entry
// holds its record's state, so the record items are not read) and
// commits up to 48 purged records (and 3.75 MB) per TransactWriteItems:
// per record, a put (or delete) of the record item on condition that its
// seq is still the entry's (and, for a put, that its encoding still has
// the size read: a purge shrinks a record without moving it) — so a
// record that Apply moved on, or another purge purged, meanwhile fails
// its condition and is left as it is — with the put (or delete) of its log
// entry; and an ADD of the usage change to the head item of the record's
// shard, on condition that the head keeps usage. The head's seq is not
// touched, so no sequence number is taken; Apply transactions, which
// condition their head put on the usage they read, retry against the new
// usage. Purge reads the epoch of the collection (its epoch item, with K,
// and the store item) and refuses a horizon of another (ErrEpochChanged);
// every transaction also checks that both items still hold the counters
// read (epochGuards): a new epoch since ends the purge. Before a
// collection of one log is purged for the first time, Usage counts it if
// its head keeps no usage yet.
func (st *Store) Purge(ctx context.Context, collection string, h stores.Horizon, scan stores.PurgeScan) (stores.PurgeResult, error) {
	if err := st.check(ctx); err != nil {
		return stores.PurgeResult{}, err
	}
	if err := stores.CheckCollection(collection); err != nil {
		return stores.PurgeResult{}, err
	}
	// The horizon's positions are of the log as its epoch (h.Epoch)
	// numbered it: the epoch and K are read from the table, not from this
	// instance's cache (another instance may have resharded since), and
	// every transaction checks that the epoch item and the store item
	// still hold the counters read, with no rebuild under way
	// (epochGuards).
	op := "purge " + collection
	items, err := st.batchGet(ctx, op, []map[string]types.AttributeValue{key(storePK, 0), key(epochPK(collection), 0)})
	if err != nil {
		return stores.PurgeResult{}, err
	}
	storeItem, epochItem := splitEpochItems(items)
	info, err := shardsInItem(epochItem)
	if err != nil {
		st.forgetShards(collection)
		return stores.PurgeResult{}, fmt.Errorf("%s: %w", op, err)
	}
	st.shards.put(collection, info)
	m, guards, err := st.epochGuards(collection, storeItem, epochItem)
	if err != nil {
		return stores.PurgeResult{}, fmt.Errorf("%s: %w", op, err)
	}
	if err := stores.CheckEpoch(collection, h, m); err != nil {
		return stores.PurgeResult{}, fmt.Errorf("%s: %w", op, err)
	}
	after, limit, err := stores.CheckPurge(collection, h, scan, info.k)
	if err != nil {
		return stores.PurgeResult{}, err
	}
	if info.k == 1 {
		if _, err := st.Usage(ctx, collection); err != nil {
			return stores.PurgeResult{}, fmt.Errorf("purge %s: %w", collection, err)
		}
	}
	res := stores.PurgeResult{Next: after}
	for sh := range info.k {
		ref := logRef{coll: collection, shard: sh, shards: info.k}
		if after[sh] >= h.Read[sh] {
			continue
		}
		if res.Scanned == limit {
			res.More = true
			break
		}
		more, err := st.purgeShard(ctx, ref, guards, h, limit, &res)
		if err != nil {
			return stores.PurgeResult{}, err
		}
		if more {
			res.More = true
			break
		}
	}
	return res, nil
}

// purgeShard purges the entries of one log after res.Next and at or
// before the read horizon, until res.Scanned reaches limit, and reports
// whether entries remain.
func (st *Store) purgeShard(ctx context.Context, ref logRef, guards []types.TransactWriteItem, h stores.Horizon, limit int, res *stores.PurgeResult) (more bool, err error) {
	op := "purge " + ref.String()
	var writes []purgeWrite
	txBytes := 0
	var start map[string]types.AttributeValue
	from := res.Next[ref.shard] + 1 // fixed: the start key of later pages must match it
	for {
		want := int32(limit - res.Scanned + 1) // one more, to learn whether entries remain
		out, err := st.db.Query(ctx, &awsdynamodb.QueryInput{
			TableName:                &st.table,
			ConsistentRead:           ptr(true),
			KeyConditionExpression:   ptr("#k = :pk AND #s BETWEEN :from AND :to"),
			ExpressionAttributeNames: map[string]string{"#k": attrPK, "#s": attrSK},
			ExpressionAttributeValues: map[string]types.AttributeValue{
				":pk": s(ref.logPK()), ":from": n(from), ":to": n(h.Read[ref.shard]),
			},
			Limit:             &want,
			ExclusiveStartKey: start,
		}, st.dbOpt)
		if err != nil {
			return false, translate(ctx, op, err)
		}
		for _, item := range out.Items {
			if len(writes) == purgeRecordsPerTx {
				if err := st.purgeCommit(ctx, ref, guards, writes, res); err != nil {
					return false, err
				}
				writes, txBytes = writes[:0], 0
			}
			if res.Scanned == limit {
				more = true
				break
			}
			id, _ := item[attrID].(*types.AttributeValueMemberS)
			if id == nil {
				return false, fmt.Errorf("%s: %w: log item without a record id", op, stores.ErrCorrupt)
			}
			e, err := decodeEntry(item, id.Value, attrSK)
			if err != nil {
				return false, fmt.Errorf("%s: %w: log item of %q: %w", op, stores.ErrCorrupt, id.Value, err)
			}
			res.Scanned++
			res.Next[ref.shard] = e.Seq
			purged, deletes, fields := stores.PurgeRecord(e.Record, h)
			if deletes+fields == 0 {
				continue
			}
			w := purgeWrite{e: stores.Entry{Seq: e.Seq, Record: purged}, oldSize: recSize(item), deletes: deletes, fields: fields}
			if !stores.Empty(purged) {
				w.enc = crdt.AppendRecord(nil, purged)
			}
			// A kept record is written twice (record item, log entry):
			// keep the transaction within DynamoDB's 4 MB.
			size := 2*len(w.enc) + 512
			if len(writes) > 0 && txBytes+size > txBudgetBytes {
				if err := st.purgeCommit(ctx, ref, guards, writes, res); err != nil {
					return false, err
				}
				writes, txBytes = writes[:0], 0
			}
			writes = append(writes, w)
			txBytes += size
		}
		if more || out.LastEvaluatedKey == nil {
			break
		}
		start = out.LastEvaluatedKey
	}
	if err := st.purgeCommit(ctx, ref, guards, writes, res); err != nil {
		return false, err
	}
	return more, nil
}

// epochGuards reads the collection's Meta from its epoch item and the
// store item, as batchGet read them (nil: absent), and returns it with
// the condition checks of every purge transaction of coll (purgeGuards):
// the epoch item still holds its counter and no rebuild of the log is
// under way, and the store item still holds the store-wide counter. A new
// epoch (a reshard, which numbers the log anew, a restore, or any other)
// ends the purge, whose horizon is of the old one.
func (st *Store) epochGuards(coll string, storeItem, epochItem map[string]types.AttributeValue) (stores.Meta, []types.TransactWriteItem, error) {
	var own, lost, store uint64
	c := &types.ConditionCheck{
		TableName: &st.table, Key: key(epochPK(coll), 0),
		ConditionExpression:      ptr("attribute_not_exists(#n) AND attribute_not_exists(#rs)"),
		ExpressionAttributeNames: map[string]string{"#n": attrN, "#rs": attrResharding},
	}
	if _, ok := epochItem[attrN]; ok {
		v, err := getN(epochItem, attrN)
		if err != nil {
			return stores.Meta{}, nil, err
		}
		own = v
		c.ConditionExpression = ptr("#n = :n AND attribute_not_exists(#rs)")
		c.ExpressionAttributeValues = map[string]types.AttributeValue{":n": n(v)}
	}
	if _, ok := epochItem[attrLost]; ok {
		v, err := getN(epochItem, attrLost)
		if err != nil {
			return stores.Meta{}, nil, err
		}
		lost = v
	}
	sc := &types.ConditionCheck{
		TableName: &st.table, Key: key(storePK, 0),
		ConditionExpression:      ptr("attribute_not_exists(#e)"),
		ExpressionAttributeNames: map[string]string{"#e": attrEpoch},
	}
	if _, ok := storeItem[attrEpoch]; ok {
		v, err := getN(storeItem, attrEpoch)
		if err != nil {
			return stores.Meta{}, nil, err
		}
		store = v
		sc.ConditionExpression = ptr("#e = :e")
		sc.ExpressionAttributeValues = map[string]types.AttributeValue{":e": n(v)}
	}
	return stores.MetaOf(store, own, lost), []types.TransactWriteItem{{ConditionCheck: c}, {ConditionCheck: sc}}, nil
}

// purgeCommit writes purged records in one transaction, with guards. A
// record whose condition fails (Apply moved it on) is dropped from the
// transaction, which is tried again with the rest; a failed guard ends the
// purge (ErrEpochChanged).
func (st *Store) purgeCommit(ctx context.Context, ref logRef, guards []types.TransactWriteItem, writes []purgeWrite, res *stores.PurgeResult) error {
	op := "purge " + ref.String()
	coll := ref.coll
	for attempt := 1; len(writes) > 0; attempt++ {
		var items []types.TransactWriteItem
		var records, freed int64
		for _, w := range writes {
			cond := ptr("#q = :q")
			names := map[string]string{"#q": attrSeq}
			values := map[string]types.AttributeValue{":q": n(w.e.Seq)}
			logKey := key(ref.logPK(), w.e.Seq)
			if w.enc == nil {
				records++
				freed += int64(w.oldSize)
				items = append(items,
					types.TransactWriteItem{Delete: &types.Delete{TableName: &st.table, Key: key(recordPK(coll, w.e.Record.ID), 0),
						ConditionExpression: cond, ExpressionAttributeNames: names, ExpressionAttributeValues: values}},
					types.TransactWriteItem{Delete: &types.Delete{TableName: &st.table, Key: logKey}})
				continue
			}
			freed += int64(w.oldSize - len(w.enc))
			// The seq alone does not tell the record as read from the
			// same record purged by another purge (which keeps the seq):
			// its encoding's size does, since a purge always shrinks it.
			items = append(items,
				types.TransactWriteItem{Put: &types.Put{TableName: &st.table, Item: recordItem(coll, w.e, w.enc),
					ConditionExpression:      ptr("#q = :q AND size(#r) = :size"),
					ExpressionAttributeNames: map[string]string{"#q": attrSeq, "#r": attrRec},
					ExpressionAttributeValues: map[string]types.AttributeValue{
						":q": n(w.e.Seq), ":size": n(uint64(w.oldSize)),
					}}},
				types.TransactWriteItem{Put: &types.Put{TableName: &st.table, Item: logItem(ref, w.e, w.enc)}})
		}
		items = append(items, types.TransactWriteItem{Update: &types.Update{
			TableName:                &st.table,
			Key:                      key(ref.headPK(), 0),
			UpdateExpression:         ptr("ADD #ur :r, #ub :b"),
			ConditionExpression:      ptr("attribute_type(#ur, :num) AND attribute_type(#ub, :num) AND attribute_not_exists(#rs)"),
			ExpressionAttributeNames: map[string]string{"#ur": attrUsageRecords, "#ub": attrUsageBytes, "#rs": attrResharding},
			ExpressionAttributeValues: map[string]types.AttributeValue{
				":r":   &types.AttributeValueMemberN{Value: strconv.FormatInt(-records, 10)},
				":b":   &types.AttributeValueMemberN{Value: strconv.FormatInt(-freed, 10)},
				":num": s("N"),
			},
		}})
		items = append(items, guards...)
		_, err := st.db.TransactWriteItems(ctx, &awsdynamodb.TransactWriteItemsInput{TransactItems: items}, st.dbOpt)
		if err == nil {
			for _, w := range writes {
				res.Deletes += w.deletes
				res.Fields += w.fields
			}
			res.Records += int(records)
			res.Bytes += freed
			return nil
		}
		var cancelled *types.TransactionCanceledException
		if !errors.As(err, &cancelled) {
			return translate(ctx, op, err)
		}
		// A record whose condition failed was moved on by Apply (or
		// purged by another purge): leave it. Try the rest again.
		kept := writes[:0]
		contended := false
		for i, w := range writes {
			code := ""
			if 2*i < len(cancelled.CancellationReasons) {
				code = str(cancelled.CancellationReasons[2*i].Code)
			}
			if code == "ConditionalCheckFailed" {
				continue // moved on: no longer below the horizon
			}
			contended = contended || contendedCode(code)
			kept = append(kept, w)
		}
		if n := len(cancelled.CancellationReasons); n == len(items) {
			for _, r := range cancelled.CancellationReasons[n-len(guards):] {
				code := str(r.Code)
				if code == "ConditionalCheckFailed" {
					st.forgetShards(coll)
					return fmt.Errorf("%s: %w: a new epoch began (the log rebuilt or resharded, or the table restored, say): the horizon is of the old one", op, stores.ErrEpochChanged)
				}
				contended = contended || contendedCode(code)
			}
			code := str(cancelled.CancellationReasons[n-len(guards)-1].Code)
			if code == "ConditionalCheckFailed" {
				return fmt.Errorf("%s: %w: the head item keeps no usage", op, stores.ErrCorrupt)
			}
			contended = contended || contendedCode(code)
		}
		writes = kept
		if attempt >= st.maxAttempts {
			return fmt.Errorf("%s: %w: transaction still conflicting after %d attempts", op, stores.ErrUnavailable, attempt)
		}
		if contended {
			if err := sleep(ctx, backoff(attempt)); err != nil {
				return err
			}
		}
	}
	return nil
}
