package dynamodb

import (
	"context"
	"testing"
	"time"

	awsdynamodb "github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// TestPullRestoredTxHole: a table restored from a backup whose items of one
// transaction are not together: the log holds a transaction's entry of r2
// (its tx names the entry of r1 too, which the copy lacks) while r2's
// record item is the one from before that transaction. A pull from the
// beginning must still end (every record at some state), not fail for good.
func TestPullRestoredTxHole(t *testing.T) {
	db, _, _ := testClients(t)
	table := plainTable(t, db)
	st := openTest(t, db, nil, table)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const coll = "todos"
	if _, err := st.Apply(ctx, []crdt.Change{{Collection: coll, Record: crdt.SetField("r2", "n", val(t, 1), stamp(1, "w"))}}); err != nil {
		t.Fatal(err)
	}
	old, err := db.GetItem(ctx, &awsdynamodb.GetItemInput{TableName: &table, Key: key(recordPK(coll, "r2"), 0), ConsistentRead: ptr(true)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Apply(ctx, []crdt.Change{
		{Collection: coll, Record: crdt.SetField("r1", "n", val(t, 2), stamp(2, "w"))},
		{Collection: coll, Record: crdt.SetField("r2", "n", val(t, 3), stamp(3, "w"))},
	}); err != nil {
		t.Fatal(err)
	}
	// The copy: r2's record item from before, r1's entry (seq 2) missing.
	if _, err := db.PutItem(ctx, &awsdynamodb.PutItemInput{TableName: &table, Item: old.Item}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.DeleteItem(ctx, &awsdynamodb.DeleteItemInput{TableName: &table, Key: key(logPK(coll), 2)}); err != nil {
		t.Fatal(err)
	}
	st = openTest(t, db, nil, table)
	page, err := st.Pull(ctx, coll, 0, stores.PageLimit{Records: 100, Bytes: 1 << 20})
	if err != nil {
		t.Fatalf("pull from the beginning of the restored copy: %v", err)
	}
	t.Logf("pulled %d entries", len(page.Entries))
}
