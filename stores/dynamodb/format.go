package dynamodb

import (
	"context"
	"errors"
	"fmt"

	awsdynamodb "github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/convergo/convergo/stores"
)

// tableFormat is the format of the items this build writes in a table. A
// change of the layout that an older build would misread raises its
// version, so that a server rolled back after the upgrade refuses the
// table (stores.ErrNewerFormat) rather than reading and writing it.
var tableFormat = stores.Format{Name: "convergo-dynamodb", Version: 1}

// attrFormat, on the store item, is the table's format mark (S).
const attrFormat = "format"

// checkFormat checks the format mark of the store item: marked is false
// when it has none; a later format is refused with stores.ErrNewerFormat,
// any other mark, or one that is not a string, with stores.ErrCorrupt.
func checkFormat(item map[string]types.AttributeValue) (marked bool, err error) {
	v, present := item[attrFormat]
	if !present {
		return false, nil
	}
	mark, ok := v.(*types.AttributeValueMemberS)
	if !ok {
		return true, fmt.Errorf("format mark: %w: the store item's %s is not a string", stores.ErrCorrupt, attrFormat)
	}
	if err := tableFormat.Check(mark.Value, stores.ErrCorrupt); err != nil {
		return true, fmt.Errorf("format mark: %w", err)
	}
	return true, nil
}

// markFormat writes this build's format mark on a store item that has
// none: a new table, or one from a build before the mark, whose layout is
// this one's. done is false when another instance marked it first: the
// caller reads it again.
func (st *Store) markFormat(ctx context.Context) (done bool, err error) {
	_, err = st.db.UpdateItem(ctx, &awsdynamodb.UpdateItemInput{
		TableName:                 &st.table,
		Key:                       key(storePK, 0),
		UpdateExpression:          ptr("SET #fmt = :fmt, #cvg = :one"),
		ConditionExpression:       ptr("attribute_not_exists(#fmt)"),
		ExpressionAttributeNames:  map[string]string{"#fmt": attrFormat, "#cvg": attrCvg},
		ExpressionAttributeValues: map[string]types.AttributeValue{":fmt": s(tableFormat.Mark()), ":one": n(1)},
	}, st.dbOpt)
	var failed *types.ConditionalCheckFailedException
	switch {
	case errors.As(err, &failed):
		return false, nil
	case err != nil:
		return false, translate(ctx, "mark the table's format", err)
	}
	st.log.Info("table marked with its format", "format", tableFormat.Mark())
	return true, nil
}
