package dynamodb

import (
	"context"
	"errors"
	"fmt"
	"strings"

	awsdynamodb "github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	st "github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"

	"github.com/convergo/convergo/stores"
)

// The store item (pk "~store") holds the identity (attribute id) and the
// store-wide epoch (epoch); a collection's epoch item (pk "~e#COLL") its
// own counters (n, lost). See stores.MetaOf.
const (
	storePK   = "~store"
	attrEpoch = "epoch"
	attrN     = "n"
	attrLost  = "lost"
)

func epochPK(coll string) string { return "~e#" + coll }

// Identity implements stores.Store. The first call on a table without a
// store item makes one, conditioned on its absence, so instances starting
// together agree. A table restored from a backup or point-in-time recovery
// keeps the identity of its source: the restore procedure runs `convergo
// store mark-restored` on it (docs/operations.md).
func (st *Store) Identity(ctx context.Context) (string, error) {
	if err := st.check(ctx); err != nil {
		return "", err
	}
	for range 2 {
		out, err := st.db.GetItem(ctx, &awsdynamodb.GetItemInput{
			TableName: &st.table, Key: key(storePK, 0), ConsistentRead: ptr(true),
		}, st.dbOpt)
		if err != nil {
			return "", translate(ctx, "identity", err)
		}
		if v, ok := out.Item[attrID].(*types.AttributeValueMemberS); ok && v.Value != "" {
			return v.Value, nil
		}
		// Create the identity, keeping an epoch a bump may have written.
		_, err = st.db.UpdateItem(ctx, &awsdynamodb.UpdateItemInput{
			TableName:                 &st.table,
			Key:                       key(storePK, 0),
			UpdateExpression:          ptr("SET #id = :id, #cvg = :cvg"),
			ConditionExpression:       ptr("attribute_not_exists(#id)"),
			ExpressionAttributeNames:  map[string]string{"#id": attrID, "#cvg": attrCvg},
			ExpressionAttributeValues: map[string]types.AttributeValue{":id": s(stores.NewIdentity()), ":cvg": n(1)},
		}, st.dbOpt)
		var cond *types.ConditionalCheckFailedException
		if err != nil && !errors.As(err, &cond) {
			return "", translate(ctx, "identity", err)
		}
	}
	return "", errors.New("identity: the store item keeps changing")
}

// Meta implements stores.Store: one strongly consistent BatchGetItem of
// the store item and the collection's epoch item.
func (st *Store) Meta(ctx context.Context, collection string) (stores.Meta, error) {
	if err := st.check(ctx); err != nil {
		return stores.Meta{}, err
	}
	if err := stores.CheckCollection(collection); err != nil {
		return stores.Meta{}, err
	}
	out, err := st.db.BatchGetItem(ctx, &awsdynamodb.BatchGetItemInput{
		RequestItems: map[string]types.KeysAndAttributes{st.table: {
			Keys:           []map[string]types.AttributeValue{key(storePK, 0), key(epochPK(collection), 0)},
			ConsistentRead: ptr(true),
		}},
	}, st.dbOpt)
	if err != nil {
		return stores.Meta{}, translate(ctx, "meta "+collection, err)
	}
	if len(out.UnprocessedKeys) > 0 {
		return stores.Meta{}, fmt.Errorf("meta %s: %w: keys left unprocessed", collection, stores.ErrUnavailable)
	}
	var store, own, lost uint64
	shards := shardInfo{k: 1}
	num := func(item map[string]types.AttributeValue, name string) (uint64, error) {
		if _, ok := item[name]; !ok {
			return 0, nil
		}
		return getN(item, name)
	}
	for _, item := range out.Responses[st.table] {
		pk, _ := item[attrPK].(*types.AttributeValueMemberS)
		switch {
		case pk == nil:
		case pk.Value == storePK:
			store, err = num(item, attrEpoch)
		default:
			if own, err = num(item, attrN); err == nil {
				lost, err = num(item, attrLost)
			}
			if err == nil {
				shards, err = shardsInItem(item)
			}
		}
		if err != nil {
			return stores.Meta{}, fmt.Errorf("meta %s: %w", collection, err)
		}
	}
	if shards.durable {
		st.shards.put(collection, shards) // readers follow the table's count
	}
	m := stores.MetaOf(store, own, lost)
	m.Shards = shards.k
	return m, nil
}

