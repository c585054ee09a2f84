package dynamodb

import (
	"context"
	"errors"
	"strings"
	"testing"

	awsdynamodb "github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/convergo/convergo/stores"
)

// TestFormatMark: Open marks a table that has no format mark (a new one,
// or one from a build before the mark, whose layout is this one's) with
// this build's format, in the store item's attribute "format"; and it
// refuses a table whose mark names a later format (a newer Convergo wrote
// it: a server rolled back after an upgrade) with stores.ErrNewerFormat
// naming both formats, rather than reading and writing a layout it may not
// understand. Any other mark, or one that is not a string, is refused as
// corrupt.
func TestFormatMark(t *testing.T) {
	ctx := context.Background()
	db, _, _ := testClients(t)
	table := plainTable(t, db)
	openTest(t, db, nil, table)
	out, err := db.GetItem(ctx, &awsdynamodb.GetItemInput{TableName: &table, Key: key("~store", 0), ConsistentRead: ptr(true)})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := out.Item["format"].(*types.AttributeValueMemberS); got == nil || got.Value != "convergo-dynamodb-1" {
		t.Errorf("after Open of a table without a mark, the store item's format is %#v, want %q", out.Item["format"], "convergo-dynamodb-1")
	}
	for _, tc := range []struct {
		label string
		mark  types.AttributeValue
		want  error // nil, stores.ErrNewerFormat or stores.ErrCorrupt
		names string
	}{
		{label: "convergo-dynamodb-1", mark: s("convergo-dynamodb-1")},
		{label: "convergo-dynamodb-2", mark: s("convergo-dynamodb-2"), want: stores.ErrNewerFormat, names: "convergo-dynamodb-2"},
		{label: "convergo-dynamodb-17", mark: s("convergo-dynamodb-17"), want: stores.ErrNewerFormat, names: "convergo-dynamodb-17"},
		{label: "convergo-dynamodb-0", mark: s("convergo-dynamodb-0"), want: stores.ErrCorrupt, names: "convergo-dynamodb-0"},
		{label: "convergo-redis-1", mark: s("convergo-redis-1"), want: stores.ErrCorrupt, names: "convergo-redis-1"},
		{label: "", mark: s(""), want: stores.ErrCorrupt, names: `""`},
		{label: "the number 2", mark: n(2), want: stores.ErrCorrupt, names: "format"},
	} {
		if _, err := db.UpdateItem(ctx, &awsdynamodb.UpdateItemInput{
			TableName: &table, Key: key("~store", 0),
			UpdateExpression:          ptr("SET #f = :f"),
			ExpressionAttributeNames:  map[string]string{"#f": "format"},
			ExpressionAttributeValues: map[string]types.AttributeValue{":f": tc.mark},
		}); err != nil {
			t.Fatal(err)
		}
		st, err := New(ctx, Config{Client: db, Table: table})
		if err == nil {
			st.Close()
		}
		switch {
		case tc.want == nil && err != nil:
			t.Errorf("Open of a table marked %q: %v", tc.label, err)
		case tc.want != nil && !errors.Is(err, tc.want):
			t.Errorf("Open of a table marked %q: got %v, want %v", tc.label, err, tc.want)
		case tc.want != nil && (errors.Is(err, stores.ErrNewerFormat) == errors.Is(err, stores.ErrCorrupt)):
			t.Errorf("Open of a table marked %q: got %v, want exactly one of newer and corrupt", tc.label, err)
		case tc.want != nil && !strings.Contains(err.Error(), tc.names):
			t.Errorf("Open of a table marked %q: got %q, want it to name %s", tc.label, err, tc.names)
		case tc.want == stores.ErrNewerFormat && !strings.Contains(err.Error(), "convergo-dynamodb-1"):
			t.Errorf("Open of a table marked %q: got %q, want it to name this build's format", tc.label, err)
		}
	}
}
