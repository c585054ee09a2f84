package dynamodb

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"

	awsdynamodb "github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/convergo/convergo/stores"
)

var _ stores.Sharder = (*Store)(nil)

// Sharded logs. A collection's log may be split over K shards (K from
// Config.Shards, durable in the collection's epoch item as attribute k):
// shard i has its own head item ~h#COLL#i and log partition ~l#COLL#i,
// and a record lives in shard stores.ShardOf(id, K). Each shard commits
// exactly like a collection of one log (the head is the lock, so each
// shard has no gaps), and the committers of different shards never touch
// the same item: two writers of different records commit in parallel
// unless their records share a shard. K = 1 keeps the original keys
// (~h#COLL, ~l#COLL), so tables written before sharding read as K = 1.
//
// K is set when a collection is first written with K > 1 configured: one
// transaction writes k to the epoch item (if it has none) and puts a
// marker head item ~h#COLL {head 0, k} (if no such item exists). A
// collection that already has a log of one shard keeps K = 1 (the marker's
// put fails); two instances configured differently agree on whichever K
// the table holds. A writer that routes by a stale K meets a head whose k
// differs (shard heads carry k and their condition checks it; the marker's
// head 0 fails any K = 1 condition), drops what it knew and fails the
// call with ErrUnavailable; the retry routes by the table's K.
//
// Changing the K of a collection that has records means rebuilding its log
// and a new epoch (stores.Rebuilt): Reshard (reshard.go, `convergo store
// reshard`). A configured K that differs from the table's is logged and
// ignored.

// errOtherShards means a head item says the collection has another shard
// count than the writer routed by.
var errOtherShards = fmt.Errorf("%w: the collection's shard count is not the one this instance used; retry", stores.ErrUnavailable)

// shardInfo is what an instance knows of a collection's shard count:
// durable when read from the table (or the collection has a log of one
// shard from before), else assumed 1 because nothing says otherwise yet.
type shardInfo struct {
	k       int
	durable bool
}

type shardCache struct {
	mu sync.Mutex
	m  map[string]shardInfo
}

const maxShardCache = 1 << 16

func (c *shardCache) get(coll string) (shardInfo, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	i, ok := c.m[coll]
	return i, ok
}

func (c *shardCache) put(coll string, i shardInfo) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxShardCache {
		c.m = map[string]shardInfo{}
	}
	c.m[coll] = i
}

func (st *Store) forgetShards(coll string) {
	st.shards.mu.Lock()
	delete(st.shards.m, coll)
	st.shards.mu.Unlock()
}

// configuredShards is the shard count configuration asks for coll.
func (st *Store) configuredShards(coll string) int {
	if k, ok := st.shardConf[coll]; ok {
		return k
	}
	return st.defaultShards
}

// knownShards returns the shard count readers use: the table's, or 1 for
// a collection that has none recorded.
func (st *Store) knownShards(ctx context.Context, coll string) (shardInfo, error) {
	if i, ok := st.shards.get(coll); ok {
		return i, nil
	}
	out, err := st.db.GetItem(ctx, &awsdynamodb.GetItemInput{
		TableName: &st.table, Key: key(epochPK(coll), 0), ConsistentRead: ptr(true),
	}, st.dbOpt)
	if err != nil {
		return shardInfo{}, translate(ctx, "shards of "+coll, err)
	}
	i, err := shardsInItem(out.Item)
	if err != nil {
		return shardInfo{}, fmt.Errorf("shards of %s: %w", coll, err)
	}
	st.shards.put(coll, i)
	return i, nil
}

// shardsInItem reads attribute k of an epoch or head item.
func shardsInItem(item map[string]types.AttributeValue) (shardInfo, error) {
	if _, ok := item[attrResharding]; ok {
		return shardInfo{}, fencedError(item)
	}
	if _, ok := item[attrK]; !ok {
		return shardInfo{k: 1}, nil
	}
	k, err := getN(item, attrK)
	if err != nil || stores.CheckShards(int(k)) != nil || k > stores.MaxShards {
		return shardInfo{}, fmt.Errorf("%w: shard count %v", stores.ErrCorrupt, item[attrK])
	}
	return shardInfo{k: int(k), durable: true}, nil
}