// BumpEpoch implements stores.Store: ADD n 1, and for a loss a second
// update setting lost to the new n. A crash between the two leaves a
// rebuilt epoch where a lost one was meant; the engine bumps again when it
// sees the head go back again, and BumpEpochs covers everything.
func (st *Store) BumpEpoch(ctx context.Context, collection string, cause stores.EpochCause) error {
	if err := st.check(ctx); err != nil {
		return err
	}
	if err := stores.CheckBump(collection, cause); err != nil {
		return err
	}
	out, err := st.db.UpdateItem(ctx, &awsdynamodb.UpdateItemInput{
		TableName:                 &st.table,
		Key:                       key(epochPK(collection), 0),
		UpdateExpression:          ptr("ADD #n :one SET #cvg = :one"),
		ExpressionAttributeNames:  map[string]string{"#n": attrN, "#cvg": attrCvg},
		ExpressionAttributeValues: map[string]types.AttributeValue{":one": n(1)},
		ReturnValues:              types.ReturnValueUpdatedNew,
	}, st.dbOpt)
	if err != nil {
		return translate(ctx, "bump epoch of "+collection, err)
	}
	if cause == stores.HistoryLost {
		_, err = st.db.UpdateItem(ctx, &awsdynamodb.UpdateItemInput{
			TableName:                 &st.table,
			Key:                       key(epochPK(collection), 0),
			UpdateExpression:          ptr("SET #lost = :n"),
			ConditionExpression:       ptr("#n = :n"),
			ExpressionAttributeNames:  map[string]string{"#n": attrN, "#lost": attrLost},
			ExpressionAttributeValues: map[string]types.AttributeValue{":n": out.Attributes[attrN]},
		}, st.dbOpt)
		var cond *types.ConditionalCheckFailedException
		if errors.As(err, &cond) {
			// Another bump came in between: this loss stands for it too
			// only if recorded, so record it at whatever n is now.
			return st.BumpEpoch(ctx, collection, cause)
		}
		if err != nil {
			return translate(ctx, "bump epoch of "+collection, err)
		}
	}
	st.log.Warn("new epoch", "collection", collection, "cause", cause.String())
	st.watchers.Notify(stores.Notification{Resync: true})
	return nil
}

// BumpEpochs implements stores.Store: ADD epoch 1 on the store item. With
// a stream, other instances see the store item change and resync.
func (st *Store) BumpEpochs(ctx context.Context) error {
	if err := st.check(ctx); err != nil {
		return err
	}
	_, err := st.db.UpdateItem(ctx, &awsdynamodb.UpdateItemInput{
		TableName:                 &st.table,
		Key:                       key(storePK, 0),
		UpdateExpression:          ptr("ADD #e :one SET #cvg = :one"),
		ExpressionAttributeNames:  map[string]string{"#e": attrEpoch, "#cvg": attrCvg},
		ExpressionAttributeValues: map[string]types.AttributeValue{":one": n(1)},
	}, st.dbOpt)
	if err != nil {
		return translate(ctx, "bump epochs", err)
	}
	st.log.Warn("new epoch of every collection", "cause", stores.HistoryLost.String())
	st.watchers.Notify(stores.Notification{Resync: true})
	return nil
}

// BumpEpochsFrom implements stores.EpochsBumperFrom: the update is
// conditioned on the store item's epoch as read (absent: 0). A counter
// past 2^32, which no store reaches, is compared whole.
func (st *Store) BumpEpochsFrom(ctx context.Context, from uint64) (bool, error) {
	if err := st.check(ctx); err != nil {
		return false, err
	}
	cond := "#e = :from"
	if from == 0 {
		cond = "attribute_not_exists(#e) OR #e = :from"
	}
	_, err := st.db.UpdateItem(ctx, &awsdynamodb.UpdateItemInput{
		TableName:                 &st.table,
		Key:                       key(storePK, 0),
		UpdateExpression:          ptr("ADD #e :one SET #cvg = :one"),
		ConditionExpression:       ptr(cond),
		ExpressionAttributeNames:  map[string]string{"#e": attrEpoch, "#cvg": attrCvg},
		ExpressionAttributeValues: map[string]types.AttributeValue{":one": n(1), ":from": n(from)},
	}, st.dbOpt)
	var failed *types.ConditionalCheckFailedException
	if errors.As(err, &failed) {
		return false, nil
	}
	if err != nil {
		return false, translate(ctx, "bump epochs", err)
	}
	st.log.Warn("new epoch of every collection", "cause", stores.HistoryLost.String())
	st.watchers.Notify(stores.Notification{Resync: true})
	return true, nil
}

// isEpochRecord reports whether a stream record changed the store item or
// an epoch item: watchers then resync, so engines re-read epochs.
func isEpochRecord(rec st.Record) bool {
	if rec.Dynamodb == nil {
		return false
	}
	pk, _ := rec.Dynamodb.Keys[attrPK].(*st.AttributeValueMemberS)
	return pk != nil && (pk.Value == storePK || strings.HasPrefix(pk.Value, "~e#"))
}
