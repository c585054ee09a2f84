package dynamodb

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	awsdynamodb "github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/convergo/convergo/stores"
)

// A restored table cannot know it went back in time, but DynamoDB never
// restores into the table it backed up: a point-in-time or backup restore
// creates a new table (a new TableId, a new CreationDateTime) and puts the
// old items into it, the store item with its identity and store-wide epoch
// among them. So the store item records the incarnation of the table that
// holds it (attribute inc), and Open compares it with DescribeTable's,
// which it reads anyway:
//
//   - the same: nothing to do (the common case: one strongly consistent
//     GetItem of the store item);
//   - none recorded (a new table, or one a version before this one made):
//     Open records it, conditioned on there still being none, without a new
//     epoch (a change of the store item: with a stream, the watchers of
//     every instance resync once);
//   - another: the items were copied from another table (a restore, or a
//     copy made by hand). Open starts a new epoch of every collection,
//     history lost, as `convergo store mark-restored` does, and records
//     the table's incarnation in the same update, conditioned on the
//     incarnation it read: servers opening the restored table at once start
//     one epoch, and the others read it recorded. When that command is
//     the one opening it (Config.Restoring), Open says so at info and
//     leaves both to the command's BumpEpochs, which records the
//     incarnation with its bump: one epoch, and a command that fails
//     before it leaves the copy for the servers to notice.
//
// A restore in place is a delete of the table and a restore under its
// name. A store running through it (its servers not stopped) never opens
// again, but it meets the table missing: every answer that the table is
// not found (ResourceNotFoundException, tableWatch) makes the next Meta
// describe the table and compare the incarnations again first
// (recheckTable), as Open does, so the copy starts its new epoch before
// a reader is answered by Meta. The stream consumer describes the table
// at every shard refresh and, finding another incarnation, checks it the
// same way before it moves to the new table's stream (stream.go).
//
// What this cannot notice: a backup of a table that no server of this
// version opened before the backup (its store item records nothing), and a
// restore under the name of a table a store without a stream consumer
// holds open that the store made no request of while the table was
// missing. The restore procedure
// (docs/operations.md, "Backup and restore") remains. The replicas of a
// global table are tables with TableIds of their own that replicate one
// store item: each region's servers would take the others' record for a
// copy and start an epoch at every open; the store does not support them.

// tableWatch is the store's dbAPI: it notes in gone every answer that the
// table is not found, for Meta to check the table again (recheckTable).
type tableWatch struct {
	dbAPI
	gone *atomic.Bool
}

func (w tableWatch) note(err error) {
	if isCode(err, "ResourceNotFoundException") {
		w.gone.Store(true)
	}
}

func (w tableWatch) BatchGetItem(ctx context.Context, in *awsdynamodb.BatchGetItemInput, opts ...func(*awsdynamodb.Options)) (*awsdynamodb.BatchGetItemOutput, error) {
	out, err := w.dbAPI.BatchGetItem(ctx, in, opts...)
	w.note(err)
	return out, err
}

func (w tableWatch) DescribeTable(ctx context.Context, in *awsdynamodb.DescribeTableInput, opts ...func(*awsdynamodb.Options)) (*awsdynamodb.DescribeTableOutput, error) {
	out, err := w.dbAPI.DescribeTable(ctx, in, opts...)
	w.note(err)
	return out, err
}

func (w tableWatch) GetItem(ctx context.Context, in *awsdynamodb.GetItemInput, opts ...func(*awsdynamodb.Options)) (*awsdynamodb.GetItemOutput, error) {
	out, err := w.dbAPI.GetItem(ctx, in, opts...)
	w.note(err)
	return out, err
}

func (w tableWatch) Query(ctx context.Context, in *awsdynamodb.QueryInput, opts ...func(*awsdynamodb.Options)) (*awsdynamodb.QueryOutput, error) {
	out, err := w.dbAPI.Query(ctx, in, opts...)
	w.note(err)
	return out, err
}

func (w tableWatch) TransactWriteItems(ctx context.Context, in *awsdynamodb.TransactWriteItemsInput, opts ...func(*awsdynamodb.Options)) (*awsdynamodb.TransactWriteItemsOutput, error) {
	out, err := w.dbAPI.TransactWriteItems(ctx, in, opts...)
	w.note(err)
	return out, err
}

func (w tableWatch) UpdateItem(ctx context.Context, in *awsdynamodb.UpdateItemInput, opts ...func(*awsdynamodb.Options)) (*awsdynamodb.UpdateItemOutput, error) {
	out, err := w.dbAPI.UpdateItem(ctx, in, opts...)
	w.note(err)
	return out, err
}

func (w tableWatch) Scan(ctx context.Context, in *awsdynamodb.ScanInput, opts ...func(*awsdynamodb.Options)) (*awsdynamodb.ScanOutput, error) {
	out, err := w.dbAPI.Scan(ctx, in, opts...)
	w.note(err)
	return out, err
}