// shardsOf returns the shard count writers route coll's changes by,
// setting it on the table when configuration asks for K > 1 and the
// collection has none yet.
func (st *Store) shardsOf(ctx context.Context, coll string) (int, error) {
	i, err := st.knownShards(ctx, coll)
	if err != nil {
		return 0, err
	}
	want := st.configuredShards(coll)
	if !i.durable && want > 1 {
		if i, err = st.establishShards(ctx, coll, want); err != nil {
			return 0, err
		}
		st.shards.put(coll, i)
	}
	if i.k != want {
		st.warnShardsOnce(coll, i.k, want)
	}
	return i.k, nil
}

func (st *Store) warnShardsOnce(coll string, have, want int) {
	if _, dup := st.shardWarned.LoadOrStore(coll, true); !dup {
		st.log.Warn("the collection's log has another shard count than configured; keeping the table's (changing it rebuilds the log: convergo store reshard)",
			"collection", coll, "shards", have, "configured", want)
	}
}

// establishShards records K = want for coll: k on the epoch item and the
// marker head ~h#COLL in one transaction. It returns the count the table
// holds afterwards: want, another instance's K, or 1 when the collection
// already has a log of one shard.
func (st *Store) establishShards(ctx context.Context, coll string, want int) (shardInfo, error) {
	allOld := types.ReturnValuesOnConditionCheckFailureAllOld
	in := &awsdynamodb.TransactWriteItemsInput{TransactItems: []types.TransactWriteItem{
		{Update: &types.Update{
			TableName:                           &st.table,
			Key:                                 key(epochPK(coll), 0),
			UpdateExpression:                    ptr("SET #k = :k, #cvg = :one"),
			ConditionExpression:                 ptr("attribute_not_exists(#k)"),
			ExpressionAttributeNames:            map[string]string{"#k": attrK, "#cvg": attrCvg},
			ExpressionAttributeValues:           map[string]types.AttributeValue{":k": n(uint64(want)), ":one": n(1)},
			ReturnValuesOnConditionCheckFailure: allOld,
		}},
		{Put: &types.Put{
			TableName: &st.table,
			Item: map[string]types.AttributeValue{
				attrPK: s(headPK(coll)), attrSK: n(0), attrHead: n(0), attrK: n(uint64(want)),
				attrCvg: &types.AttributeValueMemberN{Value: layoutVersion},
			},
			ConditionExpression:                 ptr("attribute_not_exists(#p)"),
			ExpressionAttributeNames:            map[string]string{"#p": attrPK},
			ReturnValuesOnConditionCheckFailure: allOld,
		}},
	}}
	for attempt := 1; ; attempt++ {
		_, err := st.db.TransactWriteItems(ctx, in, st.dbOpt)
		if err == nil {
			st.log.Info("sharded log", "collection", coll, "shards", want)
			// Readers that cached the collection's Meta (one log) read it
			// again. Other instances hear of it from the stream (the epoch
			// item changed), or when a Pull of one log is refused.
			st.watchers.Notify(stores.Notification{Resync: true})
			return shardInfo{k: want, durable: true}, nil
		}
		var cancelled *types.TransactionCanceledException
		if !errors.As(err, &cancelled) {
			return shardInfo{}, translate(ctx, "set the shards of "+coll, err)
		}
		reasons := cancelled.CancellationReasons
		if len(reasons) == 2 {
			if str(reasons[0].Code) == "ConditionalCheckFailed" {
				return shardsInItem(reasons[0].Item) // another instance was first
			}
			if str(reasons[1].Code) == "ConditionalCheckFailed" {
				if i, err := shardsInItem(reasons[1].Item); err != nil || i.durable {
					return i, err // a marker: the epoch item's k comes with it
				}
				return shardInfo{k: 1, durable: true}, nil // a log of one shard from before
			}
		}
		if attempt >= st.maxAttempts {
			return shardInfo{}, fmt.Errorf("set the shards of %s: %w: still conflicting after %d attempts", coll, stores.ErrUnavailable, attempt)
		}
		if err := sleep(ctx, backoff(attempt)); err != nil {
			return shardInfo{}, err
		}
	}
}

// headValue reads a head item of the log ref, checking that it belongs to
// a collection of ref.shards shards.
func headValue(item map[string]types.AttributeValue, ref logRef) (uint64, error) {
	i, err := shardsInItem(item)
	if err != nil {
		return 0, err
	}
	if i.k != max(ref.shards, 1) {
		return 0, errOtherShards
	}
	return getN(item, attrHead)
}

