package dynamodb

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	awsdynamodb "github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/convergo/convergo/stores"
)

// Usage is kept on the collection's head item (for K > 1 shards, on each
// shard's head item, and summed), attributes urecords and ubytes: the records (tombstones included) and the sum of the lengths of
// their stored encodings (crdt.EncodeRecord). Every transaction that moves
// the head writes them, conditioned on the values it read (besides the
// head), so usage changes in the same transaction as the records. A head
// item without them (a collection written before usage existed) keeps
// none until Usage counts the collection once, by a Query of its log,
// and writes them conditioned on the head it counted at; transactions then
// keep them.

const (
	attrUsageRecords = "urecords"
	attrUsageBytes   = "ubytes"
)

var _ stores.Usager = (*Store)(nil)

// headUsage is the usage a head item holds; kept false means it holds
// none (not both attributes as numbers), and a count is owed.
type headUsage struct {
	u    stores.Usage
	kept bool
}

// readHeadUsage reads the usage attributes of a head item.
func readHeadUsage(item map[string]types.AttributeValue) (headUsage, error) {
	r, ok1 := item[attrUsageRecords].(*types.AttributeValueMemberN)
	b, ok2 := item[attrUsageBytes].(*types.AttributeValueMemberN)
	if !ok1 || !ok2 {
		return headUsage{}, nil
	}
	records, err1 := strconv.ParseInt(r.Value, 10, 64)
	bytes, err2 := strconv.ParseInt(b.Value, 10, 64)
	if err := errors.Join(err1, err2); err != nil || records < 0 || bytes < 0 {
		return headUsage{}, fmt.Errorf("%w: usage attributes %s, %s", stores.ErrCorrupt, r.Value, b.Value)
	}
	return headUsage{u: stores.Usage{Records: records, Bytes: bytes}, kept: true}, nil
}

// headCondition is the condition of a transaction's put of the head
// item: the head as read and, so that usage is added to the values it was
// read at, the usage attributes as read (or their absence).
func headCondition(head uint64, u headUsage) (*string, map[string]string, map[string]types.AttributeValue) {
	names := map[string]string{"#h": attrHead, "#ur": attrUsageRecords, "#ub": attrUsageBytes, "#rs": attrResharding}
	if u.kept {
		return ptr("#h = :old AND #ur = :ur AND #ub = :ub AND attribute_not_exists(#rs)"), names, map[string]types.AttributeValue{
			":old": n(head), ":ur": n(uint64(u.u.Records)), ":ub": n(uint64(u.u.Bytes)),
		}
	}
	return ptr("#h = :old AND attribute_not_exists(#rs) AND NOT (attribute_type(#ur, :num) AND attribute_type(#ub, :num))"), names,
		map[string]types.AttributeValue{":old": n(head), ":num": s("N")}
}

// recSize is the length of the encoded record an item holds.
func recSize(item map[string]types.AttributeValue) int {
	if raw, ok := item[attrRec].(*types.AttributeValueMemberB); ok {
		return len(raw.Value)
	}
	return 0
}

// Usage implements stores.Usager: one strongly consistent GetItem of the
// head item or, the first time for a collection written before usage
// existed, a count over its log (see above). A count races with writers:
// when one commits meanwhile, the count is done again, up to
// Config.MaxAttempts times, then stores.ErrUnavailable.
func (st *Store) Usage(ctx context.Context, collection string) (stores.Usage, error) {
	if err := st.check(ctx); err != nil {
		return stores.Usage{}, err
	}
	if err := stores.CheckCollection(collection); err != nil {
		return stores.Usage{}, err
	}
	if i, err := st.knownShards(ctx, collection); err != nil {
		return stores.Usage{}, err
	} else if i.k > 1 {
		return st.shardUsage(ctx, collection)
	}
	for attempt := 1; ; attempt++ {
		out, err := st.db.GetItem(ctx, &awsdynamodb.GetItemInput{
			TableName: &st.table, Key: key(headPK(collection), 0), ConsistentRead: ptr(true),
		}, st.dbOpt)
		if err != nil {
			return stores.Usage{}, translate(ctx, "usage of "+collection, err)
		}
		if out.Item == nil {
			return stores.Usage{}, nil // never written
		}
		head, err := headValue(out.Item, logRef{coll: collection, shards: 1})
		if errors.Is(err, errOtherShards) {
			// Sharded since this instance looked: read the table's K, once.
			st.forgetShards(collection)
			if i, kerr := st.knownShards(ctx, collection); kerr == nil && i.k > 1 {
				return st.shardUsage(ctx, collection)
			}
		}
		if err != nil {
			return stores.Usage{}, fmt.Errorf("usage of %s: head item: %w", collection, err)
		}
		hu, err := readHeadUsage(out.Item)
		if err != nil {
			return stores.Usage{}, fmt.Errorf("usage of %s: head item: %w", collection, err)
		}
		if hu.kept {
			return hu.u, nil
		}
		u, err := st.countUsage(ctx, collection)
		if err != nil {
			return stores.Usage{}, err
		}
		_, err = st.db.UpdateItem(ctx, &awsdynamodb.UpdateItemInput{
			TableName:                 &st.table,
			Key:                       key(headPK(collection), 0),
			UpdateExpression:          ptr("SET #ur = :ur, #ub = :ub"),
			ConditionExpression:       ptr("#h = :h AND NOT (attribute_type(#ur, :num) AND attribute_type(#ub, :num))"),
			ExpressionAttributeNames:  map[string]string{"#h": attrHead, "#ur": attrUsageRecords, "#ub": attrUsageBytes},
			ExpressionAttributeValues: map[string]types.AttributeValue{":h": n(head), ":ur": n(uint64(u.Records)), ":ub": n(uint64(u.Bytes)), ":num": s("N")},
		}, st.dbOpt)
		var cond *types.ConditionalCheckFailedException
		switch {
		case err == nil:
			return u, nil
		case !errors.As(err, &cond):
			return stores.Usage{}, translate(ctx, "usage of "+collection, err)
		case attempt >= st.maxAttempts:
			return stores.Usage{}, fmt.Errorf("usage of %s: %w: writes kept moving the head during %d counts", collection, stores.ErrUnavailable, attempt)
		}
		// A write committed during the count: count again.
	}
}

// countUsage counts a collection's records and their encoded bytes by
// strongly consistent Queries of its log, which holds every record once.
func (st *Store) countUsage(ctx context.Context, collection string) (stores.Usage, error) {
	var u stores.Usage
	var start map[string]types.AttributeValue
	for {
		out, err := st.db.Query(ctx, &awsdynamodb.QueryInput{
			TableName:                 &st.table,
			ConsistentRead:            ptr(true),
			KeyConditionExpression:    ptr("#k = :pk"),
			ProjectionExpression:      ptr("#r"),
			ExpressionAttributeNames:  map[string]string{"#k": attrPK, "#r": attrRec},
			ExpressionAttributeValues: map[string]types.AttributeValue{":pk": s(logPK(collection))},
			ExclusiveStartKey:         start,
		}, st.dbOpt)
		if err != nil {
			return stores.Usage{}, translate(ctx, "usage of "+collection+": count", err)
		}
		for _, item := range out.Items {
			u.Records++
			u.Bytes += int64(recSize(item))
		}
		if out.LastEvaluatedKey == nil {
			return u, nil
		}
		start = out.LastEvaluatedKey
	}
}
