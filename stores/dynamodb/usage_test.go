package dynamodb

import (
	"context"
	"testing"

	awsdynamodb "github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// TestUsageCounted: a collection whose head item holds no usage (written
// before usage existed) is counted once by Usage and kept from then on,
// by this instance (whose cached head item still says it holds usage)
// and by another one (whose cache says it holds none).
func TestUsageCounted(t *testing.T) {
	db, _, _ := testClients(t)
	table := plainTable(t, db)
	a, b := openTest(t, db, nil, table), openTest(t, db, nil, table)
	ctx := context.Background()
	put := func(s *Store, id string, wall int64, v any) {
		t.Helper()
		if _, err := s.Apply(ctx, []crdt.Change{{Collection: "c", Record: crdt.SetField(id, "f", val(t, v), stamp(wall, "w"))}}); err != nil {
			t.Fatal(err)
		}
	}
	check := func(step string) {
		t.Helper()
		var want stores.Usage
		for after, more := uint64(0), true; more; {
			p, err := a.Pull(ctx, "c", after, stores.PageLimit{Records: stores.MaxPage, Bytes: 1 << 30})
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range p.Entries {
				want.Records++
				want.Bytes += int64(len(crdt.AppendRecord(nil, e.Record)))
			}
			after, more = p.Next, p.More
		}
		for i, s := range []*Store{a, b} {
			got, err := s.Usage(ctx, "c")
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Fatalf("%s: instance %d: got usage %+v, want %+v (from a pull)", step, i, got, want)
			}
		}
	}
	put(a, "r1", 1, 1)
	put(b, "r2", 1, 2)
	put(a, "r3", 1, 3) // a's cache: usage kept
	_, err := db.UpdateItem(ctx, &awsdynamodb.UpdateItemInput{
		TableName: &table, Key: key(headPK("c"), 0),
		UpdateExpression:         ptr("REMOVE #ur, #ub"),
		ExpressionAttributeNames: map[string]string{"#ur": attrUsageRecords, "#ub": attrUsageBytes},
	})
	if err != nil {
		t.Fatal(err)
	}
	put(a, "r1", 2, "a longer value than before") // finds none: keeps none
	put(b, "r4", 1, 4)                            // b's cache: none
	check("counted")
	put(b, "r5", 1, 5) // b's cache is stale: the count came after
	put(a, "r2", 2, "x")
	put(b, "r3", 2, "longer value")
	check("kept after the count")
}
