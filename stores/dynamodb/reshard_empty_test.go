package dynamodb

import (
	"context"
	"fmt"
	"testing"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// TestReshardEmptyShard: a rebuild into more shards than the collection
// has records leaves some shard with no record, whose head it writes as 0.
// A write into that shard afterwards must commit (seq 1), not be cancelled
// for good on a head item that a first commit expects to be absent.
func TestReshardEmptyShard(t *testing.T) {
	db, _, _ := testClients(t)
	a := openTest(t, db, nil, plainTable(t, db))
	ctx := context.Background()
	const coll = "todos"
	if _, err := a.Apply(ctx, []crdt.Change{{Collection: coll, Record: crdt.SetField("r0", "f", val(t, 1), stamp(1, "c"))}}); err != nil {
		t.Fatal(err)
	}
	if err := a.Reshard(ctx, coll, 4); err != nil {
		t.Fatal(err)
	}
	id := ""
	for i := 0; id == ""; i++ {
		if c := fmt.Sprint("e", i); stores.ShardOf(c, 4) != stores.ShardOf("r0", 4) {
			id = c
		}
	}
	res, err := a.Apply(ctx, []crdt.Change{{Collection: coll, Record: crdt.SetField(id, "f", val(t, 2), stamp(2, "c"))}})
	if err != nil {
		t.Fatalf("a write into shard %d, empty after the rebuild: %v", stores.ShardOf(id, 4), err)
	}
	if res[0].Seq != 1 {
		t.Errorf("the first write into an empty shard took seq %d, want 1", res[0].Seq)
	}
}
