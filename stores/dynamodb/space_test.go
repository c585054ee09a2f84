package dynamodb

import (
	"context"
	"testing"

	awsdynamodb "github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/storetest"
)

// BenchmarkSpace: storetest.BenchSpace on DynamoDB Local at 20,000 deleted
// records and 2,000 survivors (the emulator's speed allows no more in a
// few minutes), each store on its own table, whose live bytes are the sum
// of DynamoDB's item sizes (itemSize) over a Scan of the table
// (CONVERGO_SPACE_BENCH=1).
func BenchmarkSpace(b *testing.B) {
	db, _, _ := testClients(b)
	storetest.BenchSpace(b, func(t testing.TB) stores.Store {
		return openTest(t, db, nil, plainTable(t, db))
	}, func(t testing.TB, s stores.Store) int64 {
		table := s.(*Store).table
		var size int64
		var start map[string]types.AttributeValue
		for {
			out, err := db.Scan(context.Background(), &awsdynamodb.ScanInput{TableName: &table, ConsistentRead: ptr(true), ExclusiveStartKey: start})
			if err != nil {
				t.Fatal(err)
			}
			for _, item := range out.Items {
				size += int64(itemSize(item))
			}
			if out.LastEvaluatedKey == nil {
				return size
			}
			start = out.LastEvaluatedKey
		}
	}, 20_000, 2_000)
}
