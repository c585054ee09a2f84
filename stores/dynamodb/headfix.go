package dynamodb

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsdynamodb "github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/convergo/convergo/stores"
)

// A head behind its log. Every commit writes a log's head with its
// entries and record items in one transaction, so in a committed state no
// entry, and no record item, holds a seq above the head. A table restored
// from a backup can: DynamoDB's backups and point-in-time restores do not
// keep the items of one transaction together, so the copy may hold the
// log entries and record items of a last commit beside the head item from
// before it. Every write to that log would then fail for good: its new
// entry's seq is taken (the put's condition fails), or a record's entry is
// to be deleted and written at the same seq (a transaction may not touch
// one item twice), and the commit is retried until it gives up.
//
// setHeadRight is called when a commit meets either. It reads the log's
// highest entry, and then that entry, the head, the collection's epoch
// item and the given records' items in one TransactGetItems, which is
// serializable with the commits' transactions: a head below an entry or
// record seq read there is behind in a committed state, not a commit read
// half applied. It then sets the head to the highest of them and starts a
// new epoch of the collection, history lost (the copy's readers cannot
// tell which of the log's entries they read), in one TransactWriteItems
// conditioned on the head and the epoch counter it read. One transaction,
// because nothing would start that epoch later: once the head is right no
// commit meets it behind again, so a process stopping between two writes
// would leave the copy's readers unreset for good. It reports whether it
// moved the head (false: the head was not behind, or another writer moved
// it or bumped the epoch meanwhile; the caller reads again either way).
func (st *Store) setHeadRight(ctx context.Context, ref logRef, ids []string) (bool, error) {
	op := "set the head of " + ref.String() + " right"
	out, err := st.db.Query(ctx, &awsdynamodb.QueryInput{
		TableName:                 &st.table,
		KeyConditionExpression:    ptr("#pk = :pk"),
		ExpressionAttributeNames:  map[string]string{"#pk": attrPK},
		ExpressionAttributeValues: map[string]types.AttributeValue{":pk": s(ref.logPK())},
		ScanIndexForward:          aws.Bool(false),
		Limit:                     aws.Int32(1),
		ConsistentRead:            aws.Bool(true),
	}, st.dbOpt)
	if err != nil {
		return false, translate(ctx, op, err)
	}
	gets := []types.TransactGetItem{
		{Get: &types.Get{TableName: &st.table, Key: key(ref.headPK(), 0)}},
		{Get: &types.Get{TableName: &st.table, Key: key(epochPK(ref.coll), 0)}},
	}
	const seqsFrom = 2 // gets[2:] are the highest entry and the records
	if len(out.Items) == 1 {
		top, err := getN(out.Items[0], attrSK)
		if err != nil {
			return false, fmt.Errorf("%s: log entry: %w: %v", op, stores.ErrCorrupt, err)
		}
		gets = append(gets, types.TransactGetItem{Get: &types.Get{
			TableName: &st.table, Key: key(ref.logPK(), top),
			ProjectionExpression: ptr("#k"), ExpressionAttributeNames: map[string]string{"#k": attrSK},
		}})
	}
	for _, id := range ids {
		if len(gets) >= maxTxGetItems {
			break
		}
		gets = append(gets, types.TransactGetItem{Get: &types.Get{
			TableName: &st.table, Key: key(recordPK(ref.coll, id), 0),
			ProjectionExpression: ptr("#q"), ExpressionAttributeNames: map[string]string{"#q": attrSeq},
		}})
	}
	got, err := st.db.TransactGetItems(ctx, &awsdynamodb.TransactGetItemsInput{TransactItems: gets}, st.dbOpt)
	var cancelled *types.TransactionCanceledException
	switch {
	case errors.As(err, &cancelled):
		return false, nil // a commit in progress: the caller reads again
	case err != nil:
		return false, translate(ctx, op, err)
	case len(got.Responses) != len(gets):
		return false, fmt.Errorf("%s: TransactGetItems answered %d items of %d", op, len(got.Responses), len(gets))
	}
	headItem := got.Responses[0].Item
	if headItem == nil {
		// No head item: the commit's own condition (attribute_not_exists)
		// is what fails, and Repair or a reshard rebuilds the log.
		return false, nil
	}
	head, err := headValue(headItem, ref)
	if err != nil {
		return false, fmt.Errorf("%s: head item: %w", op, err)
	}
	epochItem := got.Responses[1].Item
	top := head
	for i, r := range got.Responses[seqsFrom:] {
		if r.Item == nil {
			continue
		}
		attr := attrSeq
		if i == 0 && len(out.Items) == 1 {
			attr = attrSK
		}
		seq, err := getN(r.Item, attr)
		if err != nil {
			return false, fmt.Errorf("%s: %w: %v", op, stores.ErrCorrupt, err)
		}
		top = max(top, seq)
	}
	if top <= head {
		return false, nil
	}
	// The new epoch, as BumpEpoch's counterBump with cause HistoryLost
	// writes it: n and lost raised to the next epoch, conditioned on n as
	// read (absent: attribute_not_exists).
	epochNames := map[string]string{"#n": attrN, "#lost": attrLost, "#cvg": attrCvg, "#bt": attrBumpToken}
	epochValues := map[string]types.AttributeValue{":one": n(1), ":bt": s(st.bumpToken())}
	var cur uint64
	epochCond := "attribute_not_exists(#n)"
	if v, ok := epochItem[attrN]; ok {
		if cur, err = getN(epochItem, attrN); err != nil {
			return false, fmt.Errorf("%s: epoch item: %w: %v", op, stores.ErrCorrupt, err)
		}
		epochCond, epochValues[":cur"] = "#n = :cur", v
	}
	epochValues[":new"] = n(stores.NextEpoch(cur, st.epochNow()))
	_, err = st.db.TransactWriteItems(ctx, &awsdynamodb.TransactWriteItemsInput{TransactItems: []types.TransactWriteItem{
		{Update: &types.Update{
			TableName:                 &st.table,
			Key:                       key(ref.headPK(), 0),
			UpdateExpression:          ptr("SET #h = :top"),
			ConditionExpression:       ptr("#h = :old"),
			ExpressionAttributeNames:  map[string]string{"#h": attrHead},
			ExpressionAttributeValues: map[string]types.AttributeValue{":top": n(top), ":old": n(head)},
		}},
		{Update: &types.Update{
			TableName:                 &st.table,
			Key:                       key(epochPK(ref.coll), 0),
			UpdateExpression:          ptr("SET #n = :new, #lost = :new, #cvg = :one, #bt = :bt"),
			ConditionExpression:       &epochCond,
			ExpressionAttributeNames:  epochNames,
			ExpressionAttributeValues: epochValues,
		}},
	}}, st.dbOpt) // the SDK's retries carry one client request token: applied once
	if errors.As(err, &cancelled) {
		return false, nil // another writer moved the head or bumped the epoch meanwhile
	}
	if err != nil {
		return false, translate(ctx, op, err)
	}
	st.log.Error("a collection's head was behind its log (a table restored from a backup?): set right; a new epoch, history lost",
		"collection", ref.String(), "head", strconv.FormatUint(head, 10), "now", strconv.FormatUint(top, 10))
	st.watchers.Notify(stores.Notification{Resync: true})
	return true, nil
}
