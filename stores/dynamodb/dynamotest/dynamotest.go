// Package dynamotest holds what the DynamoDB store's tests and the
// command's tests of it both do to a table, as DynamoDB itself would.
package dynamotest

import (
	"context"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsdynamodb "github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// CopyTable puts every item of table from into table to, as a
// point-in-time or backup restore does into the new table it creates.
func CopyTable(t testing.TB, db *awsdynamodb.Client, from, to string) {
	t.Helper()
	ctx := context.Background()
	var start map[string]types.AttributeValue
	for {
		out, err := db.Scan(ctx, &awsdynamodb.ScanInput{TableName: &from, ConsistentRead: aws.Bool(true), ExclusiveStartKey: start})
		if err != nil {
			t.Fatalf("scan %s: %v", from, err)
		}
		for _, item := range out.Items {
			if _, err := db.PutItem(ctx, &awsdynamodb.PutItemInput{TableName: &to, Item: item}); err != nil {
				t.Fatalf("put into %s: %v", to, err)
			}
		}
		if out.LastEvaluatedKey == nil {
			return
		}
		start = out.LastEvaluatedKey
	}
}