// recheckTable is Open's check of the table, again: after the table was
// found missing, the table back under its name may be a restore.
func (st *Store) recheckTable(ctx context.Context) error {
	st.tableGone.Store(false) // an answer from here on that it is missing owes another check
	desc, err := st.describe(ctx)
	if err == nil {
		err = checkSchema(desc)
	}
	if err == nil {
		err = st.checkIncarnation(ctx, desc)
	}
	if err != nil {
		st.tableGone.Store(true)
		return fmt.Errorf("check the table found missing: %w", err)
	}
	return nil
}

// attrInc, on the store item, is the incarnation of the table that holds
// it (S).
const attrInc = "inc"

// incarnation names the table the description is of, as created: its
// TableId, which AWS gives every new table (a restore included), or where
// there is none (DynamoDB Local) its creation time in milliseconds. Empty
// when the description has neither.
func incarnation(t *types.TableDescription) string {
	switch {
	case t.TableId != nil && *t.TableId != "":
		return *t.TableId
	case t.CreationDateTime != nil && !t.CreationDateTime.IsZero():
		return "created " + t.CreationDateTime.UTC().Round(time.Millisecond).Format("2006-01-02T15:04:05.000Z")
	}
	return ""
}

// checkIncarnation is Open's comparison of the incarnation recorded on the
// store item with the table's, desc.
//
// It checks the table's format mark (format.go) in the same read, and
// writes this build's on a store item that has none: with the incarnation
// when it records that, so the first open writes the store item once.
func (st *Store) checkIncarnation(ctx context.Context, desc *types.TableDescription) error {
	inc := incarnation(desc)
	const op = "check the table's incarnation"
	for range stores.BumpTries {
		out, err := st.db.GetItem(ctx, &awsdynamodb.GetItemInput{
			TableName: &st.table, Key: key(storePK, 0), ConsistentRead: ptr(true),
		}, st.dbOpt)
		if err != nil {
			return translate(ctx, op, err)
		}
		marked, err := checkFormat(out.Item)
		if err != nil {
			return err
		}
		v, present := out.Item[attrInc]
		rec, _ := v.(*types.AttributeValueMemberS)
		switch {
		case present && rec == nil:
			return fmt.Errorf("%s: the store item's %s is not a string", op, attrInc)
		case !marked && (inc == "" || rec != nil):
			// Mark the format first; a copy (rec.Value != inc) is then
			// read again and handled below.
			done, err := st.markFormat(ctx)
			if err != nil {
				return err
			}
			if done && (inc == "" || rec.Value == inc) {
				return nil
			}
			continue
		case inc == "":
			return nil // nothing tells this table from another
		case rec != nil && rec.Value == inc:
			return nil
		case rec == nil:
			set, cond := "SET #inc = :inc, #cvg = :one", "attribute_not_exists(#inc)"
			names := map[string]string{"#inc": attrInc, "#cvg": attrCvg}
			values := map[string]types.AttributeValue{":inc": s(inc), ":one": n(1)}
			if !marked {
				set += ", #fmt = :fmt"
				cond += " AND attribute_not_exists(#fmt)"
				names["#fmt"] = attrFormat
				values[":fmt"] = s(tableFormat.Mark())
			}
			_, err := st.db.UpdateItem(ctx, &awsdynamodb.UpdateItemInput{
				TableName:                 &st.table,
				Key:                       key(storePK, 0),
				UpdateExpression:          &set,
				ConditionExpression:       &cond,
				ExpressionAttributeNames:  names,
				ExpressionAttributeValues: values,
			}, st.dbOpt)
			var failed *types.ConditionalCheckFailedException
			if errors.As(err, &failed) {
				continue // another instance recorded one: read it
			}
			if err != nil {
				return translate(ctx, op, err)
			}
			return nil
		}
		old := rec.Value
		if st.restoring {
			// The caller is that command, which starts the new epoch next
			// and records inc with it (BumpEpochs).
			st.restoredInc = inc
			st.log.Info("the table holds a copy of another table's store (a restore), marked restored by this command",
				"recorded_incarnation", old, "table_incarnation", inc)
			return nil
		}
		bumped, err := st.bump(ctx, counterBump{
			op: "new epoch of every collection for a copied table", pk: storePK, attr: attrEpoch,
			item: out.Item,
			accept: func(item map[string]types.AttributeValue, _ uint64) (bool, error) {
				now, _ := item[attrInc].(*types.AttributeValueMemberS)
				return now != nil && now.Value == old, nil
			},
			set: "#inc = :inc", cond: "#inc = :old",
			names:  map[string]string{"#inc": attrInc},
			values: map[string]types.AttributeValue{":inc": s(inc), ":old": s(old)},
		})
		if err != nil {
			return err
		}
		if bumped {
			st.log.Error("the table holds a copy of another table's store (a restore?): starting a new epoch of every collection, history lost, as `convergo store mark-restored` does",
				"recorded_incarnation", old, "table_incarnation", inc, "cause", stores.HistoryLost.String())
			return nil
		}
		// Another instance bumped and recorded it first: read it.
	}
	return fmt.Errorf("%s: %w: the store item keeps changing", op, stores.ErrUnavailable)
}