// headNotification is the notification of ref's new head.
func headNotification(ref logRef, head uint64) stores.Notification {
	if ref.shards <= 1 {
		return stores.Notification{Collection: ref.coll, Seq: head}
	}
	return stores.Notification{Collection: ref.coll, Seq: head, Shard: ref.shard, Shards: ref.shards}
}

// PullShard implements stores.Sharder: Pull over shard's log partition.
func (st *Store) PullShard(ctx context.Context, collection string, shard int, after uint64, limit stores.PageLimit) (stores.Page, error) {
	if err := st.check(ctx); err != nil {
		return stores.Page{}, err
	}
	if err := stores.CheckPull(collection, limit); err != nil {
		return stores.Page{}, err
	}
	i, err := st.knownShards(ctx, collection)
	if err != nil {
		return stores.Page{}, err
	}
	if shard < 0 || shard >= i.k {
		return stores.Page{}, fmt.Errorf("pull %s: %w: shard %d of %d", collection, stores.ErrInvalid, shard, i.k)
	}
	return st.pullLog(ctx, logRef{coll: collection, shard: shard, shards: i.k}, after, limit)
}

// ShardHeads implements stores.Sharder: one strongly consistent
// BatchGetItem of the K head items.
func (st *Store) ShardHeads(ctx context.Context, collection string) ([]uint64, error) {
	items, k, err := st.shardHeadItems(ctx, collection)
	if err != nil {
		return nil, err
	}
	heads := make([]uint64, k)
	for sh, item := range items {
		if item == nil {
			continue // no commit to the shard yet
		}
		h, err := headValue(item, logRef{coll: collection, shard: sh, shards: k})
		if errors.Is(err, errOtherShards) {
			st.forgetShards(collection)
		}
		if err != nil {
			return nil, fmt.Errorf("head %s: %w", collection, err)
		}
		heads[sh] = h
	}
	return heads, nil
}

// shardHeadItems reads the head items of collection's K shards (nil for a
// shard never written), with one strongly consistent BatchGetItem.
func (st *Store) shardHeadItems(ctx context.Context, collection string) ([]map[string]types.AttributeValue, int, error) {
	if err := st.check(ctx); err != nil {
		return nil, 0, err
	}
	if err := stores.CheckCollection(collection); err != nil {
		return nil, 0, err
	}
	i, err := st.knownShards(ctx, collection)
	if err != nil {
		return nil, 0, err
	}
	items := make([]map[string]types.AttributeValue, i.k)
	index := map[string]int{}
	var keys []map[string]types.AttributeValue
	for sh := range i.k {
		ref := logRef{coll: collection, shard: sh, shards: i.k}
		index[ref.headPK()] = sh
		keys = append(keys, key(ref.headPK(), 0))
	}
	got, err := st.batchGet(ctx, "head "+collection, keys)
	if err != nil {
		return nil, 0, err
	}
	for _, item := range got {
		pkv, _ := item[attrPK].(*types.AttributeValueMemberS)
		if pkv == nil {
			continue
		}
		if sh, ok := index[pkv.Value]; ok {
			items[sh] = item
		}
	}
	return items, i.k, nil
}

// shardUsage is Usage of a collection of K > 1 shards: the sum of what
// the shards' head items hold (every shard head keeps usage from its
// first commit on).
func (st *Store) shardUsage(ctx context.Context, collection string) (stores.Usage, error) {
	items, _, err := st.shardHeadItems(ctx, collection)
	if err != nil {
		return stores.Usage{}, fmt.Errorf("usage of %s: %w", collection, err)
	}
	var u stores.Usage
	for sh, item := range items {
		if item == nil {
			continue
		}
		hu, err := readHeadUsage(item)
		if err == nil && !hu.kept {
			err = fmt.Errorf("%w: the head of shard %d keeps no usage", stores.ErrCorrupt, sh)
		}
		if err != nil {
			return stores.Usage{}, fmt.Errorf("usage of %s: %w", collection, err)
		}
		u.Records += hu.u.Records
		u.Bytes += hu.u.Bytes
	}
	return u, nil
}

// shardSuffix parses the "#i" of a shard's head key.
func shardSuffix(rest string) (shard int, ok bool) {
	v, err := strconv.Atoi(rest)
	if err != nil || v < 0 || v >= stores.MaxShards || strconv.Itoa(v) != rest {
		return 0, false
	}
	return v, true
}
