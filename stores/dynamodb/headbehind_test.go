package dynamodb

import (
	"context"
	"fmt"
	"testing"
	"time"

	awsdynamodb "github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// TestHeadBehindLog: a table restored from a backup holds a collection's
// head item from before its last commits while their log entries and
// record items are in the copy (DynamoDB's backups and point-in-time
// restores do not keep items of one transaction together: "backups do not
// guarantee causal consistency across items"). Writes to the collection
// then go on: an update of the record at the head's next seq, and a new
// record whose seq the log already holds, are applied under seqs above
// every one the log holds (no seq handed out twice), every record is
// pulled once at its latest state, and the collection starts a new epoch,
// history lost.
func TestHeadBehindLog(t *testing.T) {
	db, _, _ := testClients(t)
	table := plainTable(t, db)
	st := openTest(t, db, nil, table)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const coll = "todos"
	for i := 1; i <= 3; i++ {
		ch := crdt.Change{Collection: coll, Record: crdt.SetField(fmt.Sprintf("r%d", i), "n", val(t, i), stamp(int64(i), "w"))}
		if _, err := st.Apply(ctx, []crdt.Change{ch}); err != nil {
			t.Fatal(err)
		}
	}
	before, err := st.Meta(ctx, coll)
	if err != nil {
		t.Fatal(err)
	}
	// The copy's head item is the one of the first commit.
	if _, err := db.UpdateItem(ctx, &awsdynamodb.UpdateItemInput{
		TableName:                 &table,
		Key:                       key(headPK(coll), 0),
		UpdateExpression:          ptr("SET #h = :h"),
		ExpressionAttributeNames:  map[string]string{"#h": attrHead},
		ExpressionAttributeValues: map[string]types.AttributeValue{":h": n(1)},
	}); err != nil {
		t.Fatal(err)
	}
	// A store opened on the restored table, as a server started after the
	// restore is.
	st = openTest(t, db, nil, table)
	writes := []crdt.Change{
		{Collection: coll, Record: crdt.SetField("r2", "n", val(t, 20), stamp(20, "w"))},
		{Collection: coll, Record: crdt.SetField("r4", "n", val(t, 4), stamp(4, "w"))},
	}
	for _, ch := range writes {
		res, err := st.Apply(ctx, []crdt.Change{ch})
		if err != nil {
			t.Fatalf("apply %s after the head was set back: %v", ch.Record.ID, err)
		}
		if res[0].Seq <= 3 {
			t.Fatalf("apply %s: seq %d, which the log held already (at most 3)", ch.Record.ID, res[0].Seq)
		}
	}
	page, err := st.Pull(ctx, coll, 0, stores.PageLimit{Records: 100, Bytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, e := range page.Entries {
		if _, dup := got[e.Record.ID]; dup {
			t.Fatalf("record %s pulled twice: %v", e.Record.ID, page.Entries)
		}
		got[e.Record.ID] = e.Record.Fields["n"].Stamp.Wall
	}
	want := map[string]int64{"r1": 1, "r2": 20, "r3": 3, "r4": 4}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("pulled %v, want %v", got, want)
	}
	after, err := st.Meta(ctx, coll)
	if err != nil {
		t.Fatal(err)
	}
	if after.Lost <= before.Epoch {
		t.Fatalf("meta %+v after the head was found behind the log, was %+v: want a new epoch, history lost", after, before)
	}
}
